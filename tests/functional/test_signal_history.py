"""The signal log shows warm-up signals (fired on history bars) as history: dimmed and marked ``hist``,
next to live signals drawn as they always were. Drawn by a running app, fed as a runtime feeds it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from console.app import build_app
from engine.config import Config
from engine.console_runtime import ViewOnlyRuntime
from engine.feeds.base import FeedStatus
from engine.signals.events import Signal
from engine.snapshot import Update
from tests.functional.support import wait_for
from widgets.signal_log import HISTORY, signal_parts

T0 = 1_700_000_000_000_000_000
MIN = 60_000_000_000
LIVE = Signal("NVDA", "rsi_oversold", "up", T0 + 10 * MIN, 124.5, {"rsi_14": 29.4, "level": 30.0}, T0)
PAST = dataclasses.replace(LIVE, symbol="META", bar_time=T0 + 2 * MIN, warmup=True)


class TwoSignals(ViewOnlyRuntime):
    """A runtime that reports one history signal and one live signal, then holds still."""

    def __init__(self) -> None:
        self.feed = SimpleNamespace(name="sim", market="sim", closed_universe=True,
                                    universe=lambda: ("NVDA", "META"))
        self.watch = ("NVDA", "META")

    async def run(self, on_update: Callable[[Update], None], on_status: Callable[[FeedStatus], None]) -> None:
        on_status(FeedStatus("sim", "live"))
        on_update(Update((PAST,), None))  # history comes first, as at a start
        on_update(Update((LIVE,), None))
        await asyncio.Event().wait()


def test_a_warm_up_signal_is_drawn_dimmed_and_marked_as_history() -> None:
    live, past = signal_parts(LIVE), signal_parts(PAST)
    assert HISTORY not in "".join(text for text, _ in live)
    assert [role for _, role in live] == ["muted", "up", "up", "value", "muted"]  # live lines as before
    text = "".join(t for t, _ in past)
    assert f"{HISTORY}  " in text and "META" in text and "rsi_oversold" in text
    assert text.index("124.50") < text.index(HISTORY) < text.index("rsi_14")  # after the price
    assert {role for _, role in past} == {"history"}


async def test_the_console_shows_history_signals_dimmed_below_the_live_ones(config: Config) -> None:
    app = build_app(config, TwoSignals(), saved_theme=False)
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.signal_log
        await wait_for(pilot, lambda: len(log.shown) == 2, "both signals in the log")
        assert log.shown == (LIVE, PAST)  # newest bar first
        rows: list[Any] = [log.row_strip(i, 90, False) for i in range(2)]
        live_text, past_text = ("".join(seg.text for seg in row) for row in rows)
        assert "NVDA" in live_text and HISTORY not in live_text
        assert "META" in past_text and f" {HISTORY} " in past_text
        assert all(seg.style is not None and seg.style.dim for seg in rows[1] if seg.text.strip())
        assert not any(seg.style is not None and seg.style.dim for seg in rows[0])
        styles = {seg.style.color for seg in rows[1] if seg.text.strip() and seg.style is not None}
        assert len(styles) == 1  # one colour: no up/down colouring for history


def test_a_rows_latest_signal_is_muted_when_it_fired_on_history() -> None:
    from widgets.watchlist_layout import signal_cell

    live, past = signal_cell(LIVE, 20), signal_cell(PAST, 20)
    assert (live.text, live.role) == ("▲ rsi_oversold", "up")
    assert (past.text, past.role) == ("▲ rsi_oversold", "muted")
