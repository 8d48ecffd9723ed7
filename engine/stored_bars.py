"""Bars older than the engine's in-memory ring, read from the bar store when the chart or a backtest asks
for more than the ring holds.

The ring (``engine.history``, sized by ``engine.backfill.sizing.ring_bars``) keeps what the indicators
and the screen need at the engine's interval; a live feed's bar store (``engine.store``) keeps every bar
it closed. A chart at five times the interval, or a backtest, reads the store's newest bars and keeps the
ones older than the ring's oldest bar (``engine.chart_data``, ``engine.runtime``). Reads run in the
caller's thread: never the engine's (ticks wait) nor the event loop (the runtime calls through
``asyncio.to_thread``).

The sim and a replay keep no store (``engine.store.PERSISTED_FEEDS`` says why): then :attr:`missing` says
so, and the chart says what it shows instead of starting silently where the ring starts.

Bounds: one read returns at most ``READ_MAX`` bars; the last read of at most ``CACHED`` symbols is kept
(the chart asks every second, and bars already stored do not change), and a later read asks the store
only for bars newer than the newest it has (a bar stored again by a refill is seen at the next full read).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.store import PERSISTED_FEEDS, BarStore, StoreError, open_store

if TYPE_CHECKING:
    from engine.config_model import Config

READ_MAX = 200_000
"""Bars one read returns at most (9.6 MB as read): a chart at the widest timeframe (one week of one-hour
bars, 168 x the ring) stays under it."""
CACHED = 4
"""Symbols whose last read is kept (the detail pane shows one at a time; a backtest may read another)."""
BACKTEST_BARS = 100_000
"""Bars a backtest in the console reads at most (the ring's, then older ones from the store): 69 days of
one-minute bars."""

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, eq=False)
class OlderBars:
    """Bars read from the store (times ascending) and, when there is no store, why."""

    t: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ohlcv: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    missing: str = ""
    """Why no bar older than the ring can be read ("" when a store is there)."""

    def __len__(self) -> int:
        return len(self.t)


def merge(older: OlderBars | None, t: np.ndarray, ohlcv: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The stored bars older than the ring's first (``t[0]``), then the ring's: (times, bars, stored bars
    used). With an empty ring, every stored bar."""
    if older is None or not len(older):
        return t, ohlcv, 0
    keep = older.t < t[0] if len(t) else np.ones(len(older), dtype=np.bool_)
    n = int(keep.sum())
    if not n:
        return t, ohlcv, 0
    return np.concatenate([older.t[keep], t]), np.vstack([older.ohlcv[keep], ohlcv]), n


class StoredBars:
    """Reads one feed's stored bars at the engine's interval (see the module docstring)."""

    def __init__(self, config: Config, feed: str, interval_ns: int) -> None:
        self.config = config
        self.feed = feed
        self.interval_ns = int(interval_ns)
        self.missing = ""
        if feed not in PERSISTED_FEEDS:
            self.missing = f"the {feed} feed keeps no bar store"
        elif not config.history.store.strip():
            self.missing = "history.store is off"
        self.reads = 0  # reads that went to the store (not answered from the cache alone)
        self._store: BarStore | None = None
        self._opened = False
        self._lock = threading.Lock()  # one read at a time: the cache and the opening
        self._cache: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()  # bars, limit asked

    def newest(self, symbol: str, now_ns: int, limit: int) -> OlderBars:
        """``symbol``'s newest ``limit`` stored bars (at most ``READ_MAX``) that opened before
        ``now_ns``; none, with the reason in ``missing``, when there is no store."""
        limit = max(0, min(int(limit), READ_MAX))
        with self._lock:
            store = self._open()
            if store is None:
                return OlderBars(missing=self.missing)
            try:
                bars = self._read(store, symbol, int(now_ns), limit)
            except StoreError as exc:
                return OlderBars(missing=str(exc))
        ohlcv = np.stack([bars[name] for name in _FIELDS], axis=1).astype(np.float64, copy=False)
        return OlderBars(bars["t"].astype(np.int64), ohlcv)

    def last_before(self, symbol: str, before_ns: int) -> tuple[int, float] | None:
        """The newest stored bar of ``symbol`` that opened before ``before_ns`` as (open time, close), or
        None (no store, no such bar): a previous session's close (``engine.positions.daily``). Read
        past the cache, whose bars were read for another time."""
        with self._lock:
            store = self._open()
            if store is None:
                return None
            try:
                bars = store.load_before(self.feed, symbol, self.interval_ns, int(before_ns), 1)
            except StoreError:
                return None
        return (int(bars["t"][-1]), float(bars["close"][-1])) if len(bars) else None

    def _read(self, store: BarStore, symbol: str, now_ns: int, limit: int) -> np.ndarray:
        cached = self._cache.get(symbol)
        # the cache serves only a read for a time after every bar it holds: read for an earlier time, it
        # would return bars newer than asked (and fewer than ``limit`` older ones)
        if cached is not None and cached[1] >= limit and (not len(cached[0]) or cached[0]["t"][-1] < now_ns):
            bars = cached[0]
            since = int(bars["t"][-1]) + 1 if len(bars) else 0  # bars stored since: all newer than these
            fresh = store.load(self.feed, symbol, self.interval_ns, since)
            bars = np.concatenate([bars, fresh[fresh["t"] < now_ns]])
        else:
            self.reads += 1
            bars = store.load_before(self.feed, symbol, self.interval_ns, now_ns, limit)
        bars = bars[-limit:] if limit else bars[:0]
        self._cache[symbol] = (bars, limit)
        self._cache.move_to_end(symbol)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return bars

    def _open(self) -> BarStore | None:
        if not self._opened and not self.missing:
            self._opened = True
            try:
                self._store = open_store(self.config)
            except StoreError as exc:
                self.missing = str(exc)
            if self._store is None and not self.missing:
                self.missing = "history.store is off"
        return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._opened, self.missing = True, self.missing or "the bar store is closed"
            self._cache.clear()
