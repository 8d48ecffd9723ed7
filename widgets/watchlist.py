"""The watchlist: one row per symbol with its price, change, volume, sparkline, indicators and signal.

State and drawing are apart. The widget's state is its reactives (the rows, the indicator columns, the
latest snapshot, the latest signal per symbol); what a row shows is decided by the pure function
:func:`row_cells`, which returns plain text and a colour *role* per cell. The widget turns roles into
styles from its component classes (themed with ``$text-success`` and friends) and writes only the cells
that changed into a Textual ``DataTable``, in place: a frame never clears and rebuilds the table. The
table is rebuilt only when its shape changes (other rows or columns, or a new sparkline width on resize).

Engine types are imported for type checking only, so importing this module stays light (no numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Static

from widgets import formatting as fmt
from widgets.sparkline import spark

if TYPE_CHECKING:
    from engine.signals.events import Signal
    from engine.snapshot import MarketSnapshot, Quote

Role = Literal["symbol", "value", "up", "down", "flat", "muted"]
Justify = Literal["left", "right"]
ROLES: tuple[Role, ...] = ("symbol", "value", "up", "down", "flat", "muted")

ARROWS = {"up": "▲", "down": "▼"}
SPARK_MIN, SPARK_MAX = 6, 60
GAP = 1
"""Blank cells before every column (the table has no cell padding of its own, to fit 80 columns)."""
SCROLLBAR = 1
"""Width reserved for the table's vertical scrollbar."""
DEFAULT_WIDTH = 80
"""Width assumed for the layout before the widget has a size."""


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


SIGNAL_MIN, SIGNAL_MAX = 10, 16
GROWTH: tuple[tuple[str, int], ...] = (
    ("signal", 12), ("spark", 8), ("signal", SIGNAL_MAX), ("spark", SPARK_MAX),
)
"""How spare width is shared: each step grows a column up to a width, in this order. Twelve cells keep
``▲ rsi_overs…`` and ``▼ rsi_overb…`` apart; then the sparkline, then whole rule names."""


def fixed_columns(indicators: Sequence[str], symbol_width: int,
                  signal_width: int = SIGNAL_MIN) -> tuple[ColumnSpec, ...]:
    """Every column but the sparkline, in table order (the sparkline goes before the indicators)."""
    head = (
        ColumnSpec("symbol", "Symbol", max(6, symbol_width), "left"),
        ColumnSpec("last", "Last", 9),
        ColumnSpec("change", "Chg", 7),
        ColumnSpec("change_pct", "Chg%", 7),
        ColumnSpec("volume", "Vol", 6),
    )
    labels = [fmt.column_label(name) for name in indicators]
    middle = tuple(ColumnSpec(name, label, max(6, len(label)))
                   for name, label in zip(indicators, labels, strict=True))
    return (*head, *middle, ColumnSpec("signal", "Signal", signal_width, "left"))


def layout(width: int, indicators: Sequence[str], symbol_width: int) -> tuple[ColumnSpec, ...]:
    """The table's columns for a widget ``width`` cells wide.

    Every column has a fixed width but two, the sparkline (``Trend``) and the signal, which share what
    is left as :data:`GROWTH` says. When even their minimums do not fit, the table scrolls sideways.
    """
    fixed = fixed_columns(indicators, symbol_width)
    spare = width - sum(c.width + GAP for c in fixed) - (SPARK_MIN + GAP) - SCROLLBAR
    widths = {"signal": SIGNAL_MIN, "spark": SPARK_MIN}
    for key, limit in GROWTH:
        grow = max(0, min(spare, limit - widths[key]))
        widths[key] += grow
        spare -= grow
    specs = fixed_columns(indicators, symbol_width, widths["signal"])
    trend = ColumnSpec("spark", "Trend", widths["spark"], "left")
    return (*specs[:5], trend, *specs[5:])


def direction(value: float) -> Role:
    """The role of a signed quantity: ``up``, ``down``, ``flat``, or ``muted`` when it is NaN."""
    if value != value:
        return "muted"
    return "up" if value > 0 else "down" if value < 0 else "flat"


