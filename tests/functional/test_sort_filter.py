"""The sort picker, the signal log's filter and the prompt, as a user meets them (``build_app``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast, ToastRack

from console.app import DEFAULT_ROWS, TickdeckApp, build_app
from console.messages import SignalsDetected
from engine.config import Config
from engine.signals.events import Signal
from tests.functional.support import record_notifications, wait_for
from tests.functional.test_editing import SIZE, fired, pick_sort, ready, saved
from widgets.signal_log import SignalLog, select
from widgets.sort_picker import SortPicker
from widgets.watchlist_layout import next_sort, sort_choices


def picker_lines(app: TickdeckApp) -> list[str]:
    assert isinstance(app.screen, SortPicker)
    options = app.screen.query_one("#sort-choices")
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_s_opens_a_picker_of_header_names_and_the_same_pick_flips_the_direction(
        config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SortPicker), "the sort picker")
        names = [line.rstrip(" •").strip() for line in picker_lines(app)]
        assert names[0] == "My order" and "RSI 14" in names and "MACD HIST" in names
        assert "rsi_14" not in names and "macd_hist_12_26_9" not in names
        await pilot.press("r", "enter")  # the first letter jumps to RSI 14
        await wait_for(pilot, lambda: not isinstance(app.screen, SortPicker), "the picker to close")
        assert app.watchlist.sort == ("rsi_14", True)
        assert "sorted by RSI 14 ▼" in app.tabs.note
        assert saved(app, state_dir)["watchlists"][0]["sort"] == "rsi_14"  # the key, as before
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SortPicker), "the sort picker")
        assert any(line.startswith("RSI 14") and line.endswith("▼") for line in picker_lines(app))
        await pilot.press("enter")  # the one in force is highlighted: picking it again flips it
        await wait_for(pilot, lambda: not isinstance(app.screen, SortPicker), "the picker to close")
        assert app.watchlist.sort == ("rsi_14", False) and "sorted by RSI 14 ▲" in app.tabs.note
        await pick_sort(pilot, app, "m")  # from RSI 14 (in force, highlighted), the next name with an M
        assert app.watchlist.sort == ("macd_hist_12_26_9", True)
        assert "sorted by MACD HIST ▼" in app.tabs.note
        await pick_sort(pilot, app, "m")  # from MACD HIST, the next M wraps round to My order
        assert app.watchlist.sort == (None, False) and "sorted" not in app.tabs.note
        assert saved(app, state_dir)["watchlists"][0]["sort"] is None


async def test_escape_in_the_picker_changes_nothing(config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SortPicker), "the sort picker")
        await pilot.press("r", "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SortPicker), "the picker to close")
        assert app.watchlist.sort == (None, False) and not (state_dir / "state.json").exists()


async def test_a_state_file_saved_with_column_keys_loads_and_speaks_header_names(
        config: Config, state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    lists = [{"name": "Main", "symbols": ["AAPL", "MSFT"], "sort": "rsi_14", "descending": True},
             {"name": "Moves", "symbols": ["AAPL"], "sort": "change_pct", "descending": False}]
    (state_dir / "state.json").write_text(json.dumps(
        {"version": 1, "feeds": {"sim": {"active": 0, "watchlists": lists}}}))
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.watchlist.sort == ("rsi_14", True) and "sorted by RSI 14 ▼" in app.tabs.note
        await pilot.press("2")
        assert "sorted by Chg% ▲" in app.tabs.note


async def test_a_row_cannot_move_while_sorted_and_the_warning_names_the_column(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = record_notifications(app, monkeypatch)
        await pick_sort(pilot, app, "r")
        order = app.watchlist.symbols
        await pilot.press("shift+down")
        assert app.watchlist.symbols == order
        assert any("sorted by RSI 14: rows move only in your own order (s, then My order)" in m
                   for _, m, _ in seen)
        assert len(order) == DEFAULT_ROWS


async def log_signals(pilot, app: TickdeckApp, *signals: Signal) -> None:  # type: ignore[no-untyped-def]
    app.post_message(SignalsDetected(signals))
    await wait_for(pilot, lambda: all(s in app.signal_log.signals for s in signals), "the signals in the log")


async def test_a_kept_log_filter_shows_in_the_title_and_escape_clears_it_from_either_pane(
        config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.symbols[3]
        await log_signals(pilot, app, fired(symbol, "probe_alpha"))
        await pilot.press("tab", "slash", *symbol.lower(), "enter")  # Tab, /, V, Enter, Tab, Escape
        assert isinstance(app.focused, SignalLog) and app.signal_log.filter == symbol.lower()
        assert f"Signals · filter “{symbol.lower()}”" in str(app.signal_log.border_title)
        await pilot.press("tab")
        assert app.watchlist.rows.has_focus
        await pilot.press("escape")  # the watchlist has no filter: the log's goes
        assert app.signal_log.filter == "" and str(app.signal_log.border_title) == "Signals"
        await pilot.press("slash", "a", "enter", "tab", "slash", "b", "enter")  # both panes filtered
        assert app.watchlist.filter == "a" and app.signal_log.filter == "b"
        await pilot.press("escape")  # the log has focus: its filter first
        assert app.signal_log.filter == "" and app.watchlist.filter == "a"
        await pilot.press("escape")  # then the other pane's
        assert app.watchlist.filter == "" and "filter" not in app.tabs.note


async def test_the_log_filter_tells_a_symbol_from_a_rule(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        # rules of their own; the sim's signals keep coming, so every check is on all that is shown
        await log_signals(pilot, app, fired("V", "probe_crossing", bar=1),
                          fired("AAPL", "probe_volume", bar=2), fired("VZ", "probe_other", bar=3))
        app.signal_log.focus()
        await pilot.pause()
        await pilot.press("slash", "v")  # V is a symbol of a signal: that symbol alone
        shown = app.signal_log.shown
        assert shown and all(s.symbol == "V" for s in shown)
        await pilot.press(*["backspace"], *"rule:probe_v")
        assert [(s.symbol, s.rule) for s in app.signal_log.shown] == [("AAPL", "probe_volume")]
        await pilot.press(*["backspace"] * 12, *"sym:vz")
        assert {s.symbol for s in app.signal_log.shown} == {"VZ"}
        await pilot.press(*["backspace"] * 6, *"probe_")  # plain text: part of the symbol or the rule
        assert {s.rule for s in app.signal_log.shown} == {"probe_crossing", "probe_volume", "probe_other"}


def footer_keys(app: TickdeckApp) -> set[str]:
    """The descriptions the footer shows now, but the command palette's (always there, always works)."""
    return {key.description for key in app.screen.query(FooterKey)} - {"palette"}


