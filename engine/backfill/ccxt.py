"""History of any ccxt exchange: closed bars from ``fetch_ohlcv``, through ccxt's own rate limiter.

The feed's exchange object is shared (one session, one limiter for the host, ``enableRateLimit`` on);
its REST errors come back as ccxt's exception classes, read here as the loader needs them:
``BadSymbol``/``BadRequest`` (the exchange refuses the symbol or the request: final), ``RateLimitExceeded``
and ``DDoSProtection`` (HTTP 429 and its kin), ``NetworkError`` (no answer, a 5xx): tried again
``TRIES`` times, waiting ``BACKOFF_S`` times the try's number, then ``HistoryUnavailable`` that the loader
retries later. Rows are checked one by one (a bar with a NaN or a low above its high is counted under
``rest_bad`` and skipped); bars with no volume are left out, as the engine makes no bar where nothing
traded (Kraken's OHLC lists every interval, traded or not).

The engine's interval maps to the exchange's timeframes (``exchange.timeframes``, parsed by ccxt's
``parse_timeframe``): the longest that divides it; the engine aggregates the finer bars. Trades by id are
not used (``trade_ids`` False): the feed meets its history by time, as Yahoo's does.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import numpy as np

from engine.backfill.source import TRADE_DTYPE, HistorySource, HistoryUnavailable, whole_bar
from engine.feeds.base import FeedCounters
from engine.ticks import make_bars

log = logging.getLogger("tickdeck.backfill")

MS = 1_000_000
SEC = 1_000_000_000
PAGE = 300
"""Bars asked for per request: OKX's ``market/candles`` serves at most 300, Kraken's OHLC at most 720 (it
answers the newest 720 whatever ``since`` says, which paging from ``since`` copes with)."""
MAX_PAGES = 50  # per call: 15,000 bars, bounding a refill of a very long gap
TRIES = 3  # per request, for a throttle or a network error
BACKOFF_S = 0.5  # times the try's number, on top of ccxt's own rate limiter


class CcxtHistory(HistorySource):
    service = "ccxt"
    max_bars = PAGE
    trade_ids = False

    def __init__(self, exchange: Any, counters: FeedCounters) -> None:
        self.exchange = exchange
        self.counters = counters
        self.requests = 0
        self._timeframes: list[tuple[int, str]] | None = None

    def timeframes(self) -> list[tuple[int, str]]:
        """The exchange's timeframes as (ns, name), longest first."""
        if self._timeframes is None:
            out = []
            for name in (getattr(self.exchange, "timeframes", None) or {}):
                try:
                    seconds = self.exchange.parse_timeframe(name)
                except Exception:  # a timeframe ccxt itself cannot read: not offered
                    continue
                if isinstance(seconds, int | float) and seconds > 0 and math.isfinite(seconds):
                    out.append((int(seconds * SEC), name))
            self._timeframes = sorted(out, reverse=True)
        return self._timeframes

    def bar_interval(self, interval_ns: int) -> int:
        for ns, _ in self.timeframes():
            if ns <= interval_ns and interval_ns % ns == 0:
                return ns
        offered = ", ".join(name for _, name in reversed(self.timeframes())) or "none"
        raise HistoryUnavailable(f"{self.exchange.id} has no bar interval that divides the engine's "
                                 f"(it offers {offered})", final=True)

    def _name(self, step_ns: int) -> str:
        return next(name for ns, name in self.timeframes() if ns == step_ns)

    async def bars(self, symbol: str, start_ns: int, end_ns: int, interval_ns: int, *,
                   older: bool = False) -> np.ndarray:
        step = self.bar_interval(interval_ns)
        timeframe = self._name(step)
        cursor = -(-start_ns // step) * step  # the first bar opening at or after start
        pages: list[np.ndarray] = []
        newest = -1
        for page in range(MAX_PAGES):
            if cursor >= end_ns:
                break
            rows = await self._ask(symbol, timeframe, cursor // MS)
            bars, last = self._rows(rows, cursor, end_ns, step, newest)
            if last < 0:
                if page == 0 and not older and not len(bars):
                    self.counters.bad_answer("empty range", f"{symbol} {timeframe} from {cursor // MS} ms")
                break
            pages.append(bars)
            newest = last
            cursor = last + step
        return np.concatenate(pages) if pages else make_bars(0)

    def _rows(self, rows: Any, start: int, end: int, step: int, newest: int) -> tuple[np.ndarray, int]:
        """The usable rows of one answer in ``[start, end)`` after ``newest``, and the open of the last
        row seen in range (-1: none), so paging goes on past bars without volume."""
        kept: list[tuple[int, float, float, float, float, float]] = []
        last = -1
        if not isinstance(rows, list):
            self.counters.bad_answer("not a list of bars", rows)
            return make_bars(0), -1
        for row in rows:
            try:
                t = int(row[0]) * MS
                o, h, lo, c, v = (float(x) for x in row[1:6])
            except (TypeError, ValueError, IndexError, OverflowError):
                self.counters.bad_answer("bad bar", row)
                continue
            if not start <= t < end or t % step:
                continue  # outside the window (Kraken answers its newest bars whatever was asked)
            if t <= newest:
                self.counters.bad_answer("out-of-order bar", row)
                continue
            if not whole_bar(o, h, lo, c, v):
                self.counters.bad_answer("bad bar", row)
                continue
            newest = last = t
            if v > 0:
                kept.append((t, o, h, lo, c, v))
        bars = make_bars(len(kept))
        if kept:
            arr = np.array(kept, dtype=np.float64)
            bars["t"] = np.array([k[0] for k in kept], dtype=np.int64)
            bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"] = arr[:, 1:].T
            bars["trades"] = -1
            bars["sym"] = -1
        return bars, last

    async def _ask(self, symbol: str, timeframe: str, since_ms: int) -> Any:
        import ccxt.async_support as ccxt  # loaded already by the feed that owns the exchange

        why = ""
        for attempt in range(TRIES):
            self.requests += 1
            try:
                return await self.exchange.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=PAGE)
            except (ccxt.BadSymbol, ccxt.BadRequest, ccxt.NotSupported) as exc:
                raise HistoryUnavailable(f"{self.exchange.id} refused {symbol}: {_line(exc)}", final=True) \
                    from None
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                self.counters.bad_answer("throttled", _line(exc))
                why = f"throttled by {self.exchange.id}"
            except (ccxt.NetworkError, ccxt.ExchangeError, TimeoutError, OSError) as exc:
                self.counters.bad_answer(type(exc).__name__, _line(exc))
                why = f"{self.exchange.id}: {_line(exc)}"
            await asyncio.sleep(BACKOFF_S * (attempt + 1))
        raise HistoryUnavailable(why)

    async def trades(self, symbol: str, *, start_ns: int | None = None, after: int | None = None,
                     until_id: int | None = None) -> np.ndarray:
        return np.zeros(0, TRADE_DTYPE)  # never asked: the seam is by time (trade_ids is False)

    async def last_trade_before(self, symbol: str, end_ns: int) -> np.ndarray:
        return np.zeros(0, TRADE_DTYPE)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else "") or type(exc).__name__
