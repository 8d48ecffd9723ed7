"""Immutable snapshots of the market for the UI and for subscribers, and the frame types around them.

The runtime builds one snapshot per frame from the engine's arrays, in the thread that owns the engine,
and hands it over. Every array in a snapshot is a fresh copy marked read-only, so a widget can never
observe (or disturb) a ring buffer that the engine is still writing — the failure mode of graph widgets
that read a deque a worker thread mutates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.signals.events import Signal
from engine.ticks import NO_BAR

if TYPE_CHECKING:  # the frame types stay importable without numba (an attached console has none)
    from engine.pipeline import Engine


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Quote:
    """One symbol at one instant: last price, change over the visible history, indicator values."""

    symbol: str
    last: float
    change: float
    change_pct: float
    volume: float  # of the forming bar plus the closed bars in the sparkline window
    closes: np.ndarray  # recent closes, oldest first, the forming bar's close last (read-only)
    values: dict[str, float]  # requested indicator outputs, provisional where a bar is forming
    bar_time: int  # open time of the forming (or last closed) bar, ns


@dataclass(frozen=True)
class MarketSnapshot:
    at_ns: int
    quotes: tuple[Quote, ...]
    ticks: int
    bars: int

    def by_symbol(self) -> dict[str, Quote]:
        return {q.symbol: q for q in self.quotes}


def build_snapshot(engine: Engine, symbols: Sequence[str], outputs: Sequence[str], spark: int,
                   at_ns: int) -> MarketSnapshot:
    """Copy what the UI shows for ``symbols`` out of the engine (call from the engine's thread)."""
    rows = {name: engine.bank.row(name) for name in outputs}
    quotes = []
    for name in symbols:
        slot = engine.symbols.get(name)
        if slot is None:
            continue
        t, bars = engine.history.tail(slot, spark)
        closes = bars[:, 3]
        volume = float(bars[:, 4].sum())
        forming = engine.forming_start[slot] != NO_BAR
        src = engine.bank.provisional if forming else engine.bank.committed
        if forming:
            closes = np.append(closes, engine.forming[slot, 3])
            volume += float(engine.forming[slot, 4])
            bar_time = int(engine.forming_start[slot])
        else:
            bar_time = int(t[-1]) if len(t) else 0
        if not len(closes):
            continue
        last = float(closes[-1])
        first = float(bars[0, 0]) if len(bars) else float(engine.forming[slot, 0])
        change = last - first
        quotes.append(Quote(
            symbol=name, last=last, change=change, change_pct=100.0 * change / first if first else 0.0,
            volume=volume, closes=_frozen(np.array(closes, dtype=np.float64)),
            values={n: float(src[r, slot]) for n, r in rows.items()}, bar_time=bar_time,
        ))
    stats = engine.stats
    return MarketSnapshot(at_ns=at_ns, quotes=tuple(quotes), ticks=stats.ticks, bars=stats.bars)


@dataclass(frozen=True)
class PipelineHealth:
    """How the feed and the pipeline are coping, as of one frame (copied, so a UI may keep it)."""

    lag_p50_ms: float = 0.0  # receive -> processed, over the recent batches
    lag_p99_ms: float = 0.0
    queue_depth: int = 0
    queue_depth_max: int = 0
    coalesced: int = 0  # batches merged because the engine was behind
    bad_messages: int = 0
    reconnects: int = 0
    gaps: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class Update:
    """What one processed batch produced: new signals, and a snapshot (with health) when a frame is due."""

    signals: tuple[Signal, ...]
    snapshot: MarketSnapshot | None
    health: PipelineHealth | None = None