async def test_a_on_a_signal_of_no_list_opens_the_add_prompt_holding_its_symbol(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.runtime is not None
        outside = app.runtime.feed.universe()[DEFAULT_ROWS]  # traded, in no list
        seen = record_notifications(app, monkeypatch)
        await log_signals(pilot, app, fired(outside, "probe_alpha"))
        app.signal_log.focus()
        await pilot.pause()
        await pilot.press("slash", *outside.lower(), "enter", "enter")
        assert f"{outside} is in no watchlist (a adds it)" in [m for _, m, _ in seen]
        await pilot.press("a")
        assert app.prompt.asking and app.prompt.input.value == outside
        await pilot.press("enter")
        assert app.watchlist.symbols[-1] == outside


async def test_while_the_prompt_has_the_keys_the_footer_shows_only_its_own(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await wait_for(pilot, lambda: "Filter" in footer_keys(app), "the main screen's footer")
        await pilot.press("a")
        await wait_for(pilot, lambda: "Filter" not in footer_keys(app), "the prompt's footer")
        assert footer_keys(app) == {"Done", "Cancel", "Complete"}  # completions from the feed's symbols
        count = len(app.watchlist.symbols)
        await pilot.press("shift+down", "tab")  # no main-screen key acts, tab stays in the prompt
        assert app.prompt.input.has_focus and app.watchlist.sort == (None, False)
        await pilot.press("escape", "slash")
        await wait_for(pilot, lambda: footer_keys(app) == {"Done", "Cancel"}, "the filter prompt's footer")
        await pilot.press("escape")
        await wait_for(pilot, lambda: "Filter" in footer_keys(app), "the main screen's footer again")
        assert len(app.watchlist.symbols) == count


async def test_tab_takes_the_completion_and_ctrl_q_still_quits_from_the_prompt(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.runtime is not None
        outside = app.runtime.feed.universe()[DEFAULT_ROWS]
        await pilot.press("a", *outside[:-1].lower())
        await wait_for(pilot, lambda: app.prompt.input._suggestion.upper() == outside, "the completion")
        await pilot.press("tab")
        assert app.prompt.input.value.upper() == outside and app.prompt.input.has_focus
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code == 0, "the app to quit")


async def test_notifications_stay_above_the_open_prompt(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:  # toasts are off by default
        await ready(pilot, app)
        await pilot.press("a")
        for n in range(3):
            app.notify(f"note {n} " + "long words " * 12, timeout=60)
        await wait_for(pilot, lambda: len(app.screen.query(Toast)) == 3, "the toasts")
        await pilot.pause()
        prompt = app.prompt.region
        assert prompt.height == 1 and app.screen.query_one(ToastRack).display
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(prompt), (toast.region, prompt)


def test_select_reads_prefixes_and_prefers_a_whole_symbol() -> None:
    logged = (fired("V", "macd_cross"), fired("AAPL", "volume_spike"), fired("VZ", "rsi_oversold"))
    assert select(logged, "v") == logged[:1]  # V is a logged symbol: that one alone
    assert select(logged, " sym:V ") == logged[:1] and select(logged, "sym:") == logged
    assert select(logged, "rule:vol") == logged[1:2]
    assert select(logged, "o") == logged  # plain text: part of the symbol or the rule
    assert select(logged[1:], "v") == logged[1:]  # no symbol V logged: V in either
    assert select(logged, "sym:x") == ()


def test_next_sort_flips_the_sort_in_force_and_starts_others_biggest_first() -> None:
    assert next_sort((None, False), "rsi_14") == ("rsi_14", True)
    assert next_sort(("rsi_14", True), "rsi_14") == ("rsi_14", False)
    assert next_sort(("rsi_14", False), "rsi_14") == ("rsi_14", True)
    assert next_sort(("rsi_14", False), "symbol") == ("symbol", False)  # A to Z first
    assert next_sort(("rsi_14", False), None) == (None, False)
    names = dict(sort_choices(["rsi_14", "macd_hist_12_26_9"]))
    assert names["rsi_14"] == "RSI 14" and names["macd_hist_12_26_9"] == "MACD HIST"
    assert names["change_pct"] == "Chg%" and "spark" not in names


def test_a_sorted_header_keeps_its_whole_name_when_a_marker_fits_beside_it() -> None:
    from widgets.watchlist import sorted_label

    assert sorted_label("RSI 14", 9, True) == "RSI 14 ▼"
    assert sorted_label("RSI 14", 7, False) == "RSI 14▲"  # the name whole, the space given up
    assert sorted_label("RSI 14", 6, True) == "RSI14▼"  # every letter rather than the space
    assert sorted_label("MACD HIST", 9, True) == "MACDHIST▼"
    assert sorted_label("MACD HIST", 6, True) == "MACD…▼"
    assert all(len(sorted_label("Signal", w, True)) <= w for w in range(2, 12))


async def test_the_sorted_column_header_shows_its_whole_name_and_the_direction(
        config: Config, state_dir: Path) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pick_sort(pilot, app, "r")
        await wait_for(pilot, lambda: "▼" in str(app.watchlist.head.render()), "the marker in the header")
        head = str(app.watchlist.head.render())
        assert any(name in head for name in ("RSI 14 ▼", "RSI 14▼", "RSI14▼")), head
