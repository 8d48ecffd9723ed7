"""What the performance panel shows: one :class:`PerfSample` of the console's figures, with the hit rates
of its caches. ``console.perf`` measures them and ``widgets.perf_panel`` draws them; the type lives here,
beside the widget, so that widgets never import the console (the layer rule in ``pyproject.toml``).

Plain frozen dataclasses: no textual, no engine, nothing to load (a fleet's engine rows are typed from
``engine.bus.merge`` for the type checker only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.bus.merge import EngineView


@dataclass(frozen=True)
class CacheRate:
    name: str
    hit_rate: float  # 0..1 over the last interval (all time when idle meanwhile); NaN before any lookup
    lookups: int  # all time


@dataclass(frozen=True)
class PerfSample:
    """Every figure of the performance panel at one instant. Rates are over the interval since the
    previous sample; NaN means not measured (yet), never zero."""

    at: float  # monotonic seconds
    cpu_percent: float  # of one core: the engine thread and the event loop together may pass 100
    rss_bytes: int
    bytes_per_s: float  # written to the terminal
    bytes_total: int
    ticks_in_per_s: float
    ticks_processed_per_s: float
    backlog: int  # ticks delivered by the feed and not yet applied by the engine
    engine_p50_us: float
    engine_p99_us: float
    signal_p50_ms: float
    signal_p99_ms: float
    lag_p50_ms: float  # receive -> processed
    lag_p99_ms: float
    loop_lag_ms: float  # the event loop's worst lateness over the interval
    frame_p50_ms: float  # snapshot received -> screen refreshed
    frame_max_ms: float
    queue_depth: int
    queue_depth_max: int
    coalesced: int
    coalesced_per_s: float
    gc_per_s: float  # collections of every generation
    gc_collections: tuple[int, ...]  # all time, per generation
    caches: tuple[CacheRate, ...]
    feed: str
    reconnects: int
    bad_messages: int
    gaps: int
    duplicates: int
    engines: tuple[EngineView, ...] = ()  # one per engine of a fleet (tickdeck attach nats://), else none
