"""What a service's REST history must offer the loader: closed bars over a span, and trades with ids.

One ``HistorySource`` per service (``binance``, ``coinbase``, ``yahoo`` in this package). It
owns one aiohttp session and sends every request through its host's shared limiter; it returns numpy
arrays, never Python rows, so a thousand bars cost one conversion.

Bad answers (an error status, HTML instead of JSON, a partial page, overlapping or out-of-order rows, an
empty range) are counted per reason in the feed's counters (``FeedCounters.bad_answer``) and skipped;
a symbol whose history cannot be had at all raises ``HistoryUnavailable`` with a reason a user can act
on, and the feed streams it live without history, the reason in its status.
"""

from __future__ import annotations

import abc
import math

import numpy as np

DAY_NS = 86_400 * 1_000_000_000
DAILY_REACH_DAYS = 7
"""How far back :meth:`HistorySource.daily_close` looks for the last day that traded (a week: a quiet
symbol's last price may be a few days old; beyond that it is no session's close)."""

TRADE_DTYPE = np.dtype(
    [
        ("ts", np.int64),  # exchange time, ns since the epoch
        ("price", np.float64),
        ("size", np.float64),
        ("side", np.int8),  # +1 the buyer took liquidity, -1 the seller, 0 unknown
        ("first_id", np.int64),  # the first and last trade id this row covers (equal for one trade;
        ("last_id", np.int64),  # a Binance aggregate trade covers a run of ids)
        ("cursor", np.int64),  # where the next page starts after this row (Binance: the aggregate id)
    ]
)
"""Trades as a history source returns them: one row per trade or per aggregate of trades."""


def whole_bar(o: float, h: float, lo: float, c: float, v: float) -> bool:
    """A bar a service may be believed on: finite, positive prices with the low and high around the
    open and close, and a volume. Every field is checked for NaN on its own: ``min`` and ``max`` pass a
    NaN through as if it were in range (``min(10.5, nan)`` is 10.5)."""
    finite = all(math.isfinite(x) for x in (o, h, lo, c, v))
    return finite and 0 < lo <= min(o, c) and max(o, c) <= h and v >= 0


class HistoryUnavailable(Exception):
    """The history of a symbol cannot be had (refused, banned, unreachable, nothing served); the
    message is the reason, shown in the symbol's status. ``final``: asking again later cannot help (the
    service refused the symbol, or has nothing of it), so the loader does not try again."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


class HistorySource(abc.ABC):
    """A service's REST history. Every method may raise ``HistoryUnavailable``; none raises for one bad
    answer (it is counted, skipped, and asked again within the method's bounded retries)."""

    #: the service (as the feed is named: ``binance``)
    service: str = ""
    #: the most bars one request returns
    max_bars: int = 1
    #: whether trades carry ids, so a seam and a refill can be exact
    trade_ids: bool = False

    def span_ns(self, bars: int, interval_ns: int) -> int:
        """How far before the forming bar to ask for ``bars`` bars: exactly their span on a market that
        trades around the clock; more on one with sessions (nights, weekends, holidays have no bars), of
        which the loader keeps the newest ``bars``."""
        return bars * interval_ns

    @abc.abstractmethod
    def bar_interval(self, interval_ns: int) -> int:
        """The service's bar interval nearest to ``interval_ns`` that divides it (finer bars aggregate
        into the engine's); ``HistoryUnavailable`` when none does."""

    @abc.abstractmethod
    async def bars(self, symbol: str, start_ns: int, end_ns: int, interval_ns: int, *,
                   older: bool = False) -> np.ndarray:
        """Closed bars of ``symbol`` (``BAR_DTYPE``, ``sym`` = -1) opening in ``[start_ns, end_ns)`` at
        ``bar_interval(interval_ns)``, ascending, no duplicates, bars without trades left out (the
        engine makes no bar for an interval without a trade, so neither may history); paged within
        ``max_bars``. An empty answer is counted as a bad one ("empty range"), unless ``older``: a
        window asked for beyond what the service may hold (before a symbol was listed) may be empty."""

    @abc.abstractmethod
    async def trades(self, symbol: str, *, start_ns: int | None = None, after: int | None = None,
                     until_id: int | None = None) -> np.ndarray:
        """Trades of ``symbol`` (``TRADE_DTYPE``, ascending) from ``start_ns``, or after the row whose
        ``cursor`` is ``after``, page after page until one covers ``until_id`` or the service has no
        more; bounded in pages."""

    @abc.abstractmethod
    async def last_trade_before(self, symbol: str, end_ns: int) -> np.ndarray:
        """The newest trade row of ``symbol`` before ``end_ns`` (0 or 1 rows of ``TRADE_DTYPE``)."""

    async def daily_close(self, symbol: str, before_ns: int) -> tuple[int, float] | None:
        """The newest daily bar of ``symbol`` that opened before ``before_ns`` (a UTC day's start: the
        session of a market that trades around the clock) as (open time ns, close), or None when the
        service has none in the ``DAILY_REACH_DAYS`` days before: the previous session's close, for a
        position's day P&L when the engine's ring no longer holds it. One request of a few bars
        (Binance: ``/api/v3/klines?interval=1d``; Coinbase: ``ONE_DAY`` candles), through the source's
        limiter; days without a trade have no bar, so the newest one holds the last price before."""
        reach = DAILY_REACH_DAYS * DAY_NS
        bars = await self.bars(symbol, before_ns - reach, before_ns, DAY_NS, older=True)
        bars = bars[bars["t"] < before_ns]
        return (int(bars["t"][-1]), float(bars["close"][-1])) if len(bars) else None

    async def aclose(self) -> None:
        """Close the session (idempotent)."""
        return None
