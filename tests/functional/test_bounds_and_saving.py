"""What the console keeps grows with nothing but its bounds (a paused display, symbols that come and go),
and saving the watchlists never holds up the event loop, yet nothing is lost at quit.

The sim runs with no rules here, so every signal the app sees is one these tests made."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest

import console.state as state_mod
from console.app import DEFAULT_ROWS, TickdeckApp, build_app
from console.messages import SignalsDetected
from engine.config import Config
from engine.signals.events import Signal
from tests.functional.support import wait_for
from widgets.header import TickRate
from widgets.signal_log import LIMIT, newest_first

SIZE = (100, 30)
WAIT_S = 30.0


def quiet(config: Config) -> Config:
    return dataclasses.replace(config, rules=())


def probe(symbol: str, k: int) -> Signal:
    t = 4_000_000_000_000_000_000 + k * 1_000_000_000  # after any bar the sim makes: these top the log
    return Signal(symbol, f"probe_{k % 7}", "up" if k % 2 else "down", t, 1.0, {"rsi_14": 1.0}, t)


async def ready(pilot, app: TickdeckApp) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.book is not None and app.watchlist.selected is not None
                   and app.watchlist.snapshot is not None, "the watchlist's rows")


def market(app: TickdeckApp) -> tuple[str, ...]:
    assert app.runtime is not None
    return app.runtime.feed.universe()


async def test_a_paused_display_holds_no_more_than_unpausing_shows(config: Config) -> None:
    app = build_app(quiet(config))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.book is not None
        watched, symbols = app.book.symbols(), market(app)
        assert len(symbols) > len(watched) == DEFAULT_ROWS
        await pilot.press("space")
        sent: list[Signal] = []
        for batch in range(40):  # 4,000 signals over every symbol of the market, the display paused
            signals = tuple(probe(symbols[(batch * 100 + i) % len(symbols)], batch * 100 + i)
                            for i in range(100))
            sent += signals
            app.on_signals_detected(SignalsDetected(signals))
            assert len(app._held_signals) <= LIMIT + len(watched)
        await pilot.press("space")
        assert app.signal_log.signals == newest_first((), sent)  # what an unpaused log would hold
        latest = {s.symbol: s for s in sent if s.symbol in watched}
        assert dict(app.watchlist.signals) == latest and len(latest) == len(watched)
        assert len(app._held_signals) == 0


async def test_the_last_signal_per_symbol_is_kept_for_listed_symbols_only(config: Config) -> None:
    app = build_app(quiet(config))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbols, k = market(app), 0
        for _ in range(10):  # a symbol deleted, a signal for every symbol of the market, the symbol back
            for key in ("d", "u"):
                await pilot.press(key)
                every = tuple(probe(s, k + i) for i, s in enumerate(symbols))
                app.on_signals_detected(SignalsDetected(every))
                k += len(symbols)
                assert app.book is not None
                assert set(app.watchlist.signals) == app.book.symbols()
                assert len(app.watchlist.signals) <= DEFAULT_ROWS


async def test_saves_happen_off_the_event_loop_and_quitting_waits_for_the_last(
        config: Config, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk holds the first write until the app quits: keys are handled meanwhile, and the edits
    made while it was held are on disk after the app has gone."""
    gate, writing, written = threading.Event(), threading.Event(), threading.Event()
    real = state_mod.write_atomically

    def held_write(target: Path, write: Callable[[TextIO], None]) -> None:
        writing.set()
        gate.wait(WAIT_S)  # a slow disk (or a hung network file system)
        real(target, write)
        written.set()

    monkeypatch.setattr(state_mod, "write_atomically", held_write)
    app = build_app(quiet(config))
    real_wait = app.saver.wait

    def wait_at_quit(timeout: float) -> bool:  # the disk lets go only once the app waits at quit
        gate.set()
        return real_wait(timeout)

    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        before = app.watchlist.symbols
        await pilot.press("d")
        await wait_for(pilot, writing.is_set, "the first write to start")
        await pilot.press("down", "d", "shift+down")  # handled while the write is held
        assert len(app.watchlist.symbols) == len(before) - 2
        assert not written.is_set() and not (state_dir / "state.json").exists()
        expected = list(app.watchlist.symbols)
        monkeypatch.setattr(app.saver, "wait", wait_at_quit)
    assert written.is_set() and app.unsaved == ""
    saved = json.loads((state_dir / "state.json").read_text())["feeds"]["sim"]
    assert saved["watchlists"][0]["symbols"] == expected


def test_the_tick_rate_keeps_a_bounded_window_when_the_clock_steps_back() -> None:
    rate = TickRate(window_ns=2_000_000_000)
    t, ticks = 10**18, 0
    for frame in range(5_000):  # a looped replay: its clock goes back to the start every 100 frames
        t += -99 * 100_000_000 if frame % 100 == 99 else 100_000_000
        ticks += 50
        rate.update(t, ticks)
        assert len(rate._points) <= TickRate.MAX_POINTS
