"""The total P&L over the stored history: the positions valued at the stored bars' closes, vectorised.

The portfolio pane's session line samples the total P&L once a second while the console runs; this line
reaches back as far as the bars do (the bar store's, then the ring's: ``Runtime.closed_bars``), at most
:data:`HISTORY_BARS` bars a symbol and :data:`TOTAL_BARS` in all (:func:`bars_per_symbol`), sampled at
:data:`POINTS` times evenly spread from the oldest bar of any held symbol to the newest. Memory is bounded
by those: the times and closes kept while the symbols are read (16 bytes a bar: 32 MB at most), then
``positions x POINTS`` floats.

What is valued at each sample time ``t`` (a choice; the ledger cannot give more):

- **Today's holdings throughout.** Each position's *current* quantity and cost basis, at the last close
  at or before ``t``: ``quantity * close - cost``. The book keeps lots with a day at most and realized P&L
  without a time, so replaying partial closes through the past would invent times; the line shows what
  is held now made over the stored history, which is the question the pane answers.
- **Positions entered later count from their entry**: from the UTC midnight of the earliest dated lot of
  the position (lots are dated by day); before it the position adds nothing, so a position bought
  yesterday does not draw last week's move as if it had been held. A position whose lots carry no date
  counts from its first stored bar (its entry is not known; the history is all there is to show).
- A position adds nothing before its first bar (no price to value it at).
- **Realized P&L is added throughout**, as one constant, so the line ends where the pane's total
  (unrealized plus realized) stands and moves only with what is held.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.positions.book import PositionBook
from engine.positions.valuation import Holdings

HISTORY_BARS = 10_000
"""Bars read per held symbol at most (a week of one-minute bars; 400 days of daily ones)."""
TOTAL_BARS = 2_000_000
"""Bars read for all held symbols together at most: a large book reaches back less far."""
POINTS = 240
"""Sample times across the span: wider than the pane's sparkline ever is."""
REFRESH_S = 60.0
"""How often the console reads the stored history again while the pane shows (new bars close)."""
NS = 1_000_000_000


@dataclass(frozen=True, eq=False)
class StoredPnl:
    """The total P&L at ``t`` (ns, ascending, evenly spread), oldest first."""

    t: np.ndarray
    pnl: np.ndarray
    symbols: int  # positions valued (those with at least one bar)

    @property
    def span_ns(self) -> int:
        return int(self.t[-1] - self.t[0]) if len(self.t) > 1 else 0


def bars_per_symbol(held: int) -> int:
    """Bars to read per symbol for ``held`` symbols: :data:`HISTORY_BARS`, fewer when that many symbols
    would pass :data:`TOTAL_BARS` (1,000 symbols: 2,000 bars each, 33 hours of one-minute bars)."""
    return max(1, min(HISTORY_BARS, TOTAL_BARS // max(1, held)))


def entries(book: PositionBook, symbols: tuple[str, ...]) -> np.ndarray:
    """Per symbol, when its position counts from (ns): the UTC midnight of its earliest dated lot, or the
    int64 minimum (from its first bar) when no lot is dated."""
    out = np.full(len(symbols), np.iinfo(np.int64).min, dtype=np.int64)
    for i, symbol in enumerate(symbols):
        position = book.get(symbol)
        dates = [lot.date for lot in position.lots if lot.date is not None] if position is not None else []
        if dates:
            day = dt.datetime.combine(min(dates), dt.time(), tzinfo=dt.UTC)
            out[i] = int(day.timestamp()) * NS
    return out


def pnl_series(h: Holdings, bars: Mapping[str, tuple[np.ndarray, np.ndarray]], entry_ns: np.ndarray,
               points: int = POINTS) -> StoredPnl | None:
    """The total P&L of ``h``'s held rows at ``points`` times over ``bars`` (per symbol: open times
    ascending, closes); ``entry_ns`` per row of ``h`` (:func:`entries`). None without two bars to span."""
    rows = [i for i, s in enumerate(h.symbols) if h.held[i] and s in bars and len(bars[s][0])]
    if not rows:
        return None
    first = min(int(bars[h.symbols[i]][0][0]) for i in rows)
    last = max(int(bars[h.symbols[i]][0][-1]) for i in rows)
    if last <= first:
        return None
    # offsets in float (a nanosecond time is beyond a double's exact integers), the ends exact: the last
    # sample is the newest bar itself
    grid = first + (np.linspace(0.0, 1.0, max(2, points)) * (last - first)).astype(np.int64)
    grid[0], grid[-1] = first, last
    prices = np.full((len(rows), len(grid)), np.nan)
    for k, i in enumerate(rows):
        t, closes = bars[h.symbols[i]]
        at = np.searchsorted(t, grid, side="right") - 1  # the last close at or before each sample time
        prices[k] = np.where(at >= 0, np.asarray(closes, dtype=np.float64)[np.maximum(at, 0)], np.nan)
    ix = np.asarray(rows)
    quantity, cost = h.quantity[ix, None], h.cost[ix, None]
    counts = (grid[None, :] >= entry_ns[ix, None]) & np.isfinite(prices)
    pnl = np.where(counts, quantity * prices - cost, 0.0).sum(axis=0)
    realized = float(np.nansum(h.realized[h.held]))
    return StoredPnl(grid, pnl + realized, len(rows))


def span_text(span_ns: int) -> str:
    """How long the stored line reaches back, for its label: ``6 d``, ``5 h``, ``40 min``."""
    seconds = span_ns / NS
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.0f} d"
    if seconds >= 2 * 3_600:
        return f"{seconds / 3_600:.0f} h"
    return f"{max(1.0, seconds / 60):.0f} min"
