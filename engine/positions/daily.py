"""Previous session closes the history ring no longer holds: from the bar store, else the feed's service.

The ring (``engine.history``) keeps ~535 bars: at one-minute bars that is under nine hours, so the close
of the previous UTC day (crypto) is often out of it by the afternoon, and always after a restart. A
position's day P&L then needs the close from where it really lives:

1. the bar store (``engine.stored_bars.StoredBars.last_before``): the newest stored bar that opened
   before the session start, if it opened within :data:`STORE_REACH_NS` of it (a store written by a
   console that stopped earlier in the previous day holds a price, not that day's close);
2. else the feed's REST history (``engine.backfill.source.HistorySource.daily_close``: Binance's
   ``/api/v3/klines?interval=1d``, Coinbase's ``ONE_DAY`` candles), through the source's own limiter.

Yahoo reports its previous close with every quote (``regularMarketPreviousClose``, which wins in
:class:`~engine.positions.session.SessionCloses`); the sim and a replay have neither store nor service,
and their ring follows their own clock. So this runs for the feeds with a UTC-day session and a store
or a service.

Only held symbols are looked up (``hold``), each once per session: the answer, a close or "none", is kept
in a ``cachetools.TLRUCache`` keyed by (symbol, session start) that expires when the session turns (the
feed's clock), so a new day asks again; a lookup that failed (the service unreachable) is asked again
after :data:`RETRY_S`. Lookups run in :meth:`DailyCloses.run`, a task beside the runtime's loop: the
store in a thread, the service on the loop, at most :data:`CONCURRENT` at a time; never per tick, never
on the engine's thread or the UI's. The engine's thread reads only :attr:`DailyCloses.known`, a dict
replaced whole after each lookup (never mutated in place), so it sees one session's closes or the other.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import cachetools

from engine.positions.session import DAY_NS, NO_SESSION, UTC_DAY_FEEDS, session_start

log = logging.getLogger("tickdeck.positions")

MAX_SYMBOLS = 10_000
"""Symbols whose close (or "none") is kept per session: the engine's most slots."""
STORE_REACH_NS = 3_600 * 1_000_000_000
"""A stored bar is the previous session's close only if it opened in the hour before the session start."""
RETRY_S = 300.0
"""A lookup that failed is asked again after this (the service may be back)."""
CHECK_S = 1.0
"""How often :meth:`DailyCloses.run` looks for held symbols without a close."""
CONCURRENT = 4

StoreLookup = Callable[[str, int], "tuple[int, float] | None"]
ServiceLookup = Callable[[str, int], Awaitable["tuple[int, float] | None"]]


class DailyCloses:
    """One feed's previous session closes beyond the ring (see the module docstring)."""

    def __init__(self, feed: str, clock: Callable[[], int], *, stored: StoreLookup | None = None,
                 service: ServiceLookup | None = None) -> None:
        self.feed = feed
        self.clock = clock  # the feed's clock (ns): the session is the feed's
        self.stored = stored
        self.service = service
        self.held: frozenset[str] = frozenset()
        self.known: tuple[int, dict[str, float]] = (int(NO_SESSION), {})
        """(session start, close per symbol) for the engine's thread; replaced whole, never mutated."""
        self.missing: tuple[int, tuple[str, ...]] = (int(NO_SESSION), ())
        """Held symbols the last snapshot had no close for, and its session start (set by SessionCloses)."""
        self.answers: cachetools.TLRUCache[tuple[str, int], float] = cachetools.TLRUCache(
            MAX_SYMBOLS, ttu=lambda key, _value, _now: key[1] + DAY_NS, timer=self.clock)
        self.failed: cachetools.TTLCache[str, str] = cachetools.TTLCache(MAX_SYMBOLS, RETRY_S)
        self.lookups = {"store": 0, "service": 0}  # lookups made, per place (for tests and the curious)
        self._wake = asyncio.Event()

    @classmethod
    def for_feed(cls, feed: Any, stored: StoreLookup | None) -> DailyCloses | None:
        """The lookups ``feed`` (a ``Feed``) has: the store (None for feeds that keep none) and its REST
        history's daily bars; None when it has neither or no UTC-day session."""
        if feed.name not in UTC_DAY_FEEDS:
            return None
        inner = getattr(feed, "inner", feed)  # the headless service's StoppableFeed wraps the feed
        source = getattr(getattr(inner, "history", None), "source", None)
        service = source.daily_close if source is not None else None  # a HistorySource
        if stored is None and service is None:
            return None
        return cls(feed.name, feed.now_ns, stored=stored, service=service)

    def hold(self, symbols: Iterable[str]) -> None:
        """The symbols positions are held in (per book change): only these are looked up."""
        self.held = frozenset(symbols)
        self._wake.set()

    def close(self, symbol: str, start: int) -> float | None:
        """``symbol``'s close for the session that started at ``start``, if looked up and found."""
        known_start, known = self.known
        return known.get(symbol) if known_start == start else None

    def report_missing(self, start: int, names: tuple[str, ...]) -> None:
        """From the engine's thread: the held symbols the snapshot has no close for."""
        if (start, names) != self.missing:
            self.missing = (start, names)

    async def run(self) -> None:
        """Look up the missing closes every :data:`CHECK_S` (sooner after ``hold``) until cancelled."""
        while True:
            try:
                async with asyncio.timeout(CHECK_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.fill()
            except Exception:  # a bug here must not end the runtime: logged, and tried at the next turn
                log.exception("%s: looking up previous closes failed", self.feed)

    async def fill(self) -> int:
        """Look up the held symbols that have no close for the current session; returns how many."""
        start = session_start(self.feed, self.clock())
        missing_start, names = self.missing
        if start == NO_SESSION or missing_start != start:
            return 0
        asked, failed = self.answers, self.failed
        todo = [n for n in names if n in self.held and (n, start) not in asked and n not in failed]
        if not todo:
            return 0
        gate = asyncio.Semaphore(CONCURRENT)

        async def one(name: str) -> None:
            async with gate:
                await self._look_up(name, start)

        await asyncio.gather(*(one(n) for n in todo))
        self.known = (start, {name: close for (name, at), close in list(self.answers.items())
                              if at == start and math.isfinite(close)})
        return len(todo)

    async def _look_up(self, name: str, start: int) -> None:
        found = None
        try:
            if self.stored is not None:
                self.lookups["store"] += 1
                bar = await asyncio.to_thread(self.stored, name, start)
                if bar is not None and bar[0] >= start - STORE_REACH_NS:
                    found = bar[1]
            if found is None and self.service is not None:
                self.lookups["service"] += 1
                bar = await self.service(name, start)
                found = bar[1] if bar is not None else None
        except Exception as exc:  # HistoryUnavailable, a store error: asked again after RETRY_S
            reason = f"{type(exc).__name__}: {exc}"
            if name not in self.failed:
                log.warning("%s: %s: no previous close for the day P&L (asked again in %.0f s): %s",
                            self.feed, name, RETRY_S, reason)
            self.failed[name] = reason
            return
        ok = found is not None and math.isfinite(found) and found > 0
        self.answers[(name, start)] = found if ok and found is not None else math.nan