def signal_cell(signal: Signal | None, width: int) -> Cell:
    """``▲ rule`` in the signal's direction, cut to ``width``."""
    if signal is None:
        return Cell("", "muted")
    return Cell(fmt.fit(f"{ARROWS[signal.direction]} {signal.rule}", width), signal.direction)


def aligned(text: str, spec: ColumnSpec, style: Style | str = "") -> Text:
    """``text`` placed in its column: the gap first, then the text justified in ``spec.width``."""
    body = text.ljust(spec.width) if spec.justify == "left" else text.rjust(spec.width)
    return Text(" " * GAP + body, style=style, no_wrap=True, overflow="crop", end="")


def row_cells(symbol: str, quote: Quote | None, signal: Signal | None,
              specs: Sequence[ColumnSpec]) -> tuple[Cell, ...]:
    """What the row of ``symbol`` shows under ``specs``; ``quote`` is None until the symbol trades."""
    cells: list[Cell] = []
    for spec in specs:
        key = spec.key
        if key == "symbol":
            cells.append(Cell(symbol, "symbol"))
        elif key == "signal":
            cells.append(signal_cell(signal, spec.width))
        elif quote is None:
            cells.append(Cell(fmt.MISSING if key != "spark" else "", "muted"))
        elif key == "last":
            cells.append(Cell(fmt.price(quote.last), "value"))
        elif key == "change":
            cells.append(Cell(fmt.change(quote.change, quote.last), direction(quote.change)))
        elif key == "change_pct":
            cells.append(Cell(fmt.percent(quote.change_pct), direction(quote.change)))
        elif key == "volume":
            cells.append(Cell(fmt.volume(quote.volume), "value"))
        elif key == "spark":
            cells.append(Cell(spark(quote.closes, spec.width), direction(quote.change)))
        else:
            value = quote.values.get(key, float("nan"))
            cells.append(Cell(fmt.indicator(value), "value" if value == value else "muted"))
    return tuple(cells)


