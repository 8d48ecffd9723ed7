"""Binance spot history over REST: klines for closed bars, aggregate trades for the seam and for gaps.

Protocol, as Binance's spot REST docs state it (github.com/binance/binance-spot-api-docs, rest-api.md
and CHANGELOG.md, read 2026-07; the same parameters as binance-connector-python's
``binance/spot/_market.py`` ``klines`` and ``agg_trades``):

* ``GET /api/v3/klines?symbol&interval&startTime&endTime&limit``: weight 2, at most 1,000 klines a
  request (default 500); rows ``[open time, open, high, low, close, volume, close time, quote volume,
  number of trades, ...]``, ascending, one per interval from the symbol's listing, including intervals
  without a trade (then ``number of trades`` is 0: such rows are left out here, because the engine makes
  no bar where nothing traded, and history must build the bars the live tape builds).
* ``GET /api/v3/aggTrades?symbol&fromId|startTime|endTime&limit``: weight 4 since 2025-03-10, at most
  1,000 rows; ``{"a": aggregate id, "p", "q", "f": first trade id, "l": last trade id, "T": ms, "m":
  buyer is maker}``. ``fromId`` is an *aggregate* id (inclusive), so pages continue from the last ``a``
  + 1; trades of one taker order at one price and time share an aggregate, so an aggregate never spans
  two bars. "With ``startTime``, returns oldest items from ``startTime``; with ``endTime``, the most
  recent items up to ``endTime``" (General API Information).
* Errors: a 4xx with ``{"code", "msg"}`` is a request the service refuses (an unknown symbol: -1121);
  429 and 418 carry ``Retry-After`` (see ``engine.backfill.limiter``); 5xx are the service's trouble.

Every answer is checked row by row; what is wrong is counted per reason in the feed's counters
(``rest_bad``) and skipped, and a request is asked again a bounded number of times.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from engine.backfill.fetch import JsonGetter
from engine.backfill.limiter import WeightLimiter
from engine.backfill.source import TRADE_DTYPE, HistorySource, HistoryUnavailable, whole_bar
from engine.feeds.base import FeedCounters
from engine.ticks import make_bars

MS = 1_000_000  # ns per ms
KLINE_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
            "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
            "12h": 43_200_000, "1d": 86_400_000}
"""The kline intervals Binance serves up to a day (the engine's longest bar), in milliseconds."""
KLINES_WEIGHT = 2
AGG_TRADES_WEIGHT = 4
ROWS = 1000  # the most rows either endpoint returns
MAX_PAGES = 250  # per call: 250,000 rows, bounding a refill of a very long gap
_INT64 = 2**63 - 1  # ids and counts beyond it cannot be stored: bad rows
_MAX_MS = _INT64 // MS  # the latest time in ms whose ns fit an int64

Sleep = Callable[[float], Awaitable[None]]


class BinanceHistory(HistorySource):
    service = "binance"
    max_bars = ROWS
    trade_ids = True

    def __init__(self, base_url: str, counters: FeedCounters, *, limiter: WeightLimiter | None = None,
                 timeout: float = 10.0, sleep: Sleep = asyncio.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc or self.base_url
        self.counters = counters
        self.limiter = limiter or WeightLimiter(self.host)
        self._session: aiohttp.ClientSession | None = None
        # 418 (banned for going on past 429s) is waited out as 429 is, for the time Binance gives
        self._getter = JsonGetter(self.host, self.limiter, counters, timeout, self._open, sleep,
                                  throttled=frozenset({418, 429}))
        self.requests = self._getter.requests  # requests sent (answered or not), per path

    # --- the interface -------------------------------------------------------------------------
    def bar_interval(self, interval_ns: int) -> int:
        fits = [ms for ms in KLINE_MS.values() if interval_ns % (ms * MS) == 0]
        if not fits:
            raise HistoryUnavailable(f"Binance has no kline interval that divides {interval_ns / 1e9:g} s",
                                     final=True)
        return max(fits) * MS

    async def bars(self, symbol: str, start_ns: int, end_ns: int, interval_ns: int, *,
                   older: bool = False) -> np.ndarray:
        step = self.bar_interval(interval_ns) // MS
        name = next(k for k, v in KLINE_MS.items() if v == step)
        cursor = -(-start_ns // MS // step) * step  # the first kline opening at or after start
        end = end_ns // MS
        pages: list[np.ndarray] = []
        newest = -1
        for page in range(MAX_PAGES):
            if cursor >= end:
                break
            rows = await self._get("/api/v3/klines", {"symbol": symbol, "interval": name, "startTime": cursor,
                                                      "endTime": end - 1, "limit": ROWS}, KLINES_WEIGHT)
            bars, last = self._klines(rows, cursor, end, step, newest)
            if last < 0:  # nothing usable: an empty range, or every row bad (counted)
                if not rows and page == 0 and not older:
                    self.counters.bad_answer("empty range", f"{symbol} klines {cursor}..{end} ms: []")
                break
            pages.append(bars)
            newest = last
            if last + step >= end:
                break
            if len(rows) < ROWS:  # short, yet the range goes on: ask for the rest
                self.counters.bad_answer("partial page", f"{symbol} klines: {len(rows)} rows to {last}")
            cursor = last + step
        return np.concatenate(pages) if pages else make_bars(0)

    async def trades(self, symbol: str, *, start_ns: int | None = None, after: int | None = None,
                     until_id: int | None = None) -> np.ndarray:
        params: dict[str, Any] = {"symbol": symbol, "limit": ROWS}
        if after is not None:
            params["fromId"] = after + 1
        elif start_ns is not None:
            params["startTime"] = -(-start_ns // MS)
        else:
            raise ValueError("trades needs start_ns or after")
        start_ms = params.get("startTime", 0)
        pages: list[np.ndarray] = []
        cursor, last_id = (after if after is not None else -1), -1
        for _ in range(MAX_PAGES):
            rows = await self._get("/api/v3/aggTrades", params, AGG_TRADES_WEIGHT)
            trades = self._aggs(rows, cursor, last_id, start_ms)
            if len(trades):
                pages.append(trades)
                cursor, last_id = int(trades["cursor"][-1]), int(trades["last_id"][-1])
            if len(rows) < ROWS or not len(trades) or (until_id is not None and last_id >= until_id):
                break
            params = {"symbol": symbol, "fromId": cursor + 1, "limit": ROWS}
        return np.concatenate(pages) if pages else np.zeros(0, dtype=TRADE_DTYPE)

    async def last_trade_before(self, symbol: str, end_ns: int) -> np.ndarray:
        params = {"symbol": symbol, "endTime": end_ns // MS - 1, "limit": 1}
        rows = await self._get("/api/v3/aggTrades", params, AGG_TRADES_WEIGHT)
        trades = self._aggs(rows[-1:], -1, -1, 0)
        return trades[trades["ts"] < end_ns]

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # --- requests ------------------------------------------------------------------------------
    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limiter.max_in_flight, ttl_dns_cache=300),
                headers={"Accept": "application/json"})
        return self._session

    async def _get(self, path: str, params: dict[str, Any], weight: int) -> list[Any]:
        """The decoded JSON array of one GET, asked again after a bad answer (``JsonGetter``)."""
        return await self._getter.get(self.base_url + path, params, weight, path, self._array)

    def _array(self, status: int, decoded: Any, body: bytes) -> list[Any] | str:
        if status != 200 or isinstance(decoded, dict):
            code, msg = _error(decoded)
            self.counters.bad_answer(f"HTTP {status}" if status != 200 else "error answer", body)
            # a refusal (an unknown symbol, a WAF) says the same the next time; 429/418 are waited out
            raise HistoryUnavailable(f"{self.host} refused: {msg} (HTTP {status}, code {code})", final=True)
        if not isinstance(decoded, list):
            return f"an answer from {self.host} that is not a list"
        return decoded

    # --- answers, row by row -------------------------------------------------------------------
    def _klines(self, rows: list[Any], start: int, end: int, step: int,
                newest: int) -> tuple[np.ndarray, int]:
        """The rows that are closed bars with trades in ``[start, end)``, after ``newest``, on the grid,
        in time order; and the open time of the newest valid kline (-1: none)."""
        good: list[tuple[int, float, float, float, float, float, int]] = []
        for row in rows:
            try:
                if not isinstance(row, list) or type(row[0]) is not int or type(row[8]) is not int:
                    raise TypeError("not a kline")
                t, trades = row[0], row[8]
                o, h, lo, c, v = (float(_text(x)) for x in row[1:6])
            except (TypeError, ValueError, IndexError, OverflowError):
                self.counters.bad_answer("bad row", row)
                continue
            if t < start or t >= end or t % step:
                self.counters.bad_answer("bar outside the range", row)
            elif not (whole_bar(o, h, lo, c, v) and 0 <= trades <= _INT64):
                self.counters.bad_answer("bad bar", row)
            else:
                good.append((t, o, h, lo, c, v, trades))
        if any(a[0] > b[0] for a, b in itertools.pairwise(good)):
            self.counters.bad_answer("out-of-order bars", [g[0] for g in good][:20])
            good.sort(key=lambda g: g[0])
        out = make_bars(len(good))
        n, last = 0, newest
        for t, o, h, lo, c, v, trades in good:
            if t <= last:  # already had (from an earlier page, or twice in this one)
                self.counters.bad_answer("overlapping bars", t)
                continue
            last = t
            if trades:  # an interval nothing traded in makes no bar (see the module docstring)
                out[n] = (-1, t * MS, o, h, lo, c, v, trades)
                n += 1
        return out[:n], (last if last > newest else -1)

    def _aggs(self, rows: list[Any], cursor: int, last_id: int, start_ms: int) -> np.ndarray:
        """Valid aggregate trades after ``cursor`` / ``last_id``, in id order, as ``TRADE_DTYPE``."""
        good: list[tuple[int, int, int, int, float, float, bool]] = []
        for row in rows:
            try:
                if not isinstance(row, dict) or not all(type(row[k]) is int for k in "aflT") \
                        or type(row["m"]) is not bool:
                    raise TypeError("not an aggregate trade")
                a, f, lid, t = row["a"], row["f"], row["l"], row["T"]
                p, q = float(_text(row["p"])), float(_text(row["q"]))
            except (TypeError, ValueError, KeyError, OverflowError):
                self.counters.bad_answer("bad row", row)
                continue
            if not (0 < p < math.inf and 0 <= q < math.inf and 0 <= f <= lid <= _INT64 and 0 <= a <= _INT64
                    and start_ms <= t <= _MAX_MS):
                self.counters.bad_answer("bad trade", row)
                continue
            good.append((a, f, lid, t, p, q, row["m"]))
        if any(x[0] > y[0] for x, y in itertools.pairwise(good)):
            self.counters.bad_answer("out-of-order trades", [g[0] for g in good][:20])
            good.sort(key=lambda g: g[0])
        out = np.zeros(len(good), dtype=TRADE_DTYPE)
        n = 0
        for a, f, lid, t, p, q, maker in good:
            if a <= cursor or f <= last_id:
                self.counters.bad_answer("overlapping trades", a)
                continue
            out[n] = (t * MS, p, q, -1 if maker else 1, f, lid, a)
            n += 1
            cursor, last_id = a, lid
        return out[:n]


def _text(value: object) -> str:
    """Binance sends prices and sizes as strings; anything else is a bad row."""
    if not isinstance(value, str):
        raise TypeError("not a decimal string")
    return value


def _error(decoded: object) -> tuple[object, str]:
    if isinstance(decoded, dict):
        return decoded.get("code", "?"), str(decoded.get("msg", "no message"))[:200]
    return "?", "no message"

