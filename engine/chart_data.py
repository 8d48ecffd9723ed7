"""What the detail pane draws for one symbol: its bars at a chosen timeframe, the chart's indicator series
over them, and the current value of every output the engine computes.

:func:`chart_data` runs on the thread that owns the engine (the runtime's ``call``), so the history ring,
the forming bar and the bank are read between two batches, never half-written; everything it returns is a
read-only copy, so the UI may keep it while the engine moves on.

Timeframes are whole multiples of the engine's bar interval: ``factor`` 5 on one-minute bars gives
five-minute bars on the five-minute grid (open of the first bar, highest high, lowest low, close of the
last, summed volume). The chart's series, and the values of every output at that timeframe, are computed
by the engine's own indicator code (an ``IndicatorBank`` of the chart's outputs and the engine's, fed the
resampled bars one at a time), over every bar available and not only the ones shown, so the first visible
values are already past their warm-up and equal what TA-Lib gives on the same bars. At the engine's own
interval the values are the engine's (what the watchlist shows, warmed over every bar it has seen).

The engine's ring holds ``CHART_BARS`` plus the chart's warm-up (``engine.backfill.sizing.ring_bars``),
so the chart at the engine's interval needs nothing else. A longer timeframe needs ``factor`` times as
many bars: the caller reads the older ones from the bar store (``engine.stored_bars``) and passes them
in; where there is no store, the chart shows what the ring makes and its ``note`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.snapshot import frozen
from engine.stored_bars import merge
from engine.ticks import NO_BAR

if TYPE_CHECKING:  # importing this module needs no numba: the bank is imported when series are computed
    from engine.stored_bars import OlderBars
    from engine.tick_engine import Engine

CHART_BARS = 500
"""Bars a chart keeps: more than any terminal is wide (one column per bar)."""

SERIES: tuple[str, ...] = (
    "sma_20", "ema_20", "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2", "rsi_14",
    "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
)
"""The outputs the chart draws: price overlays, the RSI panel and the MACD panel."""


@dataclass(frozen=True, eq=False)
class ChartData:
    """One symbol's bars at one timeframe, with the chart's series over them (all read-only copies)."""

    symbol: str
    timeframe_ns: int
    t: np.ndarray
    """Bar open times, ns since the epoch, oldest first."""
    ohlcv: np.ndarray
    """(n, 5): open, high, low, close, volume; the last row is the forming bar when ``forming``."""
    series: dict[str, np.ndarray]
    """Each name of :data:`SERIES`, one value per bar (NaN while warming up)."""
    values: dict[str, float]
    """The current value of every output the engine computes, at this timeframe (provisional while the
    last bar is forming); at the engine's own interval, the engine's values, as the watchlist shows them."""
    forming: bool
    """Whether the last bar's period is still open (its values may change)."""
    note: str = ""
    """Said beside the chart when it has fewer bars than it could show because older ones are not at
    hand (the ring is full and the store has none, or there is no store); "" otherwise."""

    def __len__(self) -> int:
        return len(self.t)


