"""How a runtime keeps up, as figures: queue depth, coalescing, lag, engine time and tick-to-signal
latency, with their percentiles over a bounded window of recent batches."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["RECENT", "RuntimeMetrics", "percentiles"]

RECENT = 2048
"""Batches the timing percentiles are taken over: enough for a stable p99, recent enough to move."""


def _recent() -> collections.deque[int]:
    return collections.deque(maxlen=RECENT)


def percentiles(samples: collections.deque[int], unit_ns: float, empty: float = 0.0) -> tuple[float, float]:
    """(p50, p99) of ``samples`` (nanoseconds) in units of ``unit_ns``; ``empty`` for both when there
    are none. The engine thread appends while this runs on the event loop: ``np.fromiter`` copies the
    deque in one C loop, under the GIL, so it never sees a deque mutated during iteration."""
    if not samples:
        return (empty, empty)
    p50, p99 = np.percentile(np.fromiter(samples, dtype=np.int64), [50, 99])
    return (float(p50) / unit_ns, float(p99) / unit_ns)


@dataclass
class RuntimeMetrics:
    """How the pipeline keeps up: queue depth, coalescing, lag from receipt to processing, the engine's
    time per batch, and tick-to-signal latency. The deques are written on the engine thread (timings)
    and the event loop (lag) and only read through :func:`percentiles`."""

    batches: int = 0
    coalesced: int = 0  # batches merged into another because the engine was behind
    queue_depth: int = 0
    queue_depth_max: int = 0
    lag_ns: collections.deque[int] = field(default_factory=_recent)
    engine_ns: collections.deque[int] = field(default_factory=_recent)  # ingest + close_due, per batch
    signal_ns: collections.deque[int] = field(default_factory=_recent)  # receipt -> signal, per batch

    def lag_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of receive-to-processing lag in milliseconds over the recent batches."""
        return percentiles(self.lag_ns, 1e6)

    def engine_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the engine's time per batch in microseconds; NaN before the first batch."""
        return percentiles(self.engine_ns, 1e3, math.nan)

    def signal_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of tick-to-signal latency in milliseconds (the oldest tick of a batch that fired
        to the signal); NaN until a live feed's batch fires one."""
        return percentiles(self.signal_ns, 1e6, math.nan)
