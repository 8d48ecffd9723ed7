"""Every watchlist edit from the keyboard, on the seeded sim, as users run it (``build_app``).

Each edit is checked three ways: what the watchlist shows, what the state file on disk holds, and, for
the persistence tests, what a second app started on the same state directory shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from console.app import DEFAULT_ROWS, TickdeckApp, build_app
from console.messages import SignalsDetected
from console.state import StateStore
from engine.config import Config
from engine.signals.events import Signal
from tests.functional.support import record_notifications, wait_for
from widgets.detail import DetailScreen
from widgets.help_screen import HelpScreen
from widgets.signal_log import SignalLog
from widgets.sort_picker import SortPicker

SIZE = (100, 30)
SAVE_WAIT_S = 30.0


async def ready(pilot, app: TickdeckApp) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.selected is not None
                   and app.watchlist.snapshot is not None, "the watchlist's rows")


def saved(app: TickdeckApp, state_dir: Path) -> dict:  # type: ignore[type-arg]
    """The sim's entry in the state file, once the app's writer thread has written every save so far."""
    assert app.saver.wait(SAVE_WAIT_S), "the state writer did not finish"
    return json.loads((state_dir / "state.json").read_text())["feeds"]["sim"]


def universe(app: TickdeckApp) -> tuple[str, ...]:
    assert app.runtime is not None
    return app.runtime.feed.universe()


async def type_answer(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(*text)
    await pilot.press("enter")
    await pilot.pause()


async def test_a_adds_a_symbol_of_the_feed_and_saves_it_at_once(config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        new = universe(app)[DEFAULT_ROWS]  # in the market, not yet in the list
        assert new not in app.watchlist.symbols
        await pilot.press("a")
        assert app.prompt.asking and app.prompt.input.has_focus
        await type_answer(pilot, new.lower())  # any case
        assert app.watchlist.symbols[-1] == new and app.watchlist.selected == new
        assert saved(app, state_dir)["watchlists"][0]["symbols"][-1] == new
        assert app.runtime is not None and new in app.runtime.watch  # snapshots now carry it
        await wait_for(pilot, lambda: app.watchlist.rows_text()[new][1] != "—", "a price for the new row")


async def test_an_unknown_or_duplicate_symbol_is_refused_and_nothing_changes(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        before = app.watchlist.symbols
        await pilot.press("a")
        await type_answer(pilot, "NOSUCH")
        await pilot.press("a")
        await type_answer(pilot, before[0])
        assert app.watchlist.symbols == before
        assert app.saver.wait(SAVE_WAIT_S) and app.saver.writes == 0
        assert not (state_dir / "state.json").exists()  # nothing was saved: nothing changed
        errors = [m for title, m, sev in seen if title == "Not added" and sev == "error"]
        assert "NOSUCH is not traded on the sim feed; nothing was added" in errors
        assert f"{before[0]} is already in Main; nothing was added" in errors


async def test_escape_cancels_the_prompt(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.watchlist.symbols
        await pilot.press("a", "X", "escape")
        assert not app.prompt.asking and app.watchlist.rows.has_focus
        assert app.watchlist.symbols == before


async def test_d_deletes_the_selected_row_and_u_puts_it_back_where_it_was(
        config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        original = app.watchlist.symbols
        await pilot.press("down", "down")
        victim = app.watchlist.selected
        assert victim == original[2]
        await pilot.press("d")
        assert victim not in app.watchlist.symbols
        assert victim not in saved(app, state_dir)["watchlists"][0]["symbols"]
        await pilot.press("u")
        assert app.watchlist.symbols == original
        assert saved(app, state_dir)["watchlists"][0]["symbols"] == list(original)
        assert app.watchlist.selected == victim


async def test_shift_arrows_move_the_row_in_the_users_order(config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        first, second = app.watchlist.symbols[:2]
        await pilot.press("shift+down")
        assert app.watchlist.symbols[:2] == (second, first) and app.watchlist.selected == first
        assert saved(app, state_dir)["watchlists"][0]["symbols"][:2] == [second, first]
        await pilot.press("shift+up")
        assert app.watchlist.symbols[:2] == (first, second)


async def pick_sort(pilot, app: TickdeckApp, letters: str) -> None:  # type: ignore[no-untyped-def]
    """``s``, then ``letters`` (each jumps to the next name starting with it), then ``enter``."""
    await pilot.press("s")
    await wait_for(pilot, lambda: isinstance(app.screen, SortPicker), "the sort picker")
    await pilot.press(*letters, "enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, SortPicker), "the sort picker to close")


async def test_s_picks_the_sort_and_rows_do_not_move_while_sorted(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await wait_for(pilot, lambda: len(app.watchlist.snapshot.quotes) == DEFAULT_ROWS,  # type: ignore[union-attr]
                       "quotes for every row")
        seen = record_notifications(app, monkeypatch)
        await pick_sort(pilot, app, "cc")  # Chg, then Chg%
        assert app.watchlist.sort == ("change_pct", True)
        assert saved(app, state_dir)["watchlists"][0]["sort"] == "change_pct"
        await pilot.press("space")  # hold the values so the order can be checked
        await pilot.pause()
        quotes = app.watchlist.snapshot.by_symbol()  # type: ignore[union-attr]
        shown = [quotes[s].change_pct for s in app.watchlist.shown]
        assert shown == sorted(shown, reverse=True)
        assert "sorted by Chg% ▼" in app.tabs.note
        order = app.watchlist.symbols
        await pilot.press("shift+down")
        assert app.watchlist.symbols == order
        assert any("rows move only in your own order" in m for _, m, _ in seen)
        await pick_sort(pilot, app, "")  # the sort in force again: the other direction
        assert app.watchlist.sort == ("change_pct", False)
        shown = [quotes[s].change_pct for s in app.watchlist.shown]
        assert shown == sorted(shown)


async def test_slash_filters_rows_as_you_type_and_escape_clears(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("slash", "a")
        assert app.watchlist.filter == "a"
        assert app.watchlist.shown and all("A" in s for s in app.watchlist.shown)
        assert len(app.watchlist.shown) < len(app.watchlist.symbols)
        await pilot.press("enter")  # keep it
        assert app.watchlist.filter == "a" and "filter" in app.tabs.note
        await pilot.press("escape")  # on the main screen: clears it
        assert app.watchlist.filter == "" and len(app.watchlist.shown) == len(app.watchlist.symbols)


async def test_n_makes_a_list_r_renames_it_and_digits_switch(config: Config, state_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        main = app.watchlist.symbols
        await pilot.press("n")
        await type_answer(pilot, "Tech")
        assert app.tabs.names == ("Main", "Tech") and app.tabs.active == 1
        assert app.watchlist.symbols == ()
        await pilot.press("a")
        await type_answer(pilot, main[0])
        await pilot.press("r")
        await pilot.press(*["backspace"] * 4)
        await type_answer(pilot, "Chips")
        assert app.tabs.names == ("Main", "Chips")
        await pilot.press("1")
        assert app.watchlist.symbols == main and app.tabs.active == 0
        await pilot.press("2")
        assert app.watchlist.symbols == (main[0],)
        await pilot.press("3")
        assert app.tabs.active == 1
        assert any("there is no watchlist 3" in m for _, m, _ in seen)
        await pilot.press("n")
        await type_answer(pilot, "main")  # names are unique in any case
        assert app.tabs.names == ("Main", "Chips")
        assert any("already a watchlist named main" in m for _, m, _ in seen)
        entry = saved(app, state_dir)
        assert [w["name"] for w in entry["watchlists"]] == ["Main", "Chips"] and entry["active"] == 1


async def test_edits_and_theme_are_there_after_a_restart(make_config: Callable[..., Config]) -> None:
    config = make_config()
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        added = universe(app)[DEFAULT_ROWS + 1]
        await pilot.press("a")
        await type_answer(pilot, added)
        await pick_sort(pilot, app, "cc")
        await pilot.press("n")
        await type_answer(pilot, "Second")
        await pilot.press("1", "t")
        lists, theme = app.tabs.names, app.theme
        symbols, sort = app.watchlist.symbols, app.watchlist.sort
    again = build_app(config)
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        assert again.tabs.names == lists and again.tabs.active == 0
        assert again.watchlist.symbols == symbols and added in symbols
        assert again.watchlist.sort == sort == ("change_pct", True)
        assert again.theme == theme != "dark"


async def test_a_corrupt_state_file_is_kept_aside_the_user_told_and_defaults_loaded(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir.mkdir(parents=True)
    broken = b'{"version": 1, "feeds": {"sim": {"active": 0, "watchlists": [{"name": "Ma'
    (state_dir / "state.json").write_bytes(broken)
    app = build_app(config)
    seen = record_notifications(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.watchlist.symbols == universe(app)[:DEFAULT_ROWS]
        assert (state_dir / "state.json.bak").read_bytes() == broken
        [(_, message, severity)] = [n for n in seen if n[0] == "Watchlists reset"]
        assert severity == "warning" and "state.json.bak" in message and "not valid JSON" in message
        await pilot.press("d")  # the next edit writes a good file again
        assert len(saved(app, state_dir)["watchlists"][0]["symbols"]) == DEFAULT_ROWS - 1


async def test_keys_are_remappable_in_config_and_help_shows_the_keys_in_force(
        make_config: Callable[..., Config]) -> None:
    app = build_app(make_config({"keys.add": "plus", "keys.delete": "x,delete"}))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("a")
        assert not app.prompt.asking
        await pilot.press("plus")
        assert app.prompt.asking
        await pilot.press("escape")
        count = len(app.watchlist.symbols)
        await pilot.press("d")
        assert len(app.watchlist.symbols) == count
        await pilot.press("x")
        assert len(app.watchlist.symbols) == count - 1
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = str(app.screen.query_one("#help-keys").render())
        assert "+   Add" in keys and "x / delete" in keys and "shift+↑" in keys


def fired(symbol: str, rule: str, direction: str = "up", bar: int = 0) -> Signal:
    t = 1_700_000_000_000_000_000 + bar * 60_000_000_000
    return Signal(symbol, rule, direction, t, 100.0, {"rsi_14": 29.0}, t)  # type: ignore[arg-type]


async def test_signal_log_filters_by_symbol_or_rule_and_enter_jumps_to_the_symbol(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        target = app.watchlist.symbols[5]
        other = app.watchlist.symbols[1]
        # rules of their own, so the sim's real signals (which keep coming) cannot match the filter
        app.post_message(SignalsDetected((fired(other, "probe_alpha", bar=1),
                                          fired(target, "probe_beta", "down", bar=2))))
        await wait_for(pilot, lambda: len(app.signal_log.shown) >= 2, "the signals in the log")
        app.signal_log.focus()
        await pilot.pause()
        await pilot.press("slash", *"probe_b")
        assert [(s.symbol, s.rule) for s in app.signal_log.shown] == [(target, "probe_beta")]
        await pilot.press("enter")  # keep the filter; the log has the keyboard again
        assert isinstance(app.focused, SignalLog)
        await pilot.press("enter")
        assert app.watchlist.selected == target and app.watchlist.rows.has_focus
        app.signal_log.focus()
        await pilot.press("slash", *other.lower())
        assert {s.symbol for s in app.signal_log.shown} == {other}
        await pilot.press("escape")
        assert app.signal_log.filter == "" and len(app.signal_log.shown) >= 2


async def test_enter_opens_the_detail_pane_where_list_keys_do_nothing(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.selected
        count = len(app.watchlist.symbols)
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("d", "a")
        assert len(app.watchlist.symbols) == count and not app.prompt.asking
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen) and app.watchlist.selected == symbol


async def test_p_swaps_signals_and_performance_on_a_narrow_screen(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        perf = app.query_one("#perf")
        assert app.signal_log.display and not perf.display
        await pilot.press("p")
        assert perf.display and not app.signal_log.display
        await pilot.press("p")
        assert app.signal_log.display and not perf.display


async def test_the_command_palette_offers_every_key_action(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for binding in app.key_bindings():
            if binding.action not in ("quit", "backtest") and not binding.action.startswith("switch_list"):
                assert binding.description in titles
        assert "Watchlist: Main" in titles  # lists by name, only those that exist
        [add] = [c for c in app.get_system_commands(app.screen) if c.title == "Add"]
        add.callback()
        await pilot.pause()
        assert app.prompt.asking and app.prompt.purpose == "add"


def test_state_store_honours_the_state_dir_variable(state_dir: Path) -> None:
    assert StateStore.default().path == state_dir / "state.json"
