"""What the watchlist shows, as pure functions: its columns for a width, the cells of a row, the order.

:func:`row_cells` returns plain text and a colour *role* per cell; the widget (``widgets.watchlist``)
turns roles into styles from its theme and only draws rows that are on screen and changed. Keeping this
apart makes every decision about content testable without an app.

Engine types are imported for type checking only, so importing this module stays light (no numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text

from widgets import formatting as fmt
from widgets import position_columns as pc
from widgets.columns import Cell, ColumnSpec, Role
from widgets.sparkline import spark

if TYPE_CHECKING:
    from engine.signals.events import Signal
    from engine.snapshot import Quote
    from widgets.position_columns import Figures, PositionFrame

ARROWS = {"up": "▲", "down": "▼"}
SPARK_MIN, SPARK_MAX = 6, 60
GAP = 1
"""Blank cells before every column (the table has no cell padding of its own, to fit 80 columns)."""
SCROLLBAR = 1
"""Width reserved for the vertical scrollbar."""
DEFAULT_WIDTH = 80
"""Width assumed for the layout before the widget has a size."""


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
        ColumnSpec("change", "Chg", 8),  # a five-decimal change, -0.00005
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


def positions_layout(width: int, positions: Sequence[str], symbol_width: int) -> tuple[ColumnSpec, ...]:
    """The columns while the position columns are on: symbol, last, change %, then the position columns
    ``positions`` in their order as far as they fit (the rest left out, never a cut number), then the
    sparkline and the signal in what is left, each only if its minimum fits."""
    head = fixed_columns((), symbol_width)
    out = [head[0], head[1], head[3]]
    spare = width - SCROLLBAR - sum(c.width + GAP for c in out)
    for spec in pc.specs(positions):
        if spec.width + GAP > spare:
            break
        out.append(spec)
        spare -= spec.width + GAP
    if spare >= SIGNAL_MIN + GAP:
        signal = min(SIGNAL_MAX, spare - GAP - (SPARK_MIN + GAP if spare >= SIGNAL_MIN + SPARK_MIN + 2 * GAP
                                                 else 0))
        if spare - signal - GAP >= SPARK_MIN + GAP:
            out.append(ColumnSpec("spark", "Trend", min(SPARK_MAX, spare - signal - 2 * GAP), "left"))
        out.append(ColumnSpec("signal", "Signal", signal, "left"))
    return tuple(out)


def direction(value: float) -> Role:
    """The role of a signed quantity: ``up``, ``down``, ``flat``, or ``muted`` when it is NaN."""
    if value != value:
        return "muted"
    return "up" if value > 0 else "down" if value < 0 else "flat"


def quote_change(quote: Quote) -> float:
    """The quote's change as the row shows it: zero when it rounds to zero at the instrument's
    precision, so the change, its percentage and their colour agree (no ``-0.00``, no red zero)."""
    return fmt.moved(quote.change, quote.last, quote.decimals)


def signal_cell(signal: Signal | None, width: int) -> Cell:
    """``▲ rule`` in the signal's direction, cut to ``width``; a warm-up signal (fired on history) is
    muted, as in the signal log, so a row never presents a past bar's signal as news."""
    if signal is None:
        return Cell("", "muted")
    text = fmt.fit(f"{ARROWS[signal.direction]} {signal.rule}", width)
    return Cell(text, "muted" if signal.warmup else signal.direction)


def aligned(text: str, spec: ColumnSpec, style: Style | str = "") -> Text:
    """``text`` placed in its column: the gap first, then the text justified in ``spec.width``."""
    body = text.ljust(spec.width) if spec.justify == "left" else text.rjust(spec.width)
    return Text(" " * GAP + body, style=style, no_wrap=True, overflow="crop", end="")