def resample(t: np.ndarray, ohlcv: np.ndarray, timeframe_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Bars (times ascending) merged into bars of ``timeframe_ns`` on that timeframe's grid.

    A bar goes to the period that holds its open time; periods without bars give no bar, as the engine
    makes none for intervals without ticks.
    """
    if not len(t):
        return t.copy(), ohlcv.copy()
    period = t - t % timeframe_ns
    starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
    ends = np.r_[starts[1:], len(t)] - 1
    out = np.empty((len(starts), 5), dtype=np.float64)
    out[:, 0] = ohlcv[starts, 0]
    out[:, 1] = np.maximum.reduceat(ohlcv[:, 1], starts)
    out[:, 2] = np.minimum.reduceat(ohlcv[:, 2], starts)
    out[:, 3] = ohlcv[ends, 3]
    out[:, 4] = np.add.reduceat(ohlcv[:, 4], starts)
    return period[starts], out


def compute_series(t: np.ndarray, ohlcv: np.ndarray, forming: bool,
                   outputs: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each of :data:`SERIES` after each bar, as the engine computes it (the last bar previewed when it is
    still forming, which gives the value it would have if it closed now), and the value of each of
    ``outputs`` after the last bar (provisional when it is forming), from the same pass."""
    from engine.indicators.bank import IndicatorBank  # loads the compiled kernels

    bank = IndicatorBank((*SERIES, *outputs), 1)
    rows = np.array([bank.row(name) for name in SERIES], dtype=np.int64)
    out = np.full((len(t), len(SERIES)), np.nan)
    closed = len(t) - 1 if forming else len(t)
    columns = ohlcv.T.tolist()
    for i, (ti, o, h, lo, c, v) in enumerate(zip(t.tolist(), *columns, strict=True)):
        if i < closed:
            bank.commit(0, ti, o, h, lo, c, v)
            out[i] = bank.committed[rows, 0]
        else:
            bank.preview(0, ti, o, h, lo, c, v)
            out[i] = bank.provisional[rows, 0]
    last = bank.provisional if closed < len(t) else bank.committed
    values = {name: float(last[bank.row(name), 0]) for name in outputs}
    return {name: frozen(np.ascontiguousarray(out[:, k])) for k, name in enumerate(SERIES)}, values


def chart_data(engine: Engine, symbol: str, factor: int, bars: int,
               older: OlderBars | None = None) -> ChartData | None:
    """The last ``bars`` bars of ``symbol`` at ``factor`` times the engine's interval, with the chart's
    series and every output's current value at that timeframe; None for an unknown symbol or one without
    bars yet. ``older``: bars read from the bar store, of which those older than the ring's are used.

    Call on the engine's thread (``await runtime.call(chart_data, engine, symbol, factor, bars)``).
    """
    if factor < 1:
        raise ValueError(f"timeframe factor must be at least 1, got {factor}")
    if bars < 1:
        raise ValueError(f"bars to keep must be at least 1, got {bars}")
    slot = engine.symbols.get(symbol)
    if slot is None:
        return None
    t, ohlcv = engine.history.tail(slot)  # copies
    ring_full = len(t) == engine.history.depth  # older bars have left it
    t, ohlcv, stored = merge(older, t, ohlcv)
    engine_forming = engine.forming_start[slot] != NO_BAR
    if engine_forming:
        t = np.append(t, engine.forming_start[slot])
        ohlcv = np.vstack([ohlcv, engine.forming[slot][None, :]])
    if not len(t):
        return None
    # A bar whose time is not after every earlier bar's cannot go on the grid in order: it is left out,
    # as the console's backtest leaves it out (the bar builder should never make one).
    before = np.r_[np.iinfo(np.int64).min, np.maximum.accumulate(t)[:-1]]
    keep = t > before
    t, ohlcv = t[keep], ohlcv[keep]
    timeframe = engine.interval_ns * factor
    rt, rbars = resample(t, ohlcv, timeframe)
    # The last period is open while the engine's bar is forming, or while its last interval has not
    # closed yet (on five-minute bars, a period whose fourth minute just closed is not complete).
    forming = bool(engine_forming or t[-1] + engine.interval_ns < rt[-1] + timeframe)
    # At the engine's interval its own values are the ones to show (warmed over more than the ring holds).
    series, values = compute_series(rt, rbars, forming, () if factor == 1 else engine.bank.names)
    if factor == 1:
        values = engine.bank.values(slot, provisional=engine_forming)
    keep_from = max(0, len(rt) - bars)
    note = ""
    if ring_full and len(rt) < bars:
        ring = engine.history.depth
        if stored:
            source = f"{stored:,} older from the bar store"
        elif older is None:
            source = "older bars not read"
        else:
            source = older.missing or "the bar store has no older bars"
        note = f"{len(rt):,} bars: {ring:,} in memory, {source}"
    return ChartData(
        symbol=symbol,
        timeframe_ns=timeframe,
        t=frozen(rt[keep_from:].copy()),
        ohlcv=frozen(np.ascontiguousarray(rbars[keep_from:])),
        series={name: frozen(s[keep_from:].copy()) for name, s in series.items()},
        values=values,
        forming=forming,
        note=note,
    )
