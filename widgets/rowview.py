"""A scrolling list of one-line rows drawn with Textual's line API, with a cursor.

Textual's ``DataTable`` re-renders whole cells through Rich on every update and cannot keep up with a
thousand symbols changing ten times a second. :class:`RowView` asks its subclass for the strip of one
row only when that row is on screen (``render_line``), and the subclass refreshes only the lines whose
content changed, so a frame costs in proportion to what is visible and what moved, not to the list.

Subclasses implement :meth:`row_strip` (the row at an index, already cropped to the width) and call
:meth:`set_row_count` and :meth:`refresh_row`. The cursor is an index; subclasses that want it to stay
on the same item while the order changes keep that item themselves (see the watchlist).
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from widgets.keys import bound, refocused


class RowView(ScrollView, can_focus=True):
    """Rows with a cursor; keyboard and mouse move the cursor, the view follows it."""

    DEFAULT_CSS = """
    RowView {
        overflow-x: hidden;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]

    cursor: reactive[int] = reactive(0, init=False)
    """Index of the selected row (kept within the rows)."""

    async def _on_key(self, event: events.Key) -> None:
        """Keys in the order typed (``widgets.keys``): ``a`` and a symbol typed in one read land in the
        prompt ``a`` opens, not on these rows."""
        if not refocused(self, event):
            await bound(self, event)

    class CursorMoved(Message):
        """The cursor moved (by key, click or a change of the rows)."""

        def __init__(self, view: RowView, index: int) -> None:
            super().__init__()
            self.view = view
            self.index = index

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.row_count = 0

    # --- for subclasses ------------------------------------------------------------------------------
    def row_strip(self, index: int, width: int, selected: bool) -> Strip:
        """The row at ``index``, ``width`` cells wide."""
        raise NotImplementedError

    def set_row_count(self, count: int) -> None:
        if count != self.row_count:
            self.row_count = count
            self.virtual_size = Size(self.size.width, count)
            self.refresh()
        if count and self.cursor >= count:
            self.cursor = count - 1

    def refresh_row(self, index: int) -> None:
        """Redraw row ``index`` if it is on screen (nothing to do otherwise)."""
        top = self.scroll_offset.y
        if top <= index < top + self.size.height:
            self.refresh_line(index)

    def refresh_span(self, index: int, x: int, width: int) -> None:
        """Redraw ``width`` cells from ``x`` of row ``index`` if on screen: the terminal is sent only
        those cells, which is what keeps a busy list's output small over SSH."""
        top = self.scroll_offset.y
        if top <= index < top + self.size.height:
            self.refresh(Region(x, index - top, width, 1))

    def refresh_spans(self, spans: list[tuple[int, int, int]]) -> None:
        """Redraw each ``(index, x, width)`` span that is on screen (``width`` 0: the whole row), in one
        refresh: each ``refresh`` call also drops the widget's style and layout caches, so a frame that
        changes a hundred cells pays for that once, not a hundred times."""
        top, height = self.scroll_offset.y, self.size.height
        line = max(self.virtual_size.width, self.size.width)
        regions = [Region(x, index - top, width or line, 1) for index, x, width in spans
                   if top <= index < top + height]
        if regions:
            self.refresh(*regions)

    def visible_rows(self) -> range:
        top = self.scroll_offset.y
        return range(top, min(self.row_count, top + self.size.height))

    # --- drawing ------------------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.size.width
        if index >= self.row_count:
            return Strip([Segment(" " * width, self.rich_style)], width)
        return self.row_strip(index, width, index == self.cursor and self.row_count > 0)

    def blank(self, width: int, style: Style) -> Strip:
        return Strip([Segment(" " * width, style)], width)

    # --- the cursor -------------------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_row(old)
        self.refresh_row(new)
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, immediate=True)
        self.post_message(self.CursorMoved(self, new))

    def validate_cursor(self, index: int) -> int:
        return max(0, min(index, self.row_count - 1)) if self.row_count else 0

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_cursor_to(self, index: int) -> None:
        self.cursor = index if index >= 0 else self.row_count - 1

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.size.height - 1)

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < self.row_count:
            self.cursor = index

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.row_count)
