"""The watchlist's position columns, as pure functions: which there are, their cells, their layout.

The figures come from one :class:`~engine.positions.valuation.Valuation` per frame (the console values
the active list once per snapshot, vectorised); :class:`PositionFrame` turns its arrays into Python lists
once, so a visible row's cells are list lookups. Money is drawn at the decimals the valuation rounded it
to (each instrument's own precision: a $5 stock's move of 0.004 shows as ``+0.004``, never ``+0.00``),
so the totals row, the exact sum of the rounded rows, adds up to what the rows show.

Engine types are imported for type checking only (this module is imported before numpy is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from widgets import formatting as fmt
from widgets.columns import Cell, ColumnSpec, Role

if TYPE_CHECKING:
    from rich.style import Style
    from rich.text import Text

    from engine.positions.valuation import Totals, Valuation

POSITION_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("quantity", "Qty", 9),
    ("avg_cost", "Avg", 9),
    ("value", "Value", 10),
    ("pnl", "P&L", 9),
    ("pnl_pct", "P&L%", 7),
    ("day_pnl", "Day", 9),
    ("weight", "Wt%", 6),
)
"""(key, header, width) of every position column, in table order; the keys are ``ui.columns`` names."""
POSITION_KEYS = frozenset(key for key, _, _ in POSITION_COLUMNS)
SIGNED = frozenset({"pnl", "pnl_pct", "day_pnl"})
"""Columns coloured by sign (green up, red down)."""


class Figures(NamedTuple):
    """One row's position figures as shown (NaN: not applicable); money at ``decimals``."""

    quantity: float
    avg_cost: float
    value: float
    pnl: float
    pnl_pct: float
    day_pnl: float
    weight: float
    realized: float
    decimals: int
    price_decimals: int


@dataclass(frozen=True)
class PositionFrame:
    """One frame's figures for the active list's rows (symbols as valued), read per visible row."""

    index: dict[str, int]
    columns: tuple[list[float], ...]  # Figures' float fields, in order, as lists
    decimals: list[int]
    price_decimals: list[int]
    held: list[bool]
    totals: Totals

    @classmethod
    def of(cls, v: Valuation, price_decimals: Sequence[int], index: dict[str, int] | None = None
           ) -> PositionFrame:
        """``index``: the rows' places by symbol, when the caller keeps it for these symbols."""
        arrays = (v.quantity, v.average_cost, v.value, v.unrealized, v.unrealized_pct, v.day, v.weight,
                  v.realized)
        index = index if index is not None else {s: i for i, s in enumerate(v.symbols)}
        return cls(index, tuple(a.tolist() for a in arrays),
                   v.decimals.tolist(), [int(d) for d in price_decimals], v.held.tolist(), v.totals)

    def get(self, symbol: str) -> Figures | None:
        """``symbol``'s figures, or None when it holds no position."""
        i = self.index.get(symbol)
        if i is None or not self.held[i]:
            return None
        q, avg, value, pnl, pct, day, weight, realized = (c[i] for c in self.columns)
        return Figures(q, avg, value, pnl, pct, day, weight, realized, self.decimals[i],
                       self.price_decimals[i])


def quantity_text(q: float, width: int) -> str:
    """A quantity as entered: no trailing zeros (``0.015``, ``-4``, ``1,200``)."""
    if q != q:
        return fmt.MISSING
    text = f"{q:,.8f}".rstrip("0").rstrip(".")
    return text if len(text) <= width else fmt.volume(q)


def money(value: float, decimals: int, width: int, *, signed: bool) -> str:
    """Money at ``decimals`` in ``width`` cells (signed: ``+12.30``/``-0.004``, zero unsigned)."""
    if signed:
        return fmt.change(value, 0.0, decimals, width)
    return fmt.price(value, decimals, width)


def position_cell(key: str, figures: Figures | None, width: int) -> tuple[str, str]:
    """(text, role) of position column ``key`` for a row holding ``figures`` (None: no position)."""
    if figures is None:
        return "", "muted"
    f = figures
    if key == "quantity":
        return quantity_text(f.quantity, width), "value"
    if key == "avg_cost":
        role = "value" if f.avg_cost == f.avg_cost else "muted"
        return fmt.price(f.avg_cost, f.price_decimals, width), role
    if key == "weight":
        return (fmt.MISSING, "muted") if f.weight != f.weight else (f"{f.weight:.1f}", "value")
    if key == "pnl_pct":
        value = f.pnl_pct if f.pnl != 0 else 0.0  # a P&L that rounds to zero shows 0.00%, uncoloured
        return fmt.percent(value), sign_role(value)
    value = {"value": f.value, "pnl": f.pnl, "day_pnl": f.day_pnl}[key]
    if value != value:
        return fmt.MISSING, "muted"
    return money(value, f.decimals, width, signed=key in SIGNED), sign_role(value) if key in SIGNED \
        else "value"


def sign_role(value: float) -> Role:
    if value != value:
        return "muted"
    return "up" if value > 0 else "down" if value < 0 else "flat"


def position_cells(key: str, figures: Figures | None, width: int) -> Cell:
    text, role = position_cell(key, figures, width)
    return Cell(text, role)  # type: ignore[arg-type]


def specs(keys: Sequence[str]) -> tuple[ColumnSpec, ...]:
    known = {key: (label, width) for key, label, width in POSITION_COLUMNS}
    return tuple(ColumnSpec(key, *known[key]) for key in keys if key in known)


def sort_value(key: str, figures: Figures | None) -> float | None:
    """What a row sorts by under position column ``key``; None (no position, no price) sorts last."""
    if figures is None:
        return None
    value = {"quantity": figures.quantity, "avg_cost": figures.avg_cost, "value": figures.value,
             "pnl": figures.pnl, "pnl_pct": figures.pnl_pct, "day_pnl": figures.day_pnl,
             "weight": figures.weight}[key]
    return None if value != value else float(value)


def totals_text(totals: Totals, width: int, styles: Mapping[str, Style | str] | None = None) -> Text:
    """The totals row: value, cost, unrealized (and %), day and realized P&L, coloured by sign (``styles``
    up, down, label), each the exact sum of the rows as shown (at the finest row's decimals); short
    labels below 100 cells."""
    from rich.text import Text

    style = {"up": "green", "down": "red", "label": "dim", **(styles or {})}
    d = totals.decimals
    wide = width >= 100
    names = ("Value", "Cost", "P&L", "Day", "Realized") if wide else ("Val", "Cost", "P&L", "Day", "Real")
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    out.append(f" Σ {totals.positions}" if wide else " Σ", style=style["label"])
    priced = totals.positions - totals.unpriced
    known = {names[0]: priced, names[2]: priced, names[3]: priced - totals.no_previous_close}
    parts = (
        (names[0], totals.value, False, ""),
        (names[1], totals.cost, False, ""),
        (names[2], totals.unrealized, True, f" {fmt.percent(totals.unrealized_pct)}" if wide else ""),
        (names[3], totals.day, True, ""),
        (names[4], totals.realized, True, ""),
    )
    for name, value, signed, extra in parts:
        if not known.get(name, 1):  # no row has the figure (no price, no previous close): not a zero
            value, extra = math.nan, ""
        out.append(f"  {name} ", style=style["label"])
        role = sign_role(value) if signed else "value"
        text = fmt.MISSING if value != value else money(value, d, 20, signed=signed)
        out.append(text + extra, style=style.get(role, ""))
    if totals.unpriced:
        out.append(f"  ({totals.unpriced} not priced)", style=style["label"])
    return out
