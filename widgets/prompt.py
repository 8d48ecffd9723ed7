"""A one-line prompt at the bottom of the screen for the keyboard's questions (add, filter, name).

One widget serves every question: :meth:`PromptBar.ask` shows it with a label, a starting value and
optional completions (Textual's ``SuggestFromList``: the rest of the best match appears dimmed and
``right`` accepts it). ``enter`` answers, ``escape`` cancels; either way the bar hides and posts
:class:`PromptBar.Answered`, so the app keeps one handler per purpose. Filters also post
:class:`PromptBar.Changed` on every keystroke, so rows narrow as the user types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from textual import events
from textual.actions import parse as parse_action
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Input, Label

from widgets.keys import refocused


class PromptInput(Input):
    """The bar's input. While it has focus the footer shows only its keys: the app hides its own
    (``check_action``), which would type text here rather than act; ``ctrl+q`` still quits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Done"),
        Binding("escape", "cancel", "Cancel"),
        Binding("tab", "complete", "Complete"),
        Binding("tab", "stay", show=False),  # no completions: tab does nothing (the bar keeps the keys)
        Binding("ctrl+q", "quit", show=False, priority=True),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.suggester is not None if action == "complete" else True

    async def _on_key(self, event: events.Key) -> None:
        """Run this bar's own bindings (clear, delete, cursor moves, done, cancel) here, in the order the
        keys came. Textual runs a focused widget's bindings only once the key has bubbled back up to the
        app, and by then the printable keys read with it (a paste, fast typing over SSH) have been typed:
        ``ctrl+u`` then ``aapl`` in one read would clear the ``aapl``. ``priority`` bindings (``ctrl+q``)
        never reach here: the app runs them before handing the key on. A key typed after ``enter`` or
        ``escape`` in the same read goes where the focus went (``widgets.keys``)."""
        if refocused(self, event):
            return
        if not event.is_printable:
            for binding in self._own_bindings(event):
                _, name, parameters = parse_action(binding.action)
                if self.check_action(name, parameters):
                    event.stop()
                    event.prevent_default()
                    await self.run_action(binding.action)
                    return
        await super()._on_key(event)

    def _own_bindings(self, event: events.Key) -> list[Binding]:
        # ``_bindings``: the map Textual merges from the class's and its bases' BINDINGS (no public name)
        by_key = self._bindings.key_to_bindings
        return [binding for key in event.aliases for binding in by_key.get(key, ())]

    def action_complete(self) -> None:
        """Take the completion shown after the text (as ``→`` at the end of the text does)."""
        if len(self._suggestion) > len(self.value):
            self.value = self._suggestion
            self.cursor_position = len(self.value)

    def action_stay(self) -> None:
        pass

    def action_quit(self) -> None:
        self.app.exit()

    def action_cancel(self) -> None:
        bar = self.parent
        if isinstance(bar, PromptBar):
            bar.finish(None)


class PromptBar(Horizontal):
    """Label and input on one line; hidden until asked."""

    DEFAULT_CSS = """
    PromptBar {
        height: 1;
        display: none;
        background: $panel;
    }
    PromptBar > Label {
        width: auto;
        padding: 0 1;
        color: $text-accent;
        text-style: bold;
    }
    PromptBar > PromptInput {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0;
        background: $panel;
    }
    PromptBar > PromptInput:focus {
        border: none;
    }
    Screen.-prompt-open ToastRack {
        margin-bottom: 2;  /* toasts stay above the prompt and the footer, never over what is typed */
    }
    """
    SCOPED_CSS = False  # for the ToastRack rule; the others name PromptBar anyway

    class Answered(Message):
        """The user answered (``value``) or cancelled (``value`` None) the question ``purpose``."""

        def __init__(self, purpose: str, value: str | None) -> None:
            super().__init__()
            self.purpose = purpose
            self.value = value

    class Changed(Message):
        """The text of question ``purpose`` changed (sent while typing)."""

        def __init__(self, purpose: str, value: str) -> None:
            super().__init__()
            self.purpose = purpose
            self.value = value

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.purpose = ""
        self.label = Label("")
        self.input = PromptInput(compact=True)
        self._return_to: object = None
        self._check: Callable[[str], str | None] | None = None

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.input

    @property
    def asking(self) -> bool:
        return bool(self.display)

    def ask(self, purpose: str, label: str, value: str = "", completions: Sequence[str] = (),
            placeholder: str = "", max_length: int = 0,
            check: Callable[[str], str | None] | None = None) -> None:
        """Show the bar and take the keyboard until the user answers or cancels.

        ``max_length``: the most characters that can be typed (0: any). ``check``: why an answer would be
        refused, or None; a refused answer keeps the bar open with the text, and the reason is shown.
        """
        self.purpose = purpose
        self._check = check
        self.input.max_length = max_length
        self._return_to = self.screen.focused
        self.label.update(label)
        self.input.suggester = SuggestFromList(completions, case_sensitive=False) if completions else None
        self.input.placeholder = placeholder
        self.input.value = value
        self.input.cursor_position = len(value)
        self.display = True
        self.screen.add_class("-prompt-open")
        # now, not after the next refresh (``focus()`` defers it): keys typed as soon as the bar shows
        # must land in it, and a frame that finds no focus must not hand it to the rows meanwhile
        self.screen.set_focus(self.input)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.asking:
            self.post_message(self.Changed(self.purpose, event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._check is not None and (problem := self._check(event.value)) is not None:
            self.notify(problem, title="Not changed", severity="error", timeout=6)
            return
        self.finish(event.value)

    def finish(self, value: str | None) -> None:
        """Hide the bar, give the keyboard back, and post the answer (None: cancelled)."""
        if not self.asking:
            return
        self.display = False
        self.screen.remove_class("-prompt-open")
        target = self._return_to
        if isinstance(target, Widget) and target.is_attached:
            # now, as ``ask`` takes it: keys typed after ``enter`` in the same read go back to ``target``
            self.screen.set_focus(target)
        self.post_message(self.Answered(self.purpose, value))
