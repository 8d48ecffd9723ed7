"""Fuzz the REST history answers: Binance's pages of klines and of aggregate trades, Coinbase's pages of
candles and of market trades, Yahoo's chart answers; valid rows mutated and arbitrary JSON. The only
outcomes allowed are bars and trades that are well formed (on the grid, in the range, ascending, prices
positive and finite) and bad rows counted per reason, never an exception."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.backfill.binance import BinanceHistory
from engine.backfill.coinbase import CoinbaseHistory
from engine.backfill.yahoo import YahooHistory
from engine.feeds.base import FeedCounters
from tests.fuzz_settings import fuzz, json_values, mutated, tried

MINUTE = 60_000
START = 1_700_000_040_000
KLINE = [START, "10.5", "11.0", "10.0", "10.75", "3.25", START + MINUTE - 1, "34.1", 7, "1.5", "15.9", "0"]
AGG = {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27783, "T": START + 5, "m": True,
       "M": True}


def _pages(template: list | dict) -> st.SearchStrategy[list]:  # type: ignore[type-arg]
    row = st.one_of(st.just(template), mutated({"row": template}).map(lambda s: json.loads(s).get("row")),
                    json_values)
    return st.lists(row, max_size=6)


def source() -> BinanceHistory:
    return BinanceHistory("http://127.0.0.1:9", FeedCounters("binance"))


@fuzz(400)
@given(rows=_pages(KLINE), newest=st.sampled_from([-1, START, START - MINUTE]))
def test_fuzz_kline_pages(rows: list, newest: int) -> None:  # type: ignore[type-arg]
    tried("test_fuzz_kline_pages")
    src = source()
    end = START + 10 * MINUTE
    bars, last = src._klines(rows, START, end, MINUTE, newest)
    t = bars["t"] // 1_000_000
    assert np.all((t >= START) & (t < end) & (t % MINUTE == 0) & (t > newest))
    assert np.all(np.diff(t) > 0) and (last == -1 or last > newest)
    for name in ("open", "high", "low", "close"):
        assert np.all((bars[name] > 0) & (bars[name] < math.inf))
    assert np.all(bars["low"] <= bars["high"]) and np.all(bars["volume"] >= 0) and np.all(bars["trades"] > 0)


@fuzz(400)
@given(rows=_pages(AGG), cursor=st.sampled_from([-1, 26128, 26129]))
def test_fuzz_aggregate_trade_pages(rows: list, cursor: int) -> None:  # type: ignore[type-arg]
    tried("test_fuzz_aggregate_trade_pages")
    src = source()
    trades = src._aggs(rows, cursor, -1, START)
    assert np.all(np.diff(trades["cursor"]) > 0) and np.all(trades["cursor"] > cursor)
    assert np.all(trades["first_id"][1:] > trades["last_id"][:-1])
    assert np.all(trades["first_id"] <= trades["last_id"])
    assert np.all((trades["price"] > 0) & (trades["price"] < math.inf) & (trades["size"] >= 0))
    assert np.all(trades["ts"] >= START * 1_000_000) and np.all(np.isin(trades["side"], (-1, 1)))


def test_ids_and_counts_beyond_int64_are_bad_rows_not_a_crash() -> None:
    """A kline's trade count or an aggregate's ids past int64 cannot be stored: bad rows, counted."""
    src = source()
    bars, _ = src._klines([[*KLINE[:8], 2**64, *KLINE[9:]]], START, START + MINUTE, MINUTE, -1)
    trades = src._aggs([{**AGG, "a": 2**63}, {**AGG, "a": 26130, "l": 2**64}], -1, -1, START)
    assert len(bars) == len(trades) == 0
    assert src.counters.rest_bad == {"bad bar": 1, "bad trade": 2}


# --- Coinbase: candles and market trades ------------------------------------------------------------
CANDLE = {"start": str(START // 1000), "low": "10.0", "high": "11.0", "open": "10.5", "close": "10.75",
          "volume": "3.25"}
CB_TRADE = {"trade_id": "995098663", "product_id": "BTC-USD", "price": "68923.67", "size": "0.00064",
            "time": "2026-04-07T00:28:58.544778Z", "side": "SELL", "bid": "", "ask": "",
            "exchange": "coinbase"}


def coinbase() -> CoinbaseHistory:
    return CoinbaseHistory("http://127.0.0.1:9", FeedCounters("coinbase"))


@fuzz(400)
@given(rows=_pages(CANDLE), newest=st.sampled_from([-1, START // 1000, START // 1000 - 60]))
def test_fuzz_coinbase_candle_pages(rows: list, newest: int) -> None:  # type: ignore[type-arg]
    tried("test_fuzz_coinbase_candle_pages")
    start, end = START // 1000, START // 1000 + 600
    bars, last = coinbase().candles(rows, start, end, 60, newest)
    t = bars["t"] // 1_000_000_000
    assert np.all((t >= start) & (t < end) & (t % 60 == 0) & (t > newest))
    assert np.all(np.diff(t) > 0) and last >= newest
    for name in ("open", "high", "low", "close"):
        assert np.all((bars[name] > 0) & (bars[name] < math.inf))
    assert np.all(bars["low"] <= bars["high"]) and np.all(bars["volume"] > 0)


@fuzz(400)
@given(rows=_pages(CB_TRADE))
def test_fuzz_coinbase_market_trade_pages(rows: list) -> None:  # type: ignore[type-arg]
    tried("test_fuzz_coinbase_market_trade_pages")
    trades = coinbase().market_trades(rows, ("BTC-USD",))
    for tid, (ts, price, size, side) in trades.items():
        assert 0 <= tid < 2**63 and 0 <= ts < 2**63 and 0 < price < math.inf and 0 <= size < math.inf
        assert side in (-1, 0, 1)


# --- Yahoo: chart answers ---------------------------------------------------------------------------
T = START // 1000
CHART = {"result": [{"meta": {"currency": "USD", "symbol": "AAPL", "exchangeTimezoneName": "America/New_York",
                              "tradingPeriods": [[{"timezone": "EST", "start": T, "end": T + 600,
                                                   "gmtoffset": -18000}]]},
                     "timestamp": [T, T + 60, T + 120],
                     "indicators": {"quote": [{"open": [10.5, None, 10.7], "high": [11.0, None, 10.9],
                                               "low": [10.0, None, 10.6], "close": [10.75, None, 10.8],
                                               "volume": [300, None, 0]}]}}],
         "error": None}


@fuzz(400)
@given(chart=st.one_of(st.just(CHART), mutated(CHART).map(json.loads), json_values),
       step=st.sampled_from([60, 86_400]), newest=st.sampled_from([-1, T]))
def test_fuzz_yahoo_chart_answers(chart: object, step: int, newest: int) -> None:
    tried("test_fuzz_yahoo_chart_answers")
    source = YahooHistory("http://127.0.0.1:9", _no_fetch, FeedCounters("yahoo"))
    start, end = T - 86_400, T + 600
    bars, last = source.chart_bars(chart, "AAPL", start, end, step, newest)
    t = bars["t"] // 1_000_000_000
    assert np.all((t >= start) & (t < end) & (t % step == 0) & (t > newest))
    assert np.all(np.diff(t) > 0) and last >= newest
    for name in ("open", "high", "low", "close"):
        assert np.all((bars[name] > 0) & (bars[name] < math.inf))
    assert np.all(bars["low"] <= bars["high"]) and np.all(bars["volume"] >= 0)


async def _no_fetch(url: str, params: dict[str, str], limit: int) -> str:
    return "no requests in a fuzz test"


def test_a_yahoo_chart_with_times_or_volumes_past_what_fits_is_bad_rows_not_a_crash() -> None:
    source = YahooHistory("http://127.0.0.1:9", _no_fetch, FeedCounters("yahoo"))
    chart = json.loads(json.dumps(CHART))
    chart["result"][0]["timestamp"] = [2**64, T + 60, T + 120]
    chart["result"][0]["indicators"]["quote"][0]["volume"] = [300, None, 10**400]
    bars, _ = source.chart_bars(chart, "AAPL", T, T + 600, 60, -1)
    assert len(bars) == 0 and source.counters.rest_bad == {"bad row": 2}


def test_a_nan_in_any_field_of_a_bar_is_a_bad_bar_from_every_service() -> None:
    """``min`` and ``max`` let a NaN through as if it were in range (``min(10.5, nan)`` is 10.5): the
    fuzzer found a Coinbase candle closing at "NAN" taken as a bar."""
    fields = ("open", "high", "low", "close", "volume")
    for i, name in enumerate(fields):
        for nan in ("NaN", "NAN", "nan"):
            kline = [*KLINE]
            kline[1 + i] = nan
            bars, _ = source()._klines([kline], START, START + MINUTE, MINUTE, -1)
            assert len(bars) == 0, ("binance", name, nan)
            first = START // 1000
            candles, _ = coinbase().candles([{**CANDLE, name: nan}], first, first + 60, 60, -1)
            assert len(candles) == 0, ("coinbase", name, nan)
        chart = json.loads(json.dumps(CHART))
        quote = chart["result"][0]["indicators"]["quote"][0]
        quote[name] = [math.nan, *quote[name][1:]]
        yahoo = YahooHistory("http://127.0.0.1:9", _no_fetch, FeedCounters("yahoo"))
        clean, _ = yahoo.chart_bars(json.loads(json.dumps(CHART)), "AAPL", T, T + 600, 60, -1)
        bars, _ = yahoo.chart_bars(chart, "AAPL", T, T + 600, 60, -1)
        assert len(bars) == len(clean) - 1 and T * 1_000_000_000 not in bars["t"], ("yahoo", name)
