"""The help screen: every key the app binds, with what it does (read from the bindings themselves, so
it can never fall out of step with them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.keys import key_to_character
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """``(keys, description)`` for each described binding, keys joined with ``/`` (``q``, ``?``)."""
    rows: list[tuple[str, str]] = []
    for item in bindings:
        if isinstance(item, Binding):
            keys, description = item.key, item.description
        elif len(item) >= 3:
            keys, description = item[0], item[2]
        else:
            continue
        if description:
            rows.append((key_label(keys), description))
    return rows


def key_label(keys: str) -> str:
    """Textual key names as a user types or sees them (``slash`` → ``/``, ``shift+up`` → ``shift+↑``),
    several (comma-separated) joined with `` / ``: the help screen and the command palette say the same."""
    return " / ".join(_key_name(k.strip()) for k in keys.split(","))


_NAMES = {"question_mark": "?", "escape": "esc", "left_square_bracket": "[", "right_square_bracket": "]",
          "slash": "/", "up": "↑", "down": "↓", "left": "←", "right": "→", "pageup": "pgup",
          "pagedown": "pgdn", "plus": "+", "minus": "-", "backslash": "\\", "underscore": "_", "at": "@"}


def _key_name(key: str) -> str:
    *modifiers, name = key.split("+")
    shown = _NAMES.get(name)
    if shown is None:  # other punctuation by its Unicode name (``exclamation_mark``); names stay names
        char = key_to_character(name) if len(name) > 1 else None
        shown = char if char is not None and char.isprintable() and not char.isspace() else name
    return "+".join([*modifiers, shown])


def render_help(rows: Sequence[tuple[str, str]]) -> Content:
    """A two-column list of keys and what they do."""
    width = max((len(k) for k, _ in rows), default=0)
    return Content("\n").join(
        Content.assemble((f"{keys:>{width}}", "$text-accent bold"), "   ", text) for keys, text in rows
    )


class HelpScreen(ModalScreen[None]):
    """Keys and what they do; ``escape`` (or ``?``) closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        background: $background 60%;
    }
    HelpScreen > VerticalScroll {
        width: auto;
        max-width: 90%;
        height: auto;
        max-height: 90%;
        padding: 0 2;
        border: round $primary;
        border-title-color: $text-primary;
        border-subtitle-color: $text-muted;
        background: $surface;
    }
    HelpScreen #help-keys {
        width: auto;
    }
    """

    AUTO_FOCUS = "#help-scroll"
    """The list has the keyboard from the start, so ↑ ↓ pgup pgdn home end scroll it at once (the app
    focuses nothing by itself: ``App.AUTO_FOCUS`` is None)."""

    BINDINGS = [
        Binding("escape", "close", "Close help"),
        Binding("question_mark", "close", "Close help", show=False),
    ]

    def __init__(self, bindings: Sequence[BindingType]) -> None:
        super().__init__()
        self._rows = binding_rows(bindings)

    def compose(self) -> ComposeResult:
        box = VerticalScroll(id="help-scroll")  # taller than 24 rows: it scrolls
        box.border_title = "Keys"
        box.border_subtitle = "↑ ↓ pgup pgdn home end scroll · esc to close"
        with box:
            yield Static(render_help(self._rows), id="help-keys")
        yield Footer()  # this window's keys, not those of the screen below (which do nothing here)

    def action_close(self) -> None:
        self.dismiss()
