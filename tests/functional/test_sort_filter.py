"""The sort picker, the signal log's filter and the prompt, as a user meets them (``build_app``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.app import DEFAULT_ROWS, TickdeckApp, build_app
from engine.config import Config
from tests.functional.support import record_notifications, wait_for
from tests.functional.test_editing import SIZE, pick_sort, ready, saved
from widgets.sort_picker import SortPicker


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
