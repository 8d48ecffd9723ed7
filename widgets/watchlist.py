"""The watchlist: one row per symbol with its price, change, volume, sparkline, indicators and signal.

Built for a thousand symbols changing ten times a second. Each frame the widget takes the new snapshot,
works out the cells of the rows that are *on screen* (``widgets.watchlist_layout.row_cells``, a pure
function), compares them with what those lines show, and refreshes only the lines that differ. A line is
drawn from a cached strip keyed by its cells and its look (selected, striped), so an unchanged row costs
a dictionary lookup. Off-screen rows cost nothing but their place in the sort.

State is in reactives (rows, indicator columns, snapshot, signals, sort, filter); the selection follows
the symbol, not the index, so re-sorting keeps the cursor on the same symbol. Price cells flash for
:data:`FLASH_FRAMES` frames when the last price moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cachetools import LRUCache
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from widgets import formatting as fmt
from widgets.columns import ROLES, Cell, ColumnSpec, Role
from widgets.rowview import RowView
from widgets.watchlist_layout import (
    GAP,
    SPARK_MAX,
    SPARK_MIN,
    aligned,
    layout,
    ordered,
    positions_layout,
    row_cells,
)

if TYPE_CHECKING:
    from engine.signals.events import Signal
    from engine.snapshot import MarketSnapshot, Quote
    from widgets.position_columns import PositionFrame

__all__ = ["SPARK_MAX", "SPARK_MIN", "Watchlist", "WatchlistRows"]

FLASH_FRAMES = 3
"""Frames a moved price stays highlighted."""
SPARK_EVERY = 5
"""Frames between redraws of a sparkline whose symbol is only ticking: each is dozens of three-byte
block characters, most of the bytes a frame would send, while its shape changes slowly."""
DEFAULT_WIDTH = 80
CACHE_SIZE = 512
"""Strips kept: a few screens' worth of rows in a few looks each. Not more: every strip is dozens of
objects the garbage collector walks, and a large cache made full collections a visible stutter."""


def justify(text: str, spec: ColumnSpec) -> str:
    """``text`` as its column shows it: exactly ``spec.width`` cells, justified."""
    body = text.ljust(spec.width) if spec.justify == "left" else text.rjust(spec.width)
    return body[: spec.width]


class WatchlistRows(RowView):
    """The rows of a :class:`Watchlist` (it decides what they show)."""

    COMPONENT_CLASSES = {*(f"watchlist--{role.replace('_', '-')}" for role in ROLES),
                         "watchlist--zebra", "watchlist--cursor"}

    DEFAULT_CSS = """
    WatchlistRows {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    WatchlistRows > .watchlist--symbol { color: $foreground; text-style: bold; }
    WatchlistRows > .watchlist--value { color: $foreground; }
    WatchlistRows > .watchlist--up { color: $text-success; }
    WatchlistRows > .watchlist--down { color: $text-error; }
    WatchlistRows > .watchlist--flat { color: $foreground-muted; }
    WatchlistRows > .watchlist--muted { color: $foreground-muted; }
    WatchlistRows > .watchlist--flash-up { color: $foreground; background: $success-muted; text-style: bold; }
    WatchlistRows > .watchlist--flash-down { color: $foreground; background: $error-muted; text-style: bold; }
    WatchlistRows > .watchlist--zebra { background: $panel 40%; }
    WatchlistRows > .watchlist--cursor { background: $block-cursor-blurred-background; }
    WatchlistRows:focus > .watchlist--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    """

    def __init__(self, owner: Watchlist, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.owner = owner

    def row_strip(self, index: int, width: int, selected: bool) -> Strip:
        return self.owner.row_strip(index, width, selected)

    def render_line(self, y: int) -> Strip:
        """With no row to show, the middle line says why (an empty list, a filter matching nothing)."""
        if self.row_count == 0 and y == self.size.height // 2 and (text := self.owner.empty_message):
            width = self.size.width
            style = self.rich_style + self.get_component_rich_style("watchlist--muted", partial=True)
            return Strip([Segment(fmt.fit(text, width).center(width), style)], width)
        return super().render_line(y)

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        self.owner.relayout()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted and self.is_attached:
            self.call_later(self.owner.restyle)

    def on_focus(self) -> None:
        self.owner.restyle()

    def on_blur(self) -> None:
        self.owner.restyle()


def sorted_label(label: str, width: int, descending: bool) -> str:
    """A header label with its sort marker in ``width`` cells: ``RSI 14 ▼``, else ``RSI 14▼``, else
    ``RSI14▼`` (every letter of the name rather than its spaces), and only past that a cut name."""
    mark = "▼" if descending else "▲"
    for text in (f"{label} {mark}", f"{label}{mark}", label.replace(" ", "") + mark):
        if len(text) <= width:
            return text
    return fmt.fit(label.replace(" ", ""), width - 1) + mark


class Watchlist(Widget):
    """Symbols and their latest quotes, drawn from one snapshot per frame."""

    DEFAULT_CSS = """
    Watchlist {
        height: 1fr;
    }
    Watchlist > #watchlist-head {
        height: 1;
        background: $panel;
        color: $text;
        text-style: bold;
    }
    Watchlist > #watchlist-message {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    """

    # No reactive repaints the whole widget: the watchers refresh just the lines and cells that changed.
    symbols: reactive[tuple[str, ...]] = reactive((), repaint=False)
    """The rows in the user's order (the active watchlist)."""
    indicators: reactive[tuple[str, ...]] = reactive((), repaint=False)
    """Indicator outputs shown as columns, by catalogue name (``rsi_14``)."""
    snapshot: reactive[MarketSnapshot | None] = reactive(None, always_update=True, repaint=False)
    """The latest market snapshot drawn; None until the first one arrives."""
    signals: reactive[Mapping[str, Signal]] = reactive(dict, always_update=True, repaint=False)
    """The latest signal per symbol (assign a new mapping; it is not watched for mutation)."""
    sort: reactive[tuple[str | None, bool]] = reactive((None, False), repaint=False)
    """(column key, descending); a None key keeps the user's order."""
    filter: reactive[str] = reactive("", repaint=False)
    """Only symbols containing this text are shown (any case)."""
    message: reactive[str] = reactive("starting engine…", repaint=False)
    """Shown in place of the rows until the first snapshot (progress, or what went wrong)."""
    positions: reactive[tuple[str, ...]] = reactive((), repaint=False)
    """Position columns shown (``widgets.position_columns`` keys), in place of change, volume and the
    indicators; () shows the market columns."""
    position_frame: PositionFrame | None = None
    """The active list's position figures of the frame (set by the app before each ``snapshot``)."""
    hint_keys: tuple[str, str] = ("a", "esc")
    """The keys in force that add a symbol and clear the filter, named in :attr:`empty_message`."""

    def __init__(self, *, indicators: Sequence[str] = (), name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.set_reactive(Watchlist.indicators, tuple(indicators))
        # Held, not queried: snapshots may still arrive while the app tears the children down.
        self.head = Static("", id="watchlist-head", markup=False)
        self._message = Static(self.message, id="watchlist-message", markup=False)
        self.rows = WatchlistRows(self, id="watchlist-rows")
        self.rows.display = False
        self._specs: tuple[ColumnSpec, ...] = ()
        self._order: list[str] = []
        self._quotes: dict[str, Quote] = {}
        self._shown: dict[int, tuple[str, tuple[Cell, ...]]] = {}  # what each on-screen line shows
        self._prices: dict[str, float] = {}
        self._flash: dict[str, tuple[Role, int]] = {}  # symbol -> (role, last frame it shows)
        self._frame = 0
        self._palette: dict[str, Style] = {}
        self._base = Style.null()  # the rows' own style (background), read with the palette
        self._looks: dict[tuple[bool, bool], tuple[Style, dict[Role, Style]]] = {}
        self._cache: LRUCache[tuple[object, ...], Strip] = LRUCache(CACHE_SIZE)
        self.cache_hits = 0
        self.cache_misses = 0

    def compose(self) -> ComposeResult:
        yield self.head
        yield self._message
        yield self.rows

    def on_mount(self) -> None:
        self.relayout()

    # --- what the app asks -------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        """The symbol under the cursor; None when no row is shown."""
        order = self._order
        return order[self.rows.cursor] if order and self.rows.cursor < len(order) else None

    @property
    def shown(self) -> tuple[str, ...]:
        """The rows on display, in display order (after the filter and the sort)."""
        return tuple(self._order)

    def select(self, symbol: str) -> bool:
        """Put the cursor on ``symbol``; False if it is not shown."""
        try:
            self.rows.cursor = self._order.index(symbol)
        except ValueError:
            return False
        return True

    @property
    def empty_message(self) -> str:
        """Why no row is shown, once quotes are drawn ("" while rows are shown or none drawn yet)."""
        if self._order or self.snapshot is None:
            return ""
        add, clear = self.hint_keys
        if not self.symbols:
            return f"This list is empty — {add} adds a symbol"
        if needle := self.filter.strip():
            return f"No symbol matches “{needle}” — {clear} clears the filter"
        return ""

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) of the strip cache: how often a drawn row could be reused."""
        return self.cache_hits, self.cache_misses

    def rows_text(self) -> dict[str, list[str]]:
        """Every shown row's cell texts by symbol (what the row shows when scrolled into view)."""
        quotes, signals = self._quotes, self.signals
        frame = self.position_frame
        return {s: [c.text.strip() for c in row_cells(s, quotes.get(s), signals.get(s), self._specs, None,
                                                       frame.get(s) if frame is not None else None)]
                for s in self._order}

    # --- state -> rows -----------------------------------------------------------------------------
    def watch_symbols(self) -> None:
        self.relayout()
        self._reorder()

    def watch_indicators(self) -> None:
        self.relayout()

    def watch_positions(self) -> None:
        self.relayout()

    def watch_sort(self) -> None:
        self._reorder()
        self._draw_head()

    def watch_filter(self) -> None:
        self._reorder()

    def watch_message(self, message: str) -> None:
        if self.is_mounted and self.is_attached:
            self._message.update(message)

    def watch_snapshot(self, snapshot: MarketSnapshot | None) -> None:
        if not (self.is_mounted and self.is_attached):
            return
        self._message.display = snapshot is None
        self.rows.display = snapshot is not None
        if snapshot is None:
            return
        if self.screen.focused is None:
            self.rows.focus()
        self._frame += 1
        self._quotes = snapshot.by_symbol()
        self._note_moves()
        if self.sort[0] is not None:
            self._reorder()
        else:
            self._refresh_changed()

    def watch_signals(self) -> None:
        if self.sort[0] == "signal":
            self._reorder()
        else:
            self._refresh_changed()

    def _note_moves(self) -> None:
        """Start a flash on every visible row whose last price moved since the previous frame."""
        prices, flash, frame = self._prices, self._flash, self._frame
        for index in self.rows.visible_rows():
            symbol = self._order[index]
            quote = self._quotes.get(symbol)
            if quote is None:
                continue
            before = prices.get(symbol)
            prices[symbol] = quote.last
            if before is not None and quote.last != before:
                role: Role = "flash_up" if quote.last > before else "flash_down"
                flash[symbol] = (role, frame + FLASH_FRAMES - 1)
        for symbol in [s for s, (_, until) in flash.items() if until < frame]:
            del flash[symbol]
        if len(prices) > 4 * max(64, len(self._order)):  # symbols left the list long ago
            keep = set(self._order)
            self._prices = {s: p for s, p in prices.items() if s in keep}

    def _reorder(self) -> None:
        """Work out the displayed order again and keep the cursor on the symbol it was on."""
        if not (self.is_mounted and self.is_attached):
            return
        keep = self.selected
        key, descending = self.sort
        self._order = ordered(self.symbols, self._quotes, self.signals, key, descending, self.filter,
                              self.position_frame)
        rows = self.rows
        rows.set_row_count(len(self._order))
        if not self._order:  # the empty state's sentence may have changed (another filter)
            rows.refresh()
        if keep is not None and keep in self._order:
            index = self._order.index(keep)
            if index != rows.cursor:
                rows.cursor = index
        self._refresh_changed()

    def _cells(self, index: int, spark: Cell | None = None) -> tuple[str, tuple[Cell, ...]]:
        """The row at ``index``: its symbol and cells (``spark``: the sparkline cell to keep as drawn)."""
        symbol = self._order[index]
        flash = self._flash.get(symbol)
        frame = self.position_frame
        cells = row_cells(symbol, self._quotes.get(symbol), self.signals.get(symbol), self._specs,
                          flash[0] if flash else None, frame.get(symbol) if frame is not None else None,
                          spark)
        return symbol, cells

    def _refresh_changed(self) -> None:
        """Refresh the on-screen lines whose content differs from what they show: a new symbol on a
        line redraws it whole, the same symbol only its runs of changed cells (adjacent changed cells
        as one span, the terminal gets the same bytes), all of them in one refresh."""
        shown, rows, specs = self._shown, self.rows, self._specs
        drawn: dict[int, tuple[str, tuple[Cell, ...]]] = {}
        spark = next((i for i, spec in enumerate(specs) if spec.key == "spark"), None)
        hold_spark = spark is not None and self._frame % SPARK_EVERY != 0
        spans: list[tuple[int, int, int]] = []
        for index in rows.visible_rows():
            before = shown.get(index)
            same = before is not None and before[0] == self._order[index]
            # Until its turn, a ticking row's sparkline stays as drawn: not even worked out again.
            now = self._cells(index, before[1][spark] if same and hold_spark and spark is not None
                              and before is not None else None)
            if before is None or not same:
                spans.append((index, 0, 0))
            elif before != now:  # the same symbol: redraw only the cells that changed
                x = start = 0
                run = False
                for spec, old, new in zip(specs, before[1], now[1], strict=True):
                    if old != new and not run:
                        start, run = x, True
                    elif old == new and run:
                        spans.append((index, start, x - start))
                        run = False
                    x += spec.width + GAP
                if run:
                    spans.append((index, start, x - start))
            drawn[index] = now
        if spans:
            rows.refresh_spans(spans)
        self._shown = drawn  # lines scrolled away are forgotten: drawn afresh if they come back

    # --- drawing ----------------------------------------------------------------------------------------
    def relayout(self) -> None:
        """Columns for the current width (only when they change: a resize, other columns or rows)."""
        if not (self.is_mounted and self.is_attached):
            return
        width = self.rows.size.width or self.size.width or DEFAULT_WIDTH
        symbol_width = max((len(s) for s in self.symbols), default=6)
        specs = (positions_layout(width, self.positions, symbol_width) if self.positions
                 else layout(width, self.indicators, symbol_width))
        if specs != self._specs:
            self._specs = specs
            self._invalidate()
        self._draw_head()

    def restyle(self) -> None:
        """Read the theme's colours again (a theme switch, focus gained or lost)."""
        rows = self.rows
        palette = {name: rows.get_component_rich_style(name, partial=True) for name in rows.COMPONENT_CLASSES}
        base = rows.rich_style
        if palette != self._palette or base != self._base:
            self._palette, self._base = palette, base
            self._looks.clear()
            self._invalidate()

    def _invalidate(self) -> None:
        self._cache.clear()
        self._shown.clear()
        self.rows.refresh()

    def _draw_head(self) -> None:
        if not (self.is_mounted and self.is_attached):
            return
        key, descending = self.sort
        head = Text(no_wrap=True, overflow="crop", end="")
        for spec in self._specs:
            label = spec.label
            if spec.key == key:  # the marker stays inside the column, so columns stay put
                label = sorted_label(label, spec.width, descending)
            head.append_text(aligned(label, spec))
        self.head.update(head)

    def row_strip(self, index: int, width: int, selected: bool) -> Strip:
        """The strip of row ``index``: from the cache when the row shows what it showed before."""
        drawn = self._shown.get(index)
        if drawn is None or drawn[0] != self._order[index]:
            drawn = self._shown[index] = self._cells(index)
        cells = drawn[1]
        zebra = index % 2 == 1
        key = (cells, selected, zebra, width)
        strip = self._cache.get(key)
        if strip is not None:
            self.cache_hits += 1
            return strip
        self.cache_misses += 1
        strip = self._cache[key] = self._make_strip(cells, selected, zebra, width)
        return strip

    def _look(self, zebra: bool, selected: bool) -> tuple[Style, dict[Role, Style]]:
        """The gap's style and each role's style on a row of this look, combined once per theme: a
        ``Style`` sum per cell of every changed row was a tenth of a frame's drawing."""
        look = self._looks.get((zebra, selected))
        if look is None:
            palette = self._palette
            base = self._base + (palette["watchlist--zebra"] if zebra else Style.null())
            cursor = palette["watchlist--cursor"] if selected else Style.null()
            look = self._looks[(zebra, selected)] = (base + cursor, {
                role: base + palette[f"watchlist--{role.replace('_', '-')}"] + cursor for role in ROLES})
        return look

    def _make_strip(self, cells: tuple[Cell, ...], selected: bool, zebra: bool, width: int) -> Strip:
        if not self._palette:
            self.restyle()
        gap_style, roles = self._look(zebra, selected)
        gap = " " * GAP
        segments = []
        for spec, cell in zip(self._specs, cells, strict=True):
            segments.append(Segment(gap, gap_style))
            segments.append(Segment(justify(cell.text, spec), roles[cell.role]))
        return Strip(segments).adjust_cell_length(width, gap_style)
