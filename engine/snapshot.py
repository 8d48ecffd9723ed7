"""Immutable snapshots of the market for the UI and for subscribers, and the frame types around them.

The runtime builds one snapshot per frame from the engine's arrays, in the thread that owns the engine,
and hands it over. Every array in a snapshot is a fresh copy marked read-only, so a widget can never
observe (or disturb) a ring buffer that the engine is still writing — the failure mode of graph widgets
that read a deque a worker thread mutates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.signals.events import Signal
from engine.ticks import NO_BAR

if TYPE_CHECKING:  # the frame types stay importable without numba (an attached console has none)
    from engine.positions.session import SessionCloses
    from engine.tick_engine import Engine


def frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only (a copy handed to the UI must not be written through by anyone)."""
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
    decimals: int | None = None  # decimals of the instrument's tick size, when the feed knows it
    previous_close: float = math.nan  # the last price before the current session (day P&L); NaN: unknown


@dataclass(frozen=True)
class Prices:
    """The quotes' last prices, feed decimals (-1: unknown) and previous closes (NaN: unknown) as arrays
    in the order of ``MarketSnapshot.quotes`` (read-only): what valuing positions reads every frame."""

    last: np.ndarray
    decimals: np.ndarray
    previous_close: np.ndarray


@dataclass(frozen=True)
class MarketSnapshot:
    at_ns: int
    quotes: tuple[Quote, ...]
    ticks: int
    bars: int
    prices: Prices | None = field(default=None, compare=False, repr=False)
    """The quotes' prices as arrays (``build_snapshot`` fills it; None: worked out from the quotes)."""

    def by_symbol(self) -> dict[str, Quote]:
        """The quotes by symbol (built once per snapshot: the watchlist and the valuation both ask)."""
        table = self.__dict__.get("_by_symbol")
        if table is None:
            table = {q.symbol: q for q in self.quotes}
            object.__setattr__(self, "_by_symbol", table)  # a cache, not state: frozen for everyone else
        return table

    def market(self, symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``symbols``' last prices (NaN: no quote), feed decimals (-1: unknown) and previous closes (NaN)
        as fresh arrays in that order, for ``engine.positions.valuation.value``: gathered from
        :attr:`prices` in three numpy takes rather than a Python loop over the quotes."""
        prices = self.prices if self.prices is not None else _prices(self.quotes)
        where = self.__dict__.get("_where")
        if where is None:
            where = {q.symbol: i for i, q in enumerate(self.quotes)}
            object.__setattr__(self, "_where", where)
        n = len(symbols)
        if not self.quotes:  # nothing to take from
            return np.full(n, np.nan), np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
        at = np.fromiter((where.get(s, -1) for s in symbols), dtype=np.int64, count=n)
        missing = at < 0
        at[missing] = 0
        last = np.where(missing, np.nan, prices.last[at])
        known = np.where(missing, -1, prices.decimals[at])
        previous = np.where(missing, np.nan, prices.previous_close[at])
        return last, known, previous


def _prices(quotes: Sequence[Quote]) -> Prices:
    """:class:`Prices` read from ``quotes`` (a snapshot decoded from a broadcast frame has no arrays)."""
    return Prices(
        frozen(np.array([q.last for q in quotes], dtype=np.float64)),
        frozen(np.array([-1 if q.decimals is None else q.decimals for q in quotes], dtype=np.int64)),
        frozen(np.array([q.previous_close for q in quotes], dtype=np.float64)))


def build_snapshot(engine: Engine, symbols: Sequence[str], outputs: Sequence[str], spark: int,
                   at_ns: int, decimals: Mapping[str, int] | None = None,
                   sessions: SessionCloses | None = None) -> MarketSnapshot:
    """Copy what the UI shows for ``symbols`` out of the engine (call from the engine's thread);
    ``decimals`` are the feed's tick-size decimals per symbol (``Feed.decimals``), for those it knows;
    ``sessions`` gives each quote its previous session's close (at ``at_ns``, the feed's clock).

    Vectorised over the symbols (one gather from the history ring for all of them), because it runs
    once per frame for up to thousands of symbols on the thread that also applies the ticks: a loop
    per symbol cost ~23 ms a frame at 1,000 symbols, this ~3 ms. Only the ``Quote`` objects are built
    one by one; their ``closes`` are read-only views of one copied block.
    """
    named = [(name, slot) for name in symbols if (slot := engine.symbols.get(name)) is not None]
    stats = engine.stats
    if not named:
        return MarketSnapshot(at_ns=at_ns, quotes=(), ticks=stats.ticks, bars=stats.bars)
    slots = np.fromiter((slot for _, slot in named), dtype=np.int64, count=len(named))
    history = engine.history
    n = np.minimum(history.count[slots], spark)  # closed bars shown per symbol
    j = np.arange(spark)
    pos = history.head[slots, None] - spark + j
    pos += np.where(pos < 0, history.depth, 0)  # cheaper than % on the whole block
    rows_ix = slots[:, None]
    closed = j >= (spark - n)[:, None]  # which of the spark positions hold a bar of this symbol
    forming = engine.forming_start[slots] != NO_BAR
    # closes: the closed bars, then the forming bar's close, right-aligned in spark + 1 columns
    closes = np.full((len(slots), spark + 1), np.nan)
    closes[:, :spark] = np.where(closed, history.bars[rows_ix, pos, 3], np.nan)
    closes[:, spark] = np.where(forming, engine.forming[slots, 3], np.nan)
    frozen(closes)
    volume = np.where(closed, history.bars[rows_ix, pos, 4], 0.0).sum(axis=1)
    volume += np.where(forming, engine.forming[slots, 4], 0.0)
    first_pos = pos[np.arange(len(slots)), np.minimum(spark - n, spark - 1)]
    first = np.where(n > 0, history.bars[slots, first_pos, 0], engine.forming[slots, 0])
    last_t = history.t[slots, (history.head[slots] - 1) % history.depth]
    bar_time = np.where(forming, engine.forming_start[slots], np.where(n > 0, last_t, 0))
    rows = [engine.bank.row(name) for name in outputs]
    bank = engine.bank
    values = np.where(forming, bank.provisional[rows][:, slots], bank.committed[rows][:, slots]).T
    previous = (sessions.closes(history, slots, [name for name, _ in named], at_ns).tolist()
                if sessions is not None else None)
    quotes = []
    kept: list[int] = []
    decimals = decimals or {}
    for i, (name, _) in enumerate(named):
        start = spark - int(n[i])
        stop = spark + 1 if forming[i] else spark
        if stop <= start:  # never traded: nothing to show yet
            continue
        kept.append(i)
        line = closes[i, start:stop]
        last, ref = float(line[-1]), float(first[i])
        change = last - ref
        quotes.append(Quote(
            symbol=name, last=last, change=change, change_pct=100.0 * change / ref if ref else 0.0,
            volume=float(volume[i]), closes=line, values=dict(zip(outputs, values[i].tolist(), strict=True)),
            bar_time=int(bar_time[i]), decimals=decimals.get(name),
            previous_close=previous[i] if previous is not None else math.nan,
        ))
    traded = np.asarray(kept, dtype=np.int64)
    known = np.fromiter((decimals.get(name, -1) for name, _ in named), dtype=np.int64, count=len(named))
    prices = Prices(
        last=frozen(np.where(forming, closes[:, spark], closes[:, spark - 1])[traded]),
        decimals=frozen(known[traded]),
        previous_close=frozen(np.asarray(previous, dtype=np.float64)[traded] if previous is not None
                              else np.full(len(traded), np.nan)))
    return MarketSnapshot(at_ns=at_ns, quotes=tuple(quotes), ticks=stats.ticks, bars=stats.bars,
                          prices=prices)


@dataclass(frozen=True)
class PipelineHealth:
    """How the feed and the pipeline are coping, as of one frame (copied, so a UI may keep it).

    Every field has a default, so a frame from an older publisher (fewer fields) still decodes; the
    timings added later default to NaN, "not measured", rather than a reassuring zero.
    """

    lag_p50_ms: float = 0.0  # receive -> processed, over the recent batches
    lag_p99_ms: float = 0.0
    queue_depth: int = 0
    queue_depth_max: int = 0
    coalesced: int = 0  # batches merged because the engine was behind
    bad_messages: int = 0
    reconnects: int = 0
    gaps: int = 0
    duplicates: int = 0
    feed: str = ""  # the feed these counts are of
    batches: int = 0  # batches taken from the queue (coalesced ones included)
    ticks_in: int = 0  # delivered by the feed (counted before the queue)
    ticks_processed: int = 0  # applied by the engine; ticks_in - ticks_processed are still queued
    engine_p50_us: float = math.nan  # the engine's time per batch (bars, indicators, signals)
    engine_p99_us: float = math.nan
    signal_p50_ms: float = math.nan  # oldest tick of a batch -> the signal it fired (live feeds only)
    signal_p99_ms: float = math.nan
    refills: int = 0  # symbols re-run with trades the feed missed and fetched again (gaps, reconnects)
    history_done: int = 0  # symbols whose history has loaded (or was given up on) ...
    history_total: int = 0  # ... of those that load history (live feeds)


@dataclass(frozen=True)
class Update:
    """What one processed batch produced: new signals, and a snapshot (with health) when a frame is due.

    ``new_symbols``: symbols the runtime started carrying that its ``watch`` did not hold when ``run``
    began (a fleet console's engines that started later), announced when they first appear; the console
    lists them. Empty in every other update: a notification of growth, never one per tick."""

    signals: tuple[Signal, ...]
    snapshot: MarketSnapshot | None
    health: PipelineHealth | None = None
    new_symbols: tuple[str, ...] = ()
