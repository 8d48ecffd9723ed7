"""The watchlist's cell and column types, shared by its layout (``widgets.watchlist_layout``) and the
position columns (``widgets.position_columns``), which the layout composes: one home for them keeps the
two modules from importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

Role = Literal["symbol", "value", "up", "down", "flat", "muted", "flash_up", "flash_down"]
Justify = Literal["left", "right"]
ROLES: tuple[Role, ...] = ("symbol", "value", "up", "down", "flat", "muted", "flash_up", "flash_down")


class Cell(NamedTuple):
    """What one cell shows: its text and the colour role it is drawn in."""

    text: str
    role: Role = "value"


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    justify: Justify = "right"
