"""The backtest of the selected symbol's loaded history, from ``b`` and from the command palette.

Driven with Pilot on the seeded fast sim (its backfill gives every symbol a few hundred one-second bars
at start); the drawing (``widgets.backtest_view``) is also tested on a hand-made report, and the
in-memory entry point (``engine.backtest.backtest_bars``) against a run over the same bars in a file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from textual.command import CommandList, CommandPalette
from textual.containers import Vertical
from textual.geometry import Region

from console.app import BACKTEST_MIN_BARS, TickdeckApp, build_app
from engine.backtest import (
    HORIZONS,
    GroupResult,
    HorizonResult,
    MaeStats,
    Report,
    ReturnStats,
    SignalTable,
    backtest_bars,
    group_rows,  # the CLI's table and the pane both draw these rows
    run,
    select_rules,
)
from engine.config import Config
from engine.console_runtime import ViewOnlyRuntime
from tests.data import random_walk
from tests.functional.support import record_notifications, wait_for
from widgets.backtest_view import BacktestScreen, report_table
from widgets.help_screen import HelpScreen

SIZE = (140, 40)
SEC = 1_000_000_000


def loaded_bars(app: TickdeckApp, symbol: str | None) -> int:
    """Closed bars of ``symbol`` in the engine's history (0 before the engine is up)."""
    if app.runtime is None or symbol is None:
        return 0
    slot = app.runtime.engine.symbols.get(symbol)
    return 0 if slot is None else app.runtime.engine.history.size(slot)


def ready(app: TickdeckApp) -> bool:
    """The watchlist shows its rows, focused, and the selected symbol has enough history."""
    view = app.watchlist.rows
    return view.display and view.has_focus and loaded_bars(app, app.selected_symbol()) >= BACKTEST_MIN_BARS


def shown_text(screen: BacktestScreen) -> str:
    """The text the backtest table draws on screen."""
    static = screen.query_one("#backtest-table")
    lines = static.render_lines(Region(0, 0, static.size.width, static.size.height))
    return "\n".join(line.text for line in lines)


def assert_shows_every_rule(app: TickdeckApp, config: Config, symbol: str) -> None:
    screen = app.screen
    assert isinstance(screen, BacktestScreen)
    assert screen.symbol == symbol
    rules = select_rules(config.rules)
    assert [g.rule for g in screen.report.groups] == [r.id for r in rules for _ in range(
        2 if r.direction == "both" else 1)]
    assert screen.report.bars >= BACKTEST_MIN_BARS
    text = shown_text(screen)
    assert f"{symbol}: {screen.report.bars:,} bars of 1s" in text
    for rule in rules:
        assert rule.id in text
    assert "hit %" in text and "MAE20" in text


# --- in the app ------------------------------------------------------------------------------------

