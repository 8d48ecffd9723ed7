"""Positions valued at the market, vectorised: once per snapshot for a whole watchlist, never per tick.

Two steps, so that the work per snapshot is a handful of numpy operations over the rows:

1. :func:`holdings` turns a :class:`~engine.positions.book.PositionBook` into float arrays aligned on the
   rows (the watchlist's symbols): quantity, cost basis, realized P&L. It converts each Decimal to the
   nearest double once, so call it when the book or the rows change (:attr:`PositionBook.version` says
   when) and keep the result; the ledger itself stays exact.
2. :func:`value` takes those arrays with the rows' last prices (``MarketSnapshot.market`` gathers them
   from a snapshot), previous-session closes
   (:func:`engine.positions.session.previous_closes`) and money decimals, and returns a
   :class:`Valuation`: per row quantity, average cost, cost, market value, unrealized P&L (money and
   %), day P&L, realized P&L, weight, and the :class:`Totals`.

Conventions (for the columns and the totals row built on this):

- ``value = quantity * last`` (negative for a short); ``unrealized = value - cost``;
  ``unrealized_pct = 100 * unrealized / |cost|``; ``day = quantity * (last - previous close)``, the
  session's move of what is held now (lots bought today count from the previous close too);
  ``weight = 100 * value / sum(|value|)`` over the priced rows of the list (gross, so longs and shorts
  never divide by a net that nears zero; a short's weight is negative).
- Money is shown at the instrument's own precision: each row's money figures are rounded half-to-even
  (from the double) to that row's ``decimals`` (pass the decimals the price column shows: the feed's tick
  size, else :func:`price_decimals`), fewer only for a figure beyond :data:`EXACT_UNITS` units (1e15
  at no decimals, 1e7 at eight), which a double cannot hold to the last digit; ``Valuation.decimals``
  are the ones used, so format each row with them. Weights are rounded to :data:`WEIGHT_DECIMALS`.
- **Totals are the sums of the rows as displayed**: the rounded rows are summed exactly, in integer
  units of the finest row's decimals (``Totals.decimals``), so the totals row always equals the sum of
  the figures above it. :meth:`Totals.exact` gives a total as an exact Decimal; the float prints as the
  same number while the total is below :data:`EXACT_UNITS` units; a larger one is formatted from ``exact``.
- A row with no position is NaN throughout; a position whose symbol has not traded yet (NaN last)
  has its quantity, cost and realized P&L but NaN value, unrealized and day P&L, and is left out of
  those totals (``Totals.unpriced`` counts it); a row with no previous close has a NaN day P&L and is
  counted in ``Totals.no_previous_close``. The UI shows NaN as a dash and may mark a partial total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from engine.positions.book import PositionBook

WEIGHT_DECIMALS = 1
MAX_MONEY_DECIMALS = 8
"""The most decimals a money figure shows (the console's widgets.formatting.MAX_DECIMALS)."""
EXACT_UNITS = 1e15
"""Below this many units of its last decimal, a double printed at those decimals shows the decimal
number it was rounded from (the spacing of doubles there is under a fifth of a unit)."""
SIGNIFICANT = 4
"""As widgets.formatting.SIGNIFICANT: a price with no known tick shows four significant digits."""


@dataclass(frozen=True)
class Holdings:
    """A book's positions as float arrays aligned on ``symbols`` (NaN where a row holds nothing)."""

    symbols: tuple[str, ...]
    version: int  # the book's version these were built from
    held: np.ndarray  # bool
    quantity: np.ndarray
    cost: np.ndarray
    realized: np.ndarray


def holdings(book: PositionBook, symbols: Sequence[str]) -> Holdings:
    """The arrays :func:`value` needs, for ``symbols`` in row order (per book change, not per snapshot)."""
    n = len(symbols)
    quantity, cost, realized = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    held = np.zeros(n, dtype=bool)
    for i, symbol in enumerate(symbols):
        position = book.get(symbol)
        if position is not None:
            held[i] = True
            quantity[i], cost[i], realized[i] = float(position.quantity), float(position.cost), \
                float(position.realized)
    for a in (held, quantity, cost, realized):
        a.flags.writeable = False
    return Holdings(tuple(symbols), book.version, held, quantity, cost, realized)


def price_decimals(last: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Decimals per row as the price column shows them: the feed's (``known`` >= 0, clipped to 0..8),
    else at least two and enough for four significant digits of ``last`` (widgets.formatting.decimals_for,
    vectorised; a test keeps the two equal)."""
    size = np.abs(np.asarray(last, dtype=np.float64))
    ok = np.isfinite(size) & (size > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = SIGNIFICANT - 1 - np.floor(np.log10(np.where(ok, size, 1.0)))
    derived = np.where(ok, np.clip(digits, 2, MAX_MONEY_DECIMALS), 2).astype(np.int64)
    if known is None:
        return derived
    known = np.asarray(known, dtype=np.int64)
    return np.where(known >= 0, np.clip(known, 0, MAX_MONEY_DECIMALS), derived)


@dataclass(frozen=True)
class Totals:
    """The totals row: each the exact sum of the rows' displayed figures, at ``decimals``."""

    decimals: int
    value: float
    cost: float
    unrealized: float
    unrealized_pct: float  # 100 * unrealized / sum(|cost|) of the priced rows
    day: float
    realized: float
    positions: int  # rows that hold a position (flat ones with realized P&L included)
    unpriced: int  # of those, rows with no last price: out of value, unrealized and day
    no_previous_close: int  # priced rows with no previous close: out of day
    units: dict[str, int]  # the exact sums in units of 10**-decimals

    def exact(self, name: str) -> Decimal:
        """Total ``name`` (value, cost, unrealized, day, realized) as an exact Decimal."""
        return Decimal(self.units[name]).scaleb(-self.decimals)


@dataclass(frozen=True)
class Valuation:
    """Per row figures (NaN where not applicable), rounded as displayed, and the totals."""

    symbols: tuple[str, ...]
    decimals: np.ndarray  # money decimals per row
    held: np.ndarray
    quantity: np.ndarray
    average_cost: np.ndarray  # not rounded: shown at the row's price decimals
    cost: np.ndarray
    value: np.ndarray
    unrealized: np.ndarray
    unrealized_pct: np.ndarray
    day: np.ndarray
    realized: np.ndarray
    weight: np.ndarray
    totals: Totals


def _representable(decimals: np.ndarray, raw: dict[str, np.ndarray]) -> np.ndarray:
    """``decimals``, fewer where a row's figure at them would reach :data:`EXACT_UNITS` units: a double
    holds no more digits, so the row could not be displayed as the sum counts it."""
    largest = np.zeros(len(decimals))
    for x in raw.values():
        largest = np.fmax(largest, np.abs(np.where(np.isfinite(x), x, 0.0)))
    with np.errstate(divide="ignore"):
        room = np.floor(np.log10(EXACT_UNITS / np.maximum(largest, 1.0))).astype(np.int64)
    return np.minimum(decimals, np.maximum(room, 0))


def _units(x: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    """``x`` rounded half-to-even to ``decimals`` per row, as integers of 10**-decimals (0 where NaN)."""
    return np.rint(np.where(np.isfinite(x), x, 0.0) * 10.0 ** decimals)


def _sum(units: np.ndarray, decimals: np.ndarray, finest: int) -> int:
    """The exact sum of rows ``units * 10**-decimals``, in units of 10**-finest (Python ints when int64
    could overflow: a rare path for sums beyond 9.2e18 units)."""
    scale = 10 ** (finest - decimals)
    if units.size and float(np.abs(units).max()) * float(scale.max()) * units.size < 2.0**62:
        return int((units.astype(np.int64) * scale).sum())
    return sum(int(u) * int(s) for u, s in zip(units.tolist(), scale.tolist(), strict=True))


def value(h: Holdings, last: np.ndarray, previous_close: np.ndarray, decimals: np.ndarray) -> Valuation:
    """Value ``h`` at ``last`` (per row), against ``previous_close``, money shown at ``decimals`` per row."""
    last = np.asarray(last, dtype=np.float64)
    prev = np.asarray(previous_close, dtype=np.float64)
    decimals = np.clip(np.asarray(decimals, dtype=np.int64), 0, MAX_MONEY_DECIMALS)
    n = len(h.symbols)
    if not (last.shape == prev.shape == decimals.shape == (n,)):
        raise ValueError(f"value: {n} rows, but arrays of shapes {last.shape}, {prev.shape}, "
                         f"{decimals.shape}")
    held, q = h.held, h.quantity
    priced = held & np.isfinite(last)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = {
            "cost": h.cost,
            "realized": h.realized,
            "value": np.where(priced, q * last, np.nan),
            "day": np.where(priced & np.isfinite(prev), q * (last - prev), np.nan),
        }
        raw["unrealized"] = raw["value"] - h.cost
        decimals = _representable(decimals, raw)
        units = {name: _units(x, decimals) for name, x in raw.items()}
        scale = 10.0 ** decimals
        shown = {name: np.where(np.isfinite(x), units[name] / scale, np.nan) for name, x in raw.items()}
        gross = np.abs(np.where(priced, shown["value"], 0.0)).sum()
        weight = np.where(priced, np.round(100.0 * shown["value"] / gross, WEIGHT_DECIMALS) if gross
                          else np.nan, np.nan)
        pct = np.where(priced & (h.cost != 0), 100.0 * shown["unrealized"] / np.abs(h.cost), np.nan)
        average = np.where(held & (q != 0), h.cost / q, np.nan)
    finest = int(decimals[held].max()) if held.any() else 2
    sums = {}
    for name in raw:
        rows = np.isfinite(raw[name])  # cost and realized: every held row; the others: the priced ones
        sums[name] = _sum(units[name][rows], decimals[rows], finest)
    cost_priced = np.abs(np.where(priced, h.cost, 0.0)).sum()
    unit = 10.0 ** finest  # sums / unit: the double nearest the exact decimal total

    totals = Totals(
        decimals=finest, value=sums["value"] / unit, cost=sums["cost"] / unit,
        unrealized=sums["unrealized"] / unit,
        unrealized_pct=100.0 * sums["unrealized"] / unit / cost_priced if cost_priced else float("nan"),
        day=sums["day"] / unit, realized=sums["realized"] / unit, positions=int(held.sum()),
        unpriced=int((held & ~priced).sum()), no_previous_close=int((priced & ~np.isfinite(prev)).sum()),
        units=sums)
    out = {name: _frozen(a) for name, a in shown.items()}
    return Valuation(h.symbols, _frozen(decimals), h.held, h.quantity, _frozen(average), out["cost"],
                     out["value"], out["unrealized"], _frozen(pct), out["day"], out["realized"],
                     _frozen(weight), totals)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a
