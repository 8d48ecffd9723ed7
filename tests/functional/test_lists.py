"""Whole watchlists from the keyboard: delete (and undo), reorder, tabs that fit, and empty states.

As in ``test_editing``: the app is built as users run it, on the seeded sim, with its state in a
temporary directory; each edit is checked on screen, in the state file, and after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from bench.servers.binance import BinanceServer
from console.app import TickdeckApp, build_app
from console.book import MAX_NAME, MAX_WATCHLISTS, Book, WatchList
from console.state import StateStore
from engine.config import Config, load_config
from tests.functional.support import record_notifications, wait_for
from tests.functional.test_editing import SIZE, pick_sort, ready, saved, type_answer
from widgets.list_tabs import ListTabs, tab_layout

LONG = [f"Long term holdings {n}" for n in range(1, MAX_WATCHLISTS + 1)]


async def started(pilot, app: TickdeckApp) -> None:  # type: ignore[no-untyped-def]
    """The book loaded and quotes drawn (the active list may be empty, so no row is selected)."""
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.snapshot is not None,
                   "the first frame")


def names(app: TickdeckApp) -> list[str]:
    assert app.book is not None
    return [wl.name for wl in app.book.lists]


def middle_line(app: TickdeckApp) -> str:
    rows = app.watchlist.rows
    return rows.render_line(rows.size.height // 2).text.strip()


async def test_shift_d_deletes_the_active_list_and_u_restores_it_in_its_place(
        make_config: Callable[..., Config], state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config()
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        main = app.watchlist.symbols
        await pilot.press("n")
        await type_answer(pilot, "Tech")
        await pilot.press("a")
        await type_answer(pilot, main[0])
        await pick_sort(pilot, app, "c")  # a sort of its own, to come back with it
        sort = app.watchlist.sort
        await pilot.press("n")
        await type_answer(pilot, "Third")
        await pilot.press("2", "D")
        assert names(app) == ["Main", "Third"] and app.tabs.names == ("Main", "Third")
        assert app.tabs.active == 1 and app.watchlist.symbols == ()  # the next one took its place
        assert ("", "deleted list Tech (u restores it)", "information") in seen
        assert [w["name"] for w in saved(app, state_dir)["watchlists"]] == ["Main", "Third"]
        await pilot.press("1", "u")
        assert names(app) == ["Main", "Tech", "Third"] and app.tabs.active == 1
        assert app.watchlist.symbols == (main[0],) and app.watchlist.sort == sort
        assert any("restored the list Tech" in m for _, m, _ in seen)
        entry = saved(app, state_dir)
        assert entry["watchlists"][1] == {"name": "Tech", "symbols": [main[0]], "sort": sort[0],
                                          "descending": sort[1]}
        await pilot.press("1", "D", "D")  # Main, then Tech: Third is the last one
        assert names(app) == ["Third"]
        await pilot.press("D")
        assert names(app) == ["Third"]
        assert any("Third is the only watchlist" in m and s == "warning" for _, m, s in seen)
    again = build_app(config)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot, again)
        assert again.tabs.names == ("Third",) and again.watchlist.symbols == ()


async def test_a_deleted_list_stops_its_symbols_on_a_live_feed_and_undo_starts_them_again() -> None:
    async with BinanceServer() as server:
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": server.url,
            "feeds.binance.symbols": ("BTCUSDT",), "engine.interval": "1m", "history.fetch": False,
        }, env={})
        app = build_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.header.state == "live" and app.book is not None,
                           "the feed to go live")
            await server.wait_subscribed("btcusdt@trade")
            await pilot.press("n", *"Alts", "enter", "a", *"solusdt", "enter", "a", *"btcusdt", "enter")
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")
            await pilot.press("D")
            assert app.tabs.names == ("Main",)
            await server.wait(lambda: all("solusdt@trade" not in c.subs for c in server.connections))
            assert any("btcusdt@trade" in c.subs for c in server.connections)  # still in Main
            await pilot.press("u")
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")
            assert app.tabs.names == ("Main", "Alts") and app.watchlist.symbols == ("SOLUSDT", "BTCUSDT")


async def test_angle_brackets_move_the_active_list_and_the_digits_follow(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config()
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        main = app.watchlist.symbols
        for name in ("B", "C"):
            await pilot.press("n")
            await type_answer(pilot, name)
        await pilot.press("1", "greater_than_sign")
        assert app.tabs.names == ("B", "Main", "C") and app.tabs.active == 1
        await pilot.press("greater_than_sign", "greater_than_sign")
        assert app.tabs.names == ("B", "C", "Main") and app.tabs.active == 2
        assert any("Main is already the last list" in m for _, m, _ in seen)
        await pilot.press("less_than_sign")
        assert app.tabs.names == ("B", "Main", "C")
        await pilot.press("2")
        assert app.watchlist.symbols == main
        await pilot.press("1")
        assert app.watchlist.symbols == ()
        await pilot.press("less_than_sign")
        assert any("B is already the first list" in m for _, m, _ in seen)
    again = build_app(config)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot, again)
        assert again.tabs.names == ("B", "Main", "C") and again.tabs.active == 0


async def test_at_nine_lists_n_says_so_at_once_and_a_deleted_list_makes_room(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StateStore(state_dir).save("sim", Book([WatchList(name, []) for name in LONG], MAX_WATCHLISTS - 1))
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        seen = record_notifications(app, monkeypatch)
        await pilot.press("n")
        assert not app.prompt.asking
        assert any("already 9 watchlists" in m and "D deletes the active one" in m for _, m, _ in seen)
        await pilot.press("D", "n")
        assert app.prompt.asking
        await type_answer(pilot, "Fresh")
        assert app.tabs.names[-1] == "Fresh" and len(app.tabs.names) == MAX_WATCHLISTS


async def test_at_80_columns_the_active_tab_of_nine_long_names_is_on_screen_and_clicks_hit(
        config: Config, state_dir: Path) -> None:
    book = Book([WatchList(name, []) for name in LONG], MAX_WATCHLISTS - 1)
    book.lists[-1].sort = "last"
    StateStore(state_dir).save("sim", book)
    app = build_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        tabs = app.query_one(ListTabs)
        line = tabs.render().plain
        assert cell_len(line) <= 80 == tabs.size.width
        assert " 9 Long term holdings 9 " in line
        assert "sorted by" in line  # the note gets what is left
        three = line.index(" 3 ")
        await pilot.click(ListTabs, offset=(three + 1, 0))
        assert app.tabs.active == 2
        line = tabs.render().plain
        assert " 3 Long term holdings 3 " in line and cell_len(line) <= 80
        nine = line.index(" 9 ")
        await pilot.click(ListTabs, offset=(nine + 1, 0))
        assert app.tabs.active == 8


NAME = st.text(st.characters(categories=["L", "N", "P", "Zs", "So"]), min_size=1, max_size=MAX_NAME)


@settings(max_examples=300, deadline=None)
@given(st.lists(NAME, min_size=1, max_size=MAX_WATCHLISTS), st.integers(0, 8), st.integers(8, 240),
       st.sampled_from(["", "sorted by change % ▼", "sorted by RSI 14 ▲ · filter “AB”"]))
def test_the_tabs_line_fits_and_always_holds_the_active_tab(names: list[str], active: int, width: int,
                                                           note: str) -> None:
    active %= len(names)
    tabs, shown_note = tab_layout(tuple(names), active, width, note)
    used = sum(cell_len(label) + 1 for _, label in tabs) + (cell_len(shown_note) + 1 if shown_note else 0)
    assert used <= width
    assert [i for i, _ in tabs] == sorted({i for i, _ in tabs})
    label = dict(tabs)[active]
    whole = f" {active + 1} {names[active]} "
    assert label == whole if cell_len(whole) < width else label.startswith(f" {active + 1} ")
    assert shown_note in ("", note) or (shown_note.endswith("…") and note.startswith(shown_note[:-1]))
    if cell_len(whole) + 1 + 4 * (len(names) - 1) <= width:  # room for every number: none left out
        assert len(tabs) == len(names)


async def test_an_empty_list_and_a_filter_matching_nothing_say_so_and_d_says_why(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        await pilot.press("slash", *"ZZQ")
        assert app.watchlist.shown == ()
        assert middle_line(app) == "No symbol matches “ZZQ” — esc clears the filter"
        await pilot.press("enter", "d")
        assert any("nothing to delete: no row matches the filter" in m for _, m, _ in seen)
        await pilot.press("escape")
        assert app.watchlist.shown and middle_line(app) != "" and "matches" not in middle_line(app)
        await pilot.press("n")
        await type_answer(pilot, "Empty")
        assert middle_line(app) == "This list is empty — a adds a symbol"
        await pilot.press("d")
        assert any("nothing to delete: Empty is empty (a adds a symbol)" in m for _, m, _ in seen)


async def test_name_prompts_limit_the_length_and_keep_a_refused_name_with_the_reason(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        await pilot.press("n", *("x" * 31))
        assert app.prompt.input.value == "x" * MAX_NAME
        await pilot.press(*["backspace"] * MAX_NAME, *"MAIN", "enter")
        assert app.prompt.asking and app.prompt.input.value == "MAIN"
        assert ("Not changed", "there is already a watchlist named MAIN", "error") in seen
        await pilot.press("space", "D", "less_than_sign", "greater_than_sign", "enter")  # text, not keys
        assert not app.prompt.asking and app.tabs.names == ("Main", "MAIN D<>")
        await pilot.press("r", *["backspace"] * 8, "enter")
        assert app.prompt.asking and app.prompt.input.value == ""
        assert ("Not changed", "a watchlist needs a name", "error") in seen
        await pilot.press("escape")
        assert not app.prompt.asking and app.tabs.names == ("Main", "MAIN D<>")