async def test_b_backtests_the_selected_symbol_and_escape_closes_the_table(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        main = app.screen
        await pilot.press("down", "down")  # another row than the first
        symbol = app.selected_symbol()
        assert app.runtime is not None and symbol == app.runtime.watch[2]
        await pilot.press("b")
        await wait_for(pilot, functools.partial(table_shown, app), "the backtest table")
        assert_shows_every_rule(app, config, symbol)
        await pilot.press("escape")
        assert app.screen is main
        assert app.header.state != "failed"


async def test_the_palette_command_backtests_the_selected_symbol(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        main = app.screen
        symbol = app.selected_symbol()
        assert symbol is not None
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"Backtest")
        commands = app.screen.query_one(CommandList)

        def offered() -> bool:
            return commands.option_count > 0 and commands.highlighted is not None

        await wait_for(pilot, offered, "the backtest command")
        option = commands.get_option_at_index(commands.highlighted or 0)
        assert f"Backtest rules on {symbol}" in str(option.prompt)
        await pilot.press("enter")
        await wait_for(pilot, functools.partial(table_shown, app), "the backtest table")
        assert_shows_every_rule(app, config, symbol)
        await pilot.press("escape")
        assert app.screen is main


async def test_too_little_history_is_a_notification(make_config: Callable[..., Config],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(make_config({"feeds.sim.backfill": 0}))  # one-second bars from now on: few at first
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app, monkeypatch)
        await wait_for(pilot, lambda: app.selected_symbol() is not None and app.runtime is not None,
                       "the watchlist's rows")
        main = app.screen
        symbol = app.selected_symbol()
        loaded = loaded_bars(app, symbol)
        assert loaded < BACKTEST_MIN_BARS
        await pilot.press("b")
        await wait_for(pilot, lambda: any(n[0] == "Not enough history" for n in seen), "the notification")
        await pilot.pause()
        assert app.screen is main
        assert not [w for w in app.workers if w.description.startswith("run_backtest")]  # none started
        [(_, message, severity)] = [n for n in seen if n[0] == "Not enough history"]
        assert severity == "warning"
        assert f"{symbol} has" in message and f"at least {BACKTEST_MIN_BARS}" in message


class NoLocalEngine(ViewOnlyRuntime):
    """A runtime without a local engine, as ``tickdeck attach`` has; its feed never delivers."""

    watch = ("AAA", "BBB")
    feed = SimpleNamespace(name="remote", market="remote", closed_universe=False,
                           universe=lambda: NoLocalEngine.watch)

    async def run(self, on_update: Any, on_status: Any) -> None:
        await asyncio.Event().wait()


async def test_without_a_local_engine_b_says_so(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(config, NoLocalEngine())
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app, monkeypatch)
        await wait_for(pilot, lambda: app.selected_symbol() == "AAA", "the watchlist's rows")
        await pilot.press("b")
        await pilot.pause()
        assert ("No history", "cannot backtest AAA: no local engine (attached)", "warning") in seen
        assert app.is_running and not isinstance(app.screen, BacktestScreen)


async def test_a_failed_backtest_is_a_notification_and_the_feed_goes_on(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config()
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app, monkeypatch)
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        monkeypatch.setattr(app, "config", dataclasses.replace(config, rules=()))  # no rules
        await pilot.press("b")
        await wait_for(pilot, lambda: any(n[0] == "backtest stopped" for n in seen), "the error")
        [(_, message, severity)] = [n for n in seen if n[0] == "backtest stopped"]
        assert "no rules to backtest" in message and severity == "error"
        assert app.header.state == "live" and app.is_running
        assert not isinstance(app.screen, BacktestScreen)


def table_shown(app: TickdeckApp) -> bool:
    """The pane is on screen and composed (pushing a screen and composing it are separate steps)."""
    return isinstance(app.screen, BacktestScreen) and bool(app.screen.query(Vertical))


async def test_bars_out_of_time_order_are_left_out_and_counted(config: Config) -> None:
    """A late tick can give the live history a second bar with a time already closed."""
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        symbol = app.selected_symbol()
        assert app.runtime is not None and symbol is not None
        engine = app.runtime.engine
        copied = await app.runtime.call(engine.closed_bars, symbol)
        assert copied is not None
        t, bars = copied
        t = np.concatenate([t[:10], t[9:10], t[5:6], t[10:]])  # bar 9 again, then bar 5 again
        bars = np.concatenate([bars[:10], bars[9:10] * 1.01, bars[5:6], bars[10:]])
        app.run_backtest(symbol, t, bars, engine.interval_ns)
        await wait_for(pilot, functools.partial(table_shown, app), "the backtest table")
        screen = app.screen
        assert isinstance(screen, BacktestScreen)
        assert screen.left_out == 2 and screen.report.bars == len(t) - 2
        assert "2 bar(s) left out" in str(screen.query_one(Vertical).border_subtitle)


async def test_a_backtest_over_more_bars_than_the_ring_reads_the_older_ones_from_the_store(
        config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ring holds what the chart needs; a live feed's store holds the rest, and ``b`` reads it."""
    from engine.store import BarStore
    from engine.ticks import BAR_DTYPE

    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        symbol = app.selected_symbol()
        assert app.runtime is not None and symbol is not None
        engine = app.runtime.engine
        copied = await app.runtime.call(engine.closed_bars, symbol)
        assert copied is not None
        ring_first = int(copied[0][0])
        older = np.zeros(engine.history.depth + 100, dtype=BAR_DTYPE)  # more than the ring holds
        older["t"] = ring_first - np.arange(len(older), 0, -1) * SEC
        older["open"] = older["high"] = older["low"] = older["close"] = 100.0 + np.arange(len(older)) % 7
        older["high"] += 1.0
        older["volume"] = 10.0
        with BarStore(tmp_path / "store", 90 * 86_400 * SEC) as store:  # what a live feed's writer kept
            store.append("binance", symbol, engine.interval_ns, older)
        live = dataclasses.replace(config, feed=dataclasses.replace(config.feed, name="binance"),
                                   history=dataclasses.replace(config.history, store=str(tmp_path / "store")))
        monkeypatch.setattr(app.runtime, "config", live)  # the runtime reads its feed's store
        await pilot.press("b")
        await wait_for(pilot, functools.partial(table_shown, app), "the backtest table")
        screen = app.screen
        assert isinstance(screen, BacktestScreen)
        assert screen.report.bars >= len(older) + len(copied[0]) > engine.history.depth
        assert screen.report.first_ns == older["t"][0]


async def test_help_lists_the_backtest_key(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = str(app.screen.query_one("#help-keys").render())
        assert "b   Backtest" in keys


# --- the drawing, on a hand-made report ------------------------------------------------------------

def stats(n: int, hit: float, mean: float, median: float) -> ReturnStats:
    return ReturnStats(n, hit, mean, median)


def hand_made_report() -> Report:
    nan = math.nan
    up = GroupResult(
        "rsi_oversold", "up", "rsi_14 crosses above 30", 4, 1000,
        (HorizonResult(1, 0, stats(4, 0.75, 0.0123, 0.01), stats(4, 0.5, -0.0005, 0.0)),
         HorizonResult(5, 1, stats(3, 1 / 3, -0.02, -0.015), stats(3, 0.25, 0.001, 0.002)),
         HorizonResult(20, 4, ReturnStats(0, nan, nan, nan), ReturnStats(0, nan, nan, nan))),
        MaeStats(2, -0.031, -0.03, -0.05), MaeStats(2, -0.02, -0.02, -0.025), 2)
    down = GroupResult(
        "macd_cross", "down", "macd crosses below its signal", 0, 0,
        tuple(HorizonResult(k, 0, ReturnStats(0, nan, nan, nan), ReturnStats(0, nan, nan, nan))
              for k in HORIZONS),
        MaeStats(0, nan, nan, nan), MaeStats(0, nan, nan, nan), 0)
    empty = SignalTable([], [], [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3)), np.zeros(0))
    first = 1_700_000_000 * SEC
    return Report([], 1, 1000, SEC, first, first + 999 * SEC, 0, [up, down], empty, 0.01, 0.2, 0.03)


def test_rows_have_the_cli_tables_figures() -> None:
    report = hand_made_report()
    up, down = (group_rows(g) for g in report.groups)
    assert up[0] == ["rsi_oversold", "up", "4", "4.00", "1", "4", "75.0", "50.0", "+1.23", "-0.05",
                     "+1.00", "0.00", "-3.10", "-2.00"]
    assert up[1][:5] == ["", "", "", "", "5"] and up[1][6] == "33.3"
    assert up[2] == ["", "", "", "", "20", "0", "-", "-", "-", "-", "-", "-", "", ""]
    assert down[0][:4] == ["macd_cross", "down", "0", ""]  # no bars: no rate


def test_the_table_renders_the_title_rows_and_caption() -> None:
    console = Console(width=160, record=True, color_system=None)
    console.print(report_table(hand_made_report(), "BTC-USD"))
    text = console.export_text()
    assert "BTC-USD: 1,000 bars of 1s, 2023-11-14T22:13:20Z to 2023-11-14T22:29:59Z" in text
    for header in ("rule", "dir", "signals", "/1k bars", "ahead", "hit %", "median", "MAE20", "rnd"):
        assert header in text
    assert "rsi_oversold" in text and "macd_cross" in text and "+1.23" in text
    assert "0 signals in 0.24 s" in text


# --- the in-memory entry point ---------------------------------------------------------------------

def test_backtest_bars_gives_the_report_of_the_same_bars_in_a_file(tmp_path: Path, config: Config) -> None:
    bars = random_walk(600, seed=3)
    path = tmp_path / "XYZ.csv"
    pd.DataFrame({"date": bars.t, "open": bars.o, "high": bars.h, "low": bars.l, "close": bars.c,
                  "volume": bars.v}).to_csv(path, index=False)
    rules = select_rules(config.rules)
    from_file = run([str(path)], rules, seed=5).to_dict()
    ohlcv = np.column_stack([bars.o, bars.h, bars.l, bars.c, bars.v])
    in_memory = backtest_bars("XYZ", bars.t, ohlcv, rules, 60 * SEC, seed=5).to_dict()
    for summary in (from_file, in_memory):
        del summary["files"], summary["timing"]
    assert in_memory == from_file
    assert in_memory["signals"] > 0
