"""Day P&L against a previous session close the history ring no longer holds: looked up once per held
symbol per session in the bar store, else in the service's daily bars (Binance's 1d klines, against the
stand-in), and carried by the snapshot quotes as the ring's closes are."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest

from engine.backfill.binance import BinanceHistory
from engine.backfill.source import HistoryUnavailable
from engine.config import load_config
from engine.feeds.base import FeedCounters
from engine.history import BarHistory as History
from engine.positions.daily import STORE_REACH_NS, DailyCloses
from engine.positions.session import DAY_NS, SessionCloses
from engine.store import open_store
from engine.stored_bars import StoredBars
from engine.ticks import make_bars
from tests.servers.binance_rest import BinanceHistoryServer

MIN = 60_000_000_000
MS = 1_000_000
MIDNIGHT = 20_000 * DAY_NS  # a UTC midnight


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def todays_ring(midnight: int = MIDNIGHT) -> History:
    """Slot 0 (A) and slot 1 (B) hold only bars of the current UTC day: no previous close in the ring."""
    h = History(4, 8)
    for slot in (0, 1):
        for i in range(3):
            h.append(slot, midnight + i * MIN, 50.0, 50.0, 50.0, 50.0 + i, 1.0)
    return h


async def test_a_held_symbol_the_ring_has_no_close_for_gets_one_looked_up_once_per_session() -> None:
    asked: list[tuple[str, int]] = []

    async def service(name: str, before: int) -> tuple[int, float] | None:
        asked.append((name, before))
        return before - DAY_NS, {"A": 40.0}.get(name, 0.0) + before / DAY_NS - 20_000

    clock = Clock(MIDNIGHT + 3 * MIN)
    daily = DailyCloses("binance", clock, service=service)
    daily.hold(["A"])  # B is on the list but not held: no lookup for it
    sessions = SessionCloses("binance")
    sessions.daily = daily
    h, slots = todays_ring(), np.array([0, 1])
    first = sessions.closes(h, slots, ["A", "B"], clock())
    assert math.isnan(first[0]) and math.isnan(first[1])  # before the lookup: unknown, not a wrong number
    assert daily.missing == (MIDNIGHT, ("A",))
    assert await daily.fill() == 1
    for _ in range(5):  # frames and checks go on: nothing is asked again this session
        out = sessions.closes(h, slots, ["A", "B"], clock())
        await daily.fill()
    assert out[0] == 40.0 and math.isnan(out[1])
    assert asked == [("A", MIDNIGHT)]
    clock.now = MIDNIGHT + DAY_NS + MIN  # the session turns: the new day's close is asked for
    h = todays_ring(MIDNIGHT + DAY_NS)
    assert math.isnan(sessions.closes(h, np.array([0]), ["A"], clock.now)[0])  # not yesterday's 40
    await daily.fill()
    assert asked[-1] == ("A", MIDNIGHT + DAY_NS)
    assert sessions.closes(h, np.array([0]), ["A"], clock.now)[0] == 41.0


async def test_the_ring_wins_and_a_reported_close_wins_over_both() -> None:
    async def service(name: str, before: int) -> tuple[int, float] | None:
        raise AssertionError("the ring has it: nothing to look up")

    h = History(4, 8)
    h.append(0, MIDNIGHT - MIN, 9.0, 9.0, 9.0, 9.0, 1.0)
    h.append(0, MIDNIGHT, 10.0, 10.0, 10.0, 10.0, 1.0)
    daily = DailyCloses("binance", Clock(MIDNIGHT + MIN), service=service)
    daily.hold(["A"])
    sessions = SessionCloses("binance")
    sessions.daily = daily
    assert sessions.closes(h, np.array([0]), ["A"], MIDNIGHT + MIN)[0] == 9.0
    assert daily.missing[1] == () and await daily.fill() == 0


async def test_a_failed_lookup_is_logged_once_and_leaves_the_day_pnl_unknown(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def service(name: str, before: int) -> tuple[int, float] | None:
        nonlocal calls
        calls += 1
        raise HistoryUnavailable("HTTP 503 from the stand-in")

    clock = Clock(MIDNIGHT + MIN)
    daily = DailyCloses("binance", clock, service=service)
    daily.hold(["A"])
    sessions = SessionCloses("binance")
    sessions.daily = daily
    caplog.set_level(logging.WARNING, logger="tickdeck.positions")
    for _ in range(3):
        assert math.isnan(sessions.closes(todays_ring(), np.array([0]), ["A"], clock())[0])
        await daily.fill()
    assert calls == 1  # asked again only after RETRY_S, not every check
    said = [r.getMessage() for r in caplog.records if "no previous close" in r.getMessage()]
    assert len(said) == 1 and "HTTP 503" in said[0] and "A" in said[0]


def test_a_feed_without_a_utc_day_session_or_any_source_looks_nothing_up() -> None:
    class Feed:
        def __init__(self, name: str) -> None:
            self.name = name
            self.history = None

        def now_ns(self) -> int:
            return MIDNIGHT

    assert DailyCloses.for_feed(Feed("yahoo"), lambda s, t: None) is None  # Yahoo reports its own
    assert DailyCloses.for_feed(Feed("sim"), None) is None  # no store, no service: the ring only
    assert DailyCloses.for_feed(Feed("binance"), lambda s, t: None) is not None


async def test_binance_daily_kline_gives_the_close_before_the_utc_day_one_request_per_session() -> None:
    midnight_ms = 1_700_006_400_000  # 2023-11-15 00:00 UTC
    async with BinanceHistoryServer() as server:
        for at, price in ((-30 * 3_600_000, "90.00"), (-2 * 3_600_000, "99.00"), (-60_000, "101.50"),
                          (5 * 60_000, "104.00")):
            await server.trade("BTCUSDT", price, "0.5", at_ms=midnight_ms + at)
        source = BinanceHistory(server.rest_url, FeedCounters("binance"))
        try:
            clock = Clock((midnight_ms + 10 * 60_000) * MS)
            daily = DailyCloses("binance", clock, service=source.daily_close)
            daily.hold(["BTCUSDT"])
            start = midnight_ms * MS
            for _ in range(3):
                daily.report_missing(start, ("BTCUSDT",))
                await daily.fill()
            assert daily.close("BTCUSDT", start) == 101.5  # the last trade before midnight
            assert server.rest.count("/api/v3/klines") == 1
            clock.now += DAY_NS  # the next day: its previous close is the 104.00 of the day before
            daily.report_missing(start + DAY_NS, ("BTCUSDT",))
            await daily.fill()
            assert daily.close("BTCUSDT", start + DAY_NS) == 104.0
            assert server.rest.count("/api/v3/klines") == 2
        finally:
            await source.aclose()


async def test_the_bar_store_answers_before_the_service_when_it_holds_the_sessions_last_bar(
        tmp_path: Path) -> None:
    midnight = time.time_ns() // DAY_NS * DAY_NS  # the store keeps recent bars (its retention)
    config = load_config(overrides={"feed.name": "binance", "engine.interval": "1m",
                                    "history.store": str(tmp_path / "store")}, env={})
    store = open_store(config)
    assert store is not None
    bars = make_bars(2)
    bars["t"] = [midnight - 2 * MIN, midnight - MIN]
    for name in ("open", "high", "low", "close"):
        bars[name] = [70.0, 71.0]
    bars["volume"] = 1.0
    store.append("binance", "ETHUSDT", MIN, bars)
    old = make_bars(1)
    old["t"] = midnight - STORE_REACH_NS - MIN  # a console that stopped early the day before
    for name in ("open", "high", "low", "close"):
        old[name] = 60.0
    old["volume"] = 1.0
    store.append("binance", "SOLUSDT", MIN, old)
    store.close()
    served: list[str] = []

    async def service(name: str, before: int) -> tuple[int, float] | None:
        served.append(name)
        return before - DAY_NS, 65.0

    reader = StoredBars(config, "binance", MIN)
    try:
        reader.newest("ETHUSDT", midnight + DAY_NS, 10)  # a chart's read, cached for a later time
        daily = DailyCloses("binance", Clock(midnight + MIN), stored=reader.last_before, service=service)
        daily.hold(["ETHUSDT", "SOLUSDT"])
        daily.report_missing(midnight, ("ETHUSDT", "SOLUSDT"))
        await asyncio.wait_for(daily.fill(), 10)
        assert daily.close("ETHUSDT", midnight) == 71.0  # the bar that opened at 23:59
        assert daily.close("SOLUSDT", midnight) == 65.0  # its stored bar is no close: the service's
        assert served == ["SOLUSDT"]
    finally:
        reader.close()


async def test_coinbase_daily_candle_gives_the_close_before_the_utc_day() -> None:
    from engine.backfill.coinbase import CoinbaseHistory
    from tests.servers.coinbase_history import CoinbaseHistoryServer

    midnight = 1_700_006_400 * 1_000_000_000  # 2023-11-15 00:00 UTC
    async with CoinbaseHistoryServer() as server:
        for at, price in ((-26 * 3_600, "2000.00"), (-3_600, "2010.50"), (-60, "2012.25"), (600, "2020.00")):
            await server.trade("ETH-USD", price, "0.5", at_ns=midnight + at * 1_000_000_000)
        source = CoinbaseHistory(server.rest_url, FeedCounters("coinbase"))
        try:
            assert await source.daily_close("ETH-USD", midnight) == (midnight - DAY_NS, 2012.25)
            assert server.count("candles") == 1  # one request, of daily candles
            assert server.requests[0][2]["granularity"] == "ONE_DAY"
            assert await source.daily_close("ETH-USD", midnight - 2 * DAY_NS) is None  # nothing traded yet
        finally:
            await source.aclose()