def row_cells(symbol: str, quote: Quote | None, signal: Signal | None,
              specs: Sequence[ColumnSpec], flash: Role | None = None,
              figures: Figures | None = None, spark_cell: Cell | None = None) -> tuple[Cell, ...]:
    """What the row of ``symbol`` shows under ``specs``; ``quote`` is None until the symbol trades.

    ``flash`` (``flash_up``/``flash_down``) marks the last price as just having ticked up or down;
    ``figures``: the row's position (:mod:`widgets.position_columns`), None when it holds none;
    ``spark_cell``: the sparkline cell to show as it is (the widget redraws a sparkline only every few
    frames, and drawing one is a third of a row's cells' cost).
    """
    cells: list[Cell] = []
    shown = quote_change(quote) if quote is not None else 0.0
    for spec in specs:
        key = spec.key
        if key == "symbol":
            cells.append(Cell(symbol, "symbol"))
        elif key == "signal":
            cells.append(signal_cell(signal, spec.width))
        elif key in pc.POSITION_KEYS:
            cells.append(pc.position_cells(key, figures, spec.width))
        elif quote is None:
            cells.append(Cell(fmt.MISSING if key != "spark" else "", "muted"))
        elif key == "last":
            cells.append(Cell(fmt.price(quote.last, quote.decimals, spec.width), flash or "value"))
        elif key == "change":
            cells.append(Cell(fmt.change(shown, quote.last, quote.decimals, spec.width), direction(shown)))
        elif key == "change_pct":
            cells.append(Cell(fmt.percent(quote.change_pct if shown else shown), direction(shown)))
        elif key == "volume":
            cells.append(Cell(fmt.volume(quote.volume), "value"))
        elif key == "spark":
            cells.append(spark_cell if spark_cell is not None else
                         Cell(spark(quote.closes, spec.width), direction(shown)))
        else:
            value = quote.values.get(key, float("nan"))
            cells.append(Cell(fmt.indicator(value), "value" if value == value else "muted"))
    return tuple(cells)


MY_ORDER = "My order"
"""The sort picker's name for no sort: the rows in the order the user put them."""


def sort_choices(indicators: Sequence[str], positions: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """``(key, header name)`` of every column the watchlist sorts by, in table order; the names come
    from :func:`fixed_columns`, so the picker and the tabs line say what the header says. ``positions``:
    the position columns shown (the P&L ones among them sort too)."""
    return (*((spec.key, spec.label) for spec in fixed_columns(indicators, 0)),
            *((spec.key, spec.label) for spec in pc.specs(positions)))


def sort_keys(indicators: Sequence[str]) -> tuple[str, ...]:
    """The keys the watchlist sorts by (as saved in the state file): a sort by a position column stays
    valid while those columns are switched off."""
    return tuple(key for key, _ in sort_choices(indicators, tuple(k for k, _, _ in pc.POSITION_COLUMNS)))


def sort_label(key: str, indicators: Sequence[str]) -> str:
    """The header name of the sort key ``key`` (the key itself if no column has it)."""
    return dict(sort_choices(indicators, tuple(k for k, _, _ in pc.POSITION_COLUMNS))).get(key, key)


def next_sort(current: tuple[str | None, bool], chosen: str | None) -> tuple[str | None, bool]:
    """The sort after picking ``chosen`` (None: the user's own order) while ``current`` is in force.

    The column in force flips direction; another starts biggest first (what change and volume are
    sorted for), except the symbol, which starts at A.
    """
    key, descending = current
    if chosen is None:
        return None, False
    if chosen == key:
        return key, not descending
    return chosen, chosen != "symbol"


def sort_value(key: str, symbol: str, quote: Quote | None, signal: Signal | None,
               figures: Figures | None = None) -> float | str | None:
    """What ``symbol`` sorts by under ``key``; None (no value yet) sorts last either way."""
    if key in pc.POSITION_KEYS:
        return pc.sort_value(key, figures)
    if key == "symbol":
        return symbol
    if key == "signal":
        return None if signal is None else float(signal.bar_time)
    if quote is None:
        return None
    value = getattr(quote, key) if key in ("last", "change", "change_pct", "volume") else \
        quote.values.get(key, float("nan"))
    return None if value != value else float(value)


def ordered(symbols: Sequence[str], quotes: Mapping[str, Quote], signals: Mapping[str, Signal],
            sort: str | None, descending: bool, text: str = "",
            positions: PositionFrame | None = None) -> list[str]:
    """The rows shown: ``symbols`` containing ``text`` (any case), sorted by ``sort`` (None: as given).

    Rows without a value for the key keep their own order after the others, whichever the direction.
    """
    needle = text.strip().upper()
    rows = [s for s in symbols if needle in s.upper()] if needle else list(symbols)
    if sort is None:
        return rows
    figures = positions.get if positions is not None and sort in pc.POSITION_KEYS else (lambda s: None)
    keyed = [(sort_value(sort, s, quotes.get(s), signals.get(s), figures(s)), s) for s in rows]
    present = [(v, s) for v, s in keyed if v is not None]
    present.sort(key=lambda vs: vs[0], reverse=descending)
    return [s for _, s in present] + [s for v, s in keyed if v is None]

