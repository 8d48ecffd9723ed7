"""The command palette's own entries: keys as a user types them, one "Help" that opens tickdeck's help,
watchlists by name.

Each test opens the palette with ``ctrl+p``, types, and reads the hits it lists (title, then the help
line). Waits are on conditions (``support.wait_for``): the palette's search worker has finished for the
text typed.
"""

from __future__ import annotations

from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input

from console.app import TickdeckApp, build_app
from engine.config import Config
from tests.functional.support import wait_for
from widgets.detail import DetailScreen
from widgets.help_screen import HelpScreen

SIZE = (100, 30)


async def palette_hits(pilot: Pilot[int], app: TickdeckApp, query: str) -> list[str]:
    """Open the palette, type ``query`` and return every hit as ``"title\\nhelp"``."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
    palette = app.screen
    await pilot.press(*query)
    commands = palette.query_one(CommandList)

    def searched() -> bool:
        gathering = [w for w in palette.workers if w.group == CommandPalette._GATHER_COMMANDS_GROUP
                     and w.is_running]
        return (palette.query_one(Input).value == query and not gathering
                and commands.option_count > 0)

    await wait_for(pilot, searched, f"the palette's hits for {query!r}")
    return [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]


async def close_palette(pilot: Pilot[int], app: TickdeckApp) -> None:
    for _ in range(3):  # the first escape may only hide the list of hits
        if not isinstance(app.screen, CommandPalette):
            return
        await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "the palette to close")


async def ready(pilot: Pilot[int], app: TickdeckApp) -> None:
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.selected is not None,
                   "the watchlist's rows")


async def test_one_help_entry_opens_tickdecks_help(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        hits = await palette_hits(pilot, app, "help")
        assert hits[0] == "Help\nkey: ?"
        assert not [h for h in hits if h.startswith(("Keys\n", "Help\n")) and h != hits[0]]
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "tickdeck's help screen")


async def test_keys_show_as_a_user_types_them(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert "Filter\nkey: /" in await palette_hits(pilot, app, "Filter")
        await close_palette(pilot, app)
        assert "Move row up\nkey: shift+↑" in await palette_hits(pilot, app, "Move row up")
        await close_palette(pilot, app)
        hits = "\n".join(await palette_hits(pilot, app, "key"))
        for internal in ("slash", "question_mark", "shift+up"):
            assert f"key: {internal}" not in hits


async def test_watchlists_are_listed_by_name_and_only_those_that_exist(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("n", *"Crypto", "enter")
        await wait_for(pilot, lambda: app.tabs.names == ("Main", "Crypto"), "the new list")
        hits = await palette_hits(pilot, app, "Watchlist")
        lists = sorted(h for h in hits if h.startswith("Watchlist"))
        assert lists == ["Watchlist: Crypto\nkey: 2", "Watchlist: Main\nkey: 1"]
        main = next(i for i, h in enumerate(hits) if h.startswith("Watchlist: Main"))
        commands = app.screen.query_one(CommandList)
        commands.highlighted = main
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.tabs.active == 0, "the switch to Main")


async def test_help_from_the_detail_pane_opens_the_help_too(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail pane")
        hits = await palette_hits(pilot, app, "help")
        assert hits[0] == "Help\nkey: ?" and not [h for h in hits if h.startswith("Keys\n")]
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "tickdeck's help screen")
        hits = await palette_hits(pilot, app, "help")  # the help is open: nothing to open again
        assert not [h for h in hits if h.startswith("Help\n")]
