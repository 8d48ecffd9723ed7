"""What ``tickdeck attach nats://`` shows of a fleet: every engine's snapshots merged into one, and one
row of health per engine. Pure (no NATS, no clock of its own: times are passed in), so it is tested on
its own; ``engine.bus.attach`` feeds it what arrives on the bus.

- The watchlist: the union of the engines' symbols; for a symbol two engines carry (redundant
  engines), the quote from the snapshot built last (``at_ns``), the newer bar on a tie. An engine's
  snapshot may come in parts (one per ``max_payload``, ``engine.bus.publisher``): the parts of one
  build share its ``at_ns`` and each replaces its own quotes only.
- The merged snapshot's ``at_ns`` is the newest of the engines', its ``ticks`` and ``bars`` the sums of
  every engine's last counts, so the header's rate of ticks is the fleet's.
- Per engine (its feed, interval and name, as the snapshot subject names them): its state (from its
  feed statuses, ``live`` once it sends snapshots), symbols, when it was last heard of, and its own
  health (lag, tick -> signal, queue). An engine silent for ``gone_s`` seconds is marked gone; it comes
  back by itself when it publishes again. A gone engine's quotes stay on the watchlist (the last known
  prices) until it has been silent ``forget_s``, when it and its quotes are dropped.
- The symbols first seen since the console's last look (``take_new_symbols``): how the fleet console
  learns that its symbol set grew (an engine started, or carries more), to list them by itself.
- The merged health: the worst lag and tick -> signal figures of the engines that are not gone, the
  sums of their queues and counters; ``FleetHealth.engines`` carries the rows for the performance panel.

Bounds: ``MAX_ENGINES`` engines (the one silent longest is forgotten first), and per engine the quotes
it sent (its feed's symbols, which its own ``engine.max_symbols`` bounds); the new symbols not yet taken
are a part of the symbols remembered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.feeds.base import FeedStatus
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

GONE_S = 5.0
"""An engine silent this long (no snapshot, no status) is marked gone: five snapshots missed at the
publishers' default ``bus.snapshot_every`` of 1 s."""
FORGET_S = 600.0
"""A gone engine's row and quotes are dropped after this long without a word from it."""
MAX_ENGINES = 256
"""Engines remembered at once; past it the one silent longest is forgotten."""


@dataclass(frozen=True)
class EngineView:
    """One engine as the performance panel shows it."""

    name: str
    feed: str
    interval: str
    state: str  # its feed's state (live, stale, reconnecting, ...), or "gone"
    symbols: int
    seen_s: float  # seconds since it was last heard of
    lag_p99_ms: float = math.nan
    signal_p99_ms: float = math.nan
    queue_depth: int = 0
    reason: str = ""
    at_ns: int = 0  # when its newest snapshot was built (its wall clock)

    @property
    def gone(self) -> bool:
        return self.state == "gone"


@dataclass(frozen=True)
class FleetHealth(PipelineHealth):
    """The fleet's merged health, with one :class:`EngineView` per engine (never encoded in a frame)."""

    engines: tuple[EngineView, ...] = ()


@dataclass
class _Engine:
    name: str
    feed: str
    interval: str
    seen: float  # monotonic seconds
    state: str = "live"
    reason: str = ""
    at_ns: int = 0  # its newest snapshot's build time
    ticks: int = 0
    bars: int = 0
    health: PipelineHealth | None = None
    quotes: dict[str, Quote] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)  # symbol -> at_ns of the snapshot it came in


Key = tuple[str, str, str]  # feed, interval, engine