class Watchlist(Widget):
    """Symbols and their latest quotes, drawn from one snapshot per frame."""

    COMPONENT_CLASSES = {f"watchlist--{role}" for role in ROLES}

    DEFAULT_CSS = """
    Watchlist {
        height: 1fr;
    }
    Watchlist > DataTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
        background: $surface;
    }
    Watchlist > #watchlist-message {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    Watchlist > .watchlist--symbol { color: $text; text-style: bold; }
    Watchlist > .watchlist--value { color: $text; }
    Watchlist > .watchlist--up { color: $text-success; }
    Watchlist > .watchlist--down { color: $text-error; }
    Watchlist > .watchlist--flat { color: $text-muted; }
    Watchlist > .watchlist--muted { color: $text-muted; }
    """

    symbols: reactive[tuple[str, ...]] = reactive(())
    """The rows, in order (for now, the feed's universe)."""
    indicators: reactive[tuple[str, ...]] = reactive(())
    """Indicator outputs shown as columns, by catalogue name (``rsi_14``)."""
    snapshot: reactive[MarketSnapshot | None] = reactive(None, always_update=True)
    """The latest market snapshot drawn; None until the first one arrives."""
    signals: reactive[Mapping[str, Signal]] = reactive(dict, always_update=True)
    """The latest signal per symbol (assign a new mapping; it is not watched for mutation)."""
    message: reactive[str] = reactive("starting engine…")
    """Shown in place of the table until the first snapshot (progress, or what went wrong)."""

    def __init__(self, *, indicators: Sequence[str] = (), name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._specs: tuple[ColumnSpec, ...] = ()
        self._drawn: dict[tuple[str, str], Cell] = {}
        self._rows: frozenset[str] = frozenset()
        self._palette: dict[Role, Style] = {}
        self.set_reactive(Watchlist.indicators, tuple(indicators))
        self._make_children()

    def compose(self) -> ComposeResult:
        yield self._message
        yield self.table

    def _make_children(self) -> None:
        # Held, not queried: snapshots may still arrive while the app tears the children down.
        self._message = Static(self.message, id="watchlist-message", markup=False)
        self.table: DataTable[Text] = DataTable(cursor_type="row", cell_padding=0, zebra_stripes=True,
                                                id="watchlist-table")
        self.table.display = False

    # --- state -> table ----------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._palette = self._read_palette()
        self._rebuild()

    def on_resize(self, event: events.Resize) -> None:
        if self._layout(event.size.width) != self._specs:
            self._rebuild()

    def watch_symbols(self) -> None:
        self._rebuild()

    def watch_indicators(self) -> None:
        self._rebuild()

    def watch_message(self, message: str) -> None:
        if self.is_mounted and self.is_attached:
            self._message.update(message)

    def watch_snapshot(self, snapshot: MarketSnapshot | None) -> None:
        if not (self.is_mounted and self.is_attached):
            return
        table = self.table
        self._message.display = snapshot is None
        if snapshot is None:
            table.display = False
            return
        if not table.display:
            table.display = True
            if self.screen.focused is None:
                table.focus()
        signals = self.signals
        for quote in snapshot.quotes:
            if quote.symbol in self._rows:
                self._draw_row(quote.symbol, quote, signals.get(quote.symbol))

    def watch_signals(self, signals: Mapping[str, Signal]) -> None:
        spec = next((s for s in self._specs if s.key == "signal"), None)
        if spec is None or not (self.is_mounted and self.is_attached):  # early or during shutdown
            return
        for symbol in self.symbols:
            self._draw_cell(symbol, spec, signal_cell(signals.get(symbol), spec.width))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted and self.is_attached:
            self.call_later(self._restyle)

    # --- drawing -------------------------------------------------------------------------------------
    def _layout(self, width: int) -> tuple[ColumnSpec, ...]:
        return layout(width or DEFAULT_WIDTH, self.indicators, self._symbol_width())

    def _symbol_width(self) -> int:
        return max((len(s) for s in self.symbols), default=6)

    def _quotes(self) -> dict[str, Quote]:
        return self.snapshot.by_symbol() if self.snapshot is not None else {}

    def _read_palette(self) -> dict[Role, Style]:
        return {role: self.get_component_rich_style(f"watchlist--{role}", partial=True) for role in ROLES}

    def _restyle(self) -> None:
        """Redraw every cell when the theme changed the role colours."""
        palette = self._read_palette()
        if palette != self._palette:
            self._palette = palette
            self._redraw_all()

    def _styled(self, cell: Cell, spec: ColumnSpec) -> Text:
        return aligned(cell.text, spec, self._palette.get(cell.role, Style.null()))

    def _rebuild(self) -> None:
        """Lay the table out again for new rows, columns or widths (never once per frame)."""
        if not (self.is_mounted and self.is_attached):
            return
        table = self.table
        row = table.cursor_row
        table.clear(columns=True)
        self._drawn.clear()
        self._rows = frozenset(self.symbols)
        self._specs = self._layout(self.size.width)
        for spec in self._specs:
            table.add_column(aligned(spec.label, spec), width=spec.width + GAP, key=spec.key)
        quotes, signals = self._quotes(), self.signals
        for symbol in self.symbols:
            cells = row_cells(symbol, quotes.get(symbol), signals.get(symbol), self._specs)
            for spec, cell in zip(self._specs, cells, strict=True):
                self._drawn[symbol, spec.key] = cell
            table.add_row(*(self._styled(c, s) for c, s in zip(cells, self._specs, strict=True)), key=symbol)
        if self.symbols:
            table.move_cursor(row=min(row, len(self.symbols) - 1), animate=False)

    def _redraw_all(self) -> None:
        self._drawn.clear()
        quotes, signals = self._quotes(), self.signals
        for symbol in self.symbols:
            self._draw_row(symbol, quotes.get(symbol), signals.get(symbol))

    def _draw_row(self, symbol: str, quote: Quote | None, signal: Signal | None) -> None:
        for spec, cell in zip(self._specs, row_cells(symbol, quote, signal, self._specs), strict=True):
            self._draw_cell(symbol, spec, cell)

    def _draw_cell(self, symbol: str, spec: ColumnSpec, cell: Cell) -> None:
        """Write one cell into the table, unless it already shows exactly that."""
        key = (symbol, spec.key)
        if self._drawn.get(key) == cell:
            return
        self._drawn[key] = cell
        self.table.update_cell(symbol, spec.key, self._styled(cell, spec))
