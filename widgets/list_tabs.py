"""The watchlists' names on one line (``1 Main  2 Crypto``), the active one highlighted.

One line rather than Textual's two-line ``Tabs``: at 80x24 every row of the screen is a symbol shown or
not. Switching is by the keys ``1``-``9`` (or a click), so the number is part of each name.

The line never overflows. The active tab is always shown whole (cut only if it alone is wider than the
line). The other names are cut to a common length (``Lo…``, then down to their number), keeping room for
the note (sort, filter); a name that fits whole in what the whole note leaves stays whole, nearest the
active tab first. Tabs far from the active one are left out only when even their numbers do not fit.
The note gets what is left, cut with ``…``. :func:`tab_layout` decides; drawing and clicks both use it.
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from textual import events
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

ELLIPSIS = "…"
NOTE_ROOM = 40
"""The most cells kept for the note while other names are cut: a sort and a short filter, whole."""
NO_WIDTH = 1_000_000
"""The width assumed before the widget has one: nothing is cut."""


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, ending in ``…`` when it was cut."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1).rstrip() + ELLIPSIS if width > 0 else ""


def _label(number: int, name: str, cap: int | None) -> str:
    """`` 3 Name `` with the name cut to ``cap`` cells (None: whole; 0: the number alone)."""
    if cap == 0:
        return f" {number} "
    return f" {number} {name if cap is None else _fit(name, cap)} "


def tab_layout(names: tuple[str, ...], active: int, width: int, note: str = ""
               ) -> tuple[list[tuple[int, str]], str]:
    """The tabs shown, as (index, label) in order, and the note as it fits in ``width`` cells.

    Each label is followed by one space; the note, when shown, by a space before it.
    """
    count = len(names)
    if not count:
        return [], _fit(note, width - 1) if note and width > 2 else ""
    active = max(0, min(active, count - 1))

    def used(labels: list[tuple[int, str]]) -> int:
        return sum(cell_len(label) + 1 for _, label in labels)

    def all_with(cap: int | None, active_cap: int | None = None) -> list[tuple[int, str]]:
        return [(i, _label(i + 1, name, active_cap if i == active else cap)) for i, name in enumerate(names)]

    widest = max(cell_len(name) for name in names)
    # Whole, then shorter, then the number alone (1 would leave "…" alone); with room for the note first.
    caps: list[int | None] = [None, *range(widest - 1, 1, -1), 0]
    reserve = min(cell_len(note) + 1, NOTE_ROOM) if note else 0
    tabs = next((t for cap in caps if used(t := all_with(cap)) + reserve <= width), None)
    if tabs is None:
        reserve = 0
        tabs = next((t for cap in caps if used(t := all_with(cap)) <= width), None)
    if tabs is not None:  # room the whole note leaves: whole names for the tabs nearest the active one
        budget = width - used(tabs) - (cell_len(note) + 1 if note and reserve else 0)
        for i in sorted(range(count), key=lambda k: abs(k - active)):
            extra = cell_len(whole := _label(i + 1, names[i], None)) - cell_len(tabs[i][1])
            if 0 < extra <= budget:
                tabs[i], budget = (i, whole), budget - extra
    else:  # even the numbers do not fit beside the whole active name: scroll, keeping those nearest it
        whole = _label(active + 1, names[active], None)
        shown = {active: whole if cell_len(whole) < width else _label(active + 1, names[active], width - 5)}
        budget = width - used(list(shown.items()))
        for i in sorted(range(count), key=lambda k: abs(k - active))[1:]:
            if cell_len(number := _label(i + 1, "", 0)) + 1 <= budget:
                shown[i], budget = number, budget - cell_len(number) - 1
        tabs = sorted(shown.items())
    left = width - used(tabs) - 1
    return tabs, _fit(note, left) if note and left >= 2 else ""


def render_tabs(names: tuple[str, ...], active: int, note: str = "", width: int = NO_WIDTH) -> Content:
    """The names numbered from 1, the active one in reverse, then a muted ``note`` (filter, sort)."""
    tabs, note = tab_layout(names, active, width, note)
    parts: list[Content | str | tuple[str, str]] = []
    for i, label in tabs:
        style = "$block-cursor-foreground on $block-cursor-background bold" if i == active else "$text-muted"
        parts += [(label, style), " "]
    if note:
        parts += [" ", (note, "$text-muted italic")]
    return Content.assemble(*parts)


class ListTabs(Widget):
    """Which watchlists there are and which one is shown."""

    DEFAULT_CSS = """
    ListTabs {
        height: 1;
        background: $panel;
    }
    """

    names: reactive[tuple[str, ...]] = reactive(())
    active: reactive[int] = reactive(0)
    note: reactive[str] = reactive("")
    """Shown after the names: the filter and the sort of the active list."""

    class Clicked(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def render(self) -> Content:
        return render_tabs(self.names, self.active, self.note, self.size.width or NO_WIDTH)

    def on_click(self, event: events.Click) -> None:
        x = 0
        for i, label in tab_layout(self.names, self.active, self.size.width or NO_WIDTH, self.note)[0]:
            x += cell_len(label) + 1
            if event.x < x:
                self.post_message(self.Clicked(i))
                return