class FleetMerge:
    """See the module docstring. Times (``now``) are monotonic seconds, given by the caller."""

    def __init__(self, gone_s: float = GONE_S, forget_s: float = FORGET_S,
                 max_engines: int = MAX_ENGINES) -> None:
        self.gone_s = gone_s
        self.forget_s = max(forget_s, gone_s)
        self.max_engines = max_engines
        self._engines: dict[Key, _Engine] = {}
        self._symbols: dict[str, None] = {}  # every symbol seen, in the order first seen
        self._new: dict[str, None] = {}  # those first seen since take_new_symbols

    # --- what arrives -----------------------------------------------------------------------------
    def take_snapshot(self, feed: str, interval: str, engine: str, snapshot: MarketSnapshot,
                      health: PipelineHealth | None, now: float) -> None:
        key = (feed, interval, engine)
        early = self._engines.get((feed, "", engine))
        if key not in self._engines and early is not None and not early.quotes:  # heard of by its status
            del self._engines[(feed, "", engine)]
            early.interval = interval
            self._engines[key] = early
        e = self._engine(key, now)
        if now - e.seen >= self.gone_s:  # back after a silence: its old status says nothing now
            e.state, e.reason = "live", ""
        e.seen = now
        if snapshot.at_ns >= e.at_ns:
            e.at_ns, e.ticks, e.bars = snapshot.at_ns, snapshot.ticks, snapshot.bars
            if health is not None:
                e.health = health
        for q in snapshot.quotes:
            e.quotes[q.symbol] = q
            e.stamps[q.symbol] = snapshot.at_ns
            if q.symbol not in self._symbols:
                self._symbols[q.symbol] = None
                self._new[q.symbol] = None

    def take_status(self, feed: str, engine: str, status: FeedStatus, now: float) -> None:
        """An engine's feed status (its subject has no interval: every engine of that feed and name)."""
        if status.symbols:  # a note on some symbols (a stale quote): not the engine's state
            for e in self._matching(feed, engine):
                e.seen = now
            return
        matching = self._matching(feed, engine) or [self._engine((feed, "", engine), now)]
        for e in matching:
            e.seen = now
            e.state, e.reason = status.state, status.reason

    def _matching(self, feed: str, engine: str) -> list[_Engine]:
        return [e for (f, _, n), e in self._engines.items() if f == feed and n == engine]

    def _engine(self, key: Key, now: float) -> _Engine:
        e = self._engines.get(key)
        if e is None:
            while len(self._engines) >= self.max_engines:
                oldest = min(self._engines, key=lambda k: self._engines[k].seen)
                self._drop(oldest)
            e = self._engines[key] = _Engine(key[2], key[0], key[1], now)
        return e

    def _drop(self, key: Key) -> None:
        self._engines.pop(key, None)
        kept: set[str] = set()
        for e in self._engines.values():
            kept.update(e.quotes)
        self._symbols = {s: None for s in self._symbols if s in kept}
        self._new = {s: None for s in self._new if s in kept}

    def forget_old(self, now: float) -> bool:
        """Drop the engines silent for ``forget_s``; whether any was."""
        old = [k for k, e in self._engines.items() if now - e.seen >= self.forget_s]
        for key in old:
            self._drop(key)
        return bool(old)

    # --- what the console shows ---------------------------------------------------------------------
    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol of the engines remembered, in the order first seen."""
        return tuple(self._symbols)

    def take_new_symbols(self) -> tuple[str, ...]:
        """The symbols first seen since the last call, in that order (a forgotten engine's symbols count
        as new again when it comes back)."""
        new, self._new = tuple(self._new), {}
        return new

    def gone(self, now: float) -> frozenset[Key]:
        return frozenset(k for k, e in self._engines.items() if now - e.seen >= self.gone_s)

    def snapshot(self) -> MarketSnapshot | None:
        """The merged snapshot (module docstring); None before any engine sent one."""
        engines = [e for e in self._engines.values() if e.quotes]
        if not engines:
            return None
        best: dict[str, tuple[int, int, Quote]] = {}
        for e in engines:
            for symbol, q in e.quotes.items():
                rank = (e.stamps[symbol], q.bar_time)
                held = best.get(symbol)
                if held is None or rank > held[:2]:
                    best[symbol] = (*rank, q)
        quotes = tuple(best[s][2] for s in self._symbols if s in best)
        return MarketSnapshot(at_ns=max(e.at_ns for e in engines), quotes=quotes,
                              ticks=sum(e.ticks for e in engines), bars=sum(e.bars for e in engines))

    def views(self, now: float) -> tuple[EngineView, ...]:
        """One row per engine, by feed, interval and name."""
        rows = []
        for key in sorted(self._engines):
            e = self._engines[key]
            h = e.health
            gone = now - e.seen >= self.gone_s
            rows.append(EngineView(
                name=e.name, feed=e.feed, interval=e.interval, state="gone" if gone else e.state,
                symbols=len(e.quotes), seen_s=max(0.0, now - e.seen),
                lag_p99_ms=h.lag_p99_ms if h else math.nan, signal_p99_ms=h.signal_p99_ms if h else math.nan,
                queue_depth=h.queue_depth if h else 0, reason=e.reason, at_ns=e.at_ns))
        return tuple(rows)

    def health(self, now: float, feed: str = "fleet") -> FleetHealth:
        views = self.views(now)
        here = [e.health for k, e in sorted(self._engines.items()) if e.health is not None
                and now - e.seen < self.gone_s]

        def worst(values: list[float]) -> float:
            finite = [v for v in values if math.isfinite(v)]
            return max(finite) if finite else math.nan

        return FleetHealth(
            lag_p50_ms=worst([h.lag_p50_ms for h in here]) if here else 0.0,
            lag_p99_ms=worst([h.lag_p99_ms for h in here]) if here else 0.0,
            queue_depth=sum(h.queue_depth for h in here),
            queue_depth_max=sum(h.queue_depth_max for h in here),
            coalesced=sum(h.coalesced for h in here), bad_messages=sum(h.bad_messages for h in here),
            reconnects=sum(h.reconnects for h in here), gaps=sum(h.gaps for h in here),
            duplicates=sum(h.duplicates for h in here), feed=feed, batches=sum(h.batches for h in here),
            ticks_in=sum(h.ticks_in for h in here), ticks_processed=sum(h.ticks_processed for h in here),
            engine_p50_us=worst([h.engine_p50_us for h in here]),
            engine_p99_us=worst([h.engine_p99_us for h in here]),
            signal_p50_ms=worst([h.signal_p50_ms for h in here]),
            signal_p99_ms=worst([h.signal_p99_ms for h in here]),
            refills=sum(h.refills for h in here), history_done=sum(h.history_done for h in here),
            history_total=sum(h.history_total for h in here), engines=views)

    def summary(self, now: float) -> tuple[int, list[str]]:
        """(engines not gone, names of the gone ones)."""
        views = self.views(now)
        return sum(not v.gone for v in views), [v.name for v in views if v.gone]

    @property
    def feeds(self) -> tuple[str, ...]:
        return tuple(sorted({e.feed for e in self._engines.values()}))

    @property
    def intervals(self) -> tuple[str, ...]:
        return tuple(sorted({e.interval for e in self._engines.values() if e.interval}))
