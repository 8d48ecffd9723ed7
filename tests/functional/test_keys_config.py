"""``[keys]`` in the running console: keys written as characters fire, swapped keys work, and the
config's table of keys the console keeps for itself (``engine.config_keys.RESERVED``) covers every key
the main screen binds outside ``[keys]``, so no remapped key can be swallowed unnoticed.

Waits are on conditions (``support.wait_for``); nothing asserts how long anything took.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from console.app import TickdeckApp, build_app
from engine.config import Config
from engine.config_keys import ALIASES, RESERVED
from engine.config_model import KeysConfig
from tests.functional.support import wait_for
from widgets.help_screen import HelpScreen

SIZE = (100, 30)


async def rows_shown(pilot, app: TickdeckApp) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.selected is not None
                   and app.watchlist.rows.has_focus, "the watchlist's rows")


async def test_every_key_bound_outside_keys_is_reserved(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await rows_shown(pilot, app)
        remappable = {f.name for f in dataclasses.fields(KeysConfig)}
        ours = {b.id: b.key for b in app.key_bindings()}
        assert set(ours) == remappable  # every [keys] action is a binding of the main screen, and back
        assert ours == dataclasses.asdict(KeysConfig())  # with the config's defaults
        bound = {app.COMMAND_PALETTE_BINDING}
        for node in (app, app.screen, app.watchlist.rows, app.signal_log):
            for key, bindings in node._bindings.key_to_bindings.items():
                if any(b.id not in remappable for b in bindings) and not key.startswith("super+"):
                    bound.add(ALIASES.get(key, key))  # super+c: no terminal sends it
        assert bound - set(RESERVED) == set()


async def test_keys_written_as_characters_fire(make_config: Callable[..., Config]) -> None:
    app = build_app(make_config({"keys.help": "!", "keys.filter": "ctrl+/,f"}))
    async with app.run_test(size=SIZE) as pilot:
        await rows_shown(pilot, app)
        await pilot.press("exclamation_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        keys = str(app.screen.query_one("#help-keys").render())
        assert "!   Help" in keys and "ctrl+/ / f   Filter" in keys


async def test_swapped_keys_both_work(make_config: Callable[..., Config]) -> None:
    app = build_app(make_config({"keys.delete": "q", "keys.quit": "d"}))
    async with app.run_test(size=SIZE) as pilot:
        await rows_shown(pilot, app)
        count = len(app.watchlist.symbols)
        await pilot.press("q")
        await wait_for(pilot, lambda: len(app.watchlist.symbols) == count - 1, "q to delete a row")
        assert app.is_running
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running, "d to quit")


async def test_a_key_press_rebinds_nothing_unless_keys_were_changed(
        make_config: Callable[..., Config], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Textual applies the keymap to every binding on every key press; with the default keys there is
    nothing to apply (it once cost ~4 ms a key at 1,000 rows), with a changed key only that key is."""
    from textual.binding import BindingsMap

    applied: list[dict[str, str]] = []
    apply = BindingsMap.apply_keymap

    def counted(self: BindingsMap, keymap: dict[str, str]):  # type: ignore[no-untyped-def]
        applied.append(dict(keymap))
        return apply(self, keymap)

    monkeypatch.setattr(BindingsMap, "apply_keymap", counted)
    for overrides, expected in (({}, []), ({"keys.sort": "S"}, [{"sort": "S"}])):
        applied.clear()
        app = build_app(make_config(overrides))
        async with app.run_test(size=SIZE) as pilot:
            await rows_shown(pilot, app)
            await pilot.press("down")
            await pilot.pause()
            assert all(keymap == expected[0] for keymap in applied) and bool(applied) == bool(expected)
            assert {b.id: b.key for b in app.key_bindings()}["sort"] == overrides.get("keys.sort", "s")
