"""The watchlists' names on one line (``1 Main  2 Crypto``), the active one highlighted.

One line rather than Textual's two-line ``Tabs``: at 80x24 every row of the screen is a symbol shown or
not. Switching is by the keys ``1``-``9`` (or a click), so the number is part of each name.
"""

from __future__ import annotations

from textual import events
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


def render_tabs(names: tuple[str, ...], active: int, note: str = "") -> Content:
    """The names numbered from 1, the active one in reverse, then a muted ``note`` (filter, sort)."""
    parts: list[Content | str | tuple[str, str]] = []
    for i, name in enumerate(names):
        style = "$block-cursor-foreground on $block-cursor-background bold" if i == active else "$text-muted"
        parts += [(f" {i + 1} {name} ", style), " "]
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
        return render_tabs(self.names, self.active, self.note)

    def on_click(self, event: events.Click) -> None:
        x = 0
        for i, name in enumerate(self.names):
            x += len(name) + 4
            if event.x < x:
                self.post_message(self.Clicked(i))
                return
