"""Keys act in the order they were typed, however many arrive at once (``widgets.keys``).

A terminal hands the app every key of one read together: a paste, fast typing over SSH, or tmux's
send-keys. Textual runs a focused widget's bindings (``ctrl+u``, ``backspace``, ``ctrl+w``...) only when
the key has bubbled back up to the app, by which time the printable keys read with it have been typed:
``ctrl+u`` then ``aapl`` in one read cleared the ``aapl`` and left the bar empty. The keys are posted to
the app in one go, as the terminal driver does with one read.
"""

from __future__ import annotations

from textual import events
from textual.app import App, ComposeResult

from console.app import DEFAULT_ROWS, build_app
from engine.config import Config
from tests.functional.support import wait_for
from widgets.prompt import PromptBar


class BarApp(App[None]):
    def compose(self) -> ComposeResult:
        yield PromptBar(id="prompt")

    def on_mount(self) -> None:
        self.query_one(PromptBar).ask("position", "Position:", "AAPL ")


def key(name: str) -> events.Key:
    characters = {"ctrl+u": "\x15", "ctrl+w": "\x17", "backspace": "\x7f", "home": None, "end": None,
                  "space": " ", "enter": "\r", "down": None}
    return events.Key(name, characters.get(name, name))


async def typed_at_once(keys: list[str]) -> str:
    app = BarApp()
    async with app.run_test() as pilot:
        bar = app.query_one(PromptBar)
        await pilot.pause()
        assert bar.asking and bar.input.has_focus and bar.input.value == "AAPL "
        for name in keys:  # one read's keys: posted together, none handled in between
            app.post_message(key(name))
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        return bar.input.value


async def test_clearing_then_typing_in_one_read_keeps_what_was_typed() -> None:
    assert await typed_at_once(["ctrl+u", *"msft"]) == "msft"


async def test_backspace_and_cursor_keys_act_where_they_were_typed() -> None:
    keys = ["ctrl+u", *"ab", "backspace", "c", "home", "x"]
    assert await typed_at_once(keys) == "xac"
    assert await typed_at_once([*keys, "end", "space", *"yz", "ctrl+w", "q"]) == "xac q"


async def test_a_and_a_symbol_typed_in_one_read_add_the_symbol(config: Config) -> None:
    """``a`` opens the prompt only once its binding runs; the symbol's keys, read with it, went to the
    rows before (``j``, ``d``... as row keys) and the prompt opened empty."""
    app = build_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.book is not None and app.watchlist.snapshot is not None, "the rows")
        assert app.runtime is not None
        new = app.runtime.feed.universe()[DEFAULT_ROWS]  # in the market, not yet in the list
        before = list(app.watchlist.symbols)
        for name in ["a", *new.lower(), "enter", "down"]:  # one read: posted together
            app.post_message(key(name))
        await wait_for(pilot, lambda: new in app.watchlist.symbols, f"{new} added")
        assert list(app.watchlist.symbols) == [*before, new] and not app.prompt.asking
        assert app.focused is app.watchlist.rows  # the key after enter went back to the rows
