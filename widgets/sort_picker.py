"""The sort picker ``s`` opens: "My order" and the watchlist's columns, by the names their headers show.

One keystroke reaches any order (``↑``/``↓``, or the first letter of a name, then ``enter``), where
cycling through every column and direction took up to 17. Picking the column already in force flips its
direction; the one in force is marked ``▼``/``▲``. The screen only chooses: it dismisses with the new
``(key, descending)`` (or None when cancelled) and the app applies it, so the rules stay in
:func:`widgets.watchlist_layout.next_sort`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList
from textual.widgets.option_list import Option

from widgets.watchlist_layout import MY_ORDER, next_sort

Sort = tuple[str | None, bool]


def choice_text(label: str, key: str | None, current: Sort, width: int) -> str:
    """One line of the list: the name, then ``▼``/``▲`` on the sort in force (``•`` on your own order)."""
    in_force, descending = current
    mark = "" if key != in_force else "•" if key is None else "▼" if descending else "▲"
    return f"{label:<{width}} {mark}"


class SortPicker(ModalScreen[Sort | None]):
    """``choices``: ``(key, header name)`` of every sortable column, in table order."""

    DEFAULT_CSS = """
    SortPicker {
        align: center middle;
        background: $background 60%;
    }
    SortPicker > OptionList {
        width: auto;
        min-width: 24;
        max-width: 90%;
        height: auto;
        max-height: 90%;
        border: round $primary;
        border-title-color: $text-primary;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    SortPicker > OptionList:focus {
        border: round $accent;
    }
    """
    AUTO_FOCUS = "#sort-choices"  # the app focuses nothing by itself (AUTO_FOCUS None): the list takes keys
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, choices: Sequence[tuple[str, str]], current: Sort) -> None:
        super().__init__()
        self.keys: tuple[str | None, ...] = (None, *(key for key, _ in choices))
        self.labels: tuple[str, ...] = (MY_ORDER, *(label for _, label in choices))
        self.current = current

    def compose(self) -> ComposeResult:
        width = max(len(label) for label in self.labels)
        options = [Option(choice_text(label, key, self.current, width))
                   for key, label in zip(self.keys, self.labels, strict=True)]
        picker = OptionList(*options, id="sort-choices")
        picker.border_title = "Sort by"
        picker.border_subtitle = "again: flips ▼▲"
        in_force = self.current[0]
        picker.highlighted = self.keys.index(in_force) if in_force in self.keys else 0
        yield picker
        yield Footer()  # this window's keys, not those of the screen below (which do nothing here)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(next_sort(self.current, self.keys[event.option_index]))

    def on_key(self, event: events.Key) -> None:
        """A letter moves to the next name that starts with it (again: the one after), wrapping."""
        letter = (event.character or "").lower()
        if not (letter.isalnum() and len(letter) == 1):
            return
        event.stop()
        picker = self.query_one(OptionList)
        start = picker.highlighted if picker.highlighted is not None else -1
        count = len(self.labels)
        for step in range(1, count + 1):
            index = (start + step) % count
            if self.labels[index].lower().startswith(letter):
                picker.highlighted = index
                return

    def action_cancel(self) -> None:
        self.dismiss(None)
