"""The header line at the widths people use: what it keeps when the line is too short for everything.

The state of the feed and the reconnect countdown come first; the reason gets what is left, cut with
``…``; the other parts are kept by rank. Driven through the app (a feed that stays reconnecting) and
through the layout function at several widths.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from console.app import build_app
from engine.config import Config
from engine.feeds.base import Feed, FeedStatus
from engine.runtime import PipelineHealth, Runtime, build_engine
from tests.functional.support import wait_for
from widgets.header import HeaderState, render_header

REASON = "DNS lookup failed for stream.binance.com:9443 (Temporary failure in name resolution)"
NOW = 1_700_000_000_000_000_000


class ReconnectingFeed(Feed):
    """A feed that says it is reconnecting, with a long reason, and then waits (for the test to end)."""

    name = "binance"

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "reconnecting", REASON, retry_in=600.0)
        await asyncio.Event().wait()
        yield FeedStatus(self.name, "stopped")  # never reached: makes this an async generator

    def universe(self) -> tuple[str, ...]:
        return ("AAA", "BBB")


async def test_the_countdown_shows_at_80_columns_and_the_reason_is_cut(config: Config) -> None:
    engine = build_engine(config)
    app = build_app(config, Runtime(config, engine, ReconnectingFeed(engine.symbols)))
    async with app.run_test(size=(80, 24)) as pilot:
        header = app.header
        await wait_for(pilot, lambda: header.state == "reconnecting", "the reconnecting state")
        await pilot.pause()
        line = header.render_line(0).text
        assert 0 < len(line) <= 80
        assert "● reconnecting DNS lookup" in line and "(retry in " in line
        assert "…" in line and REASON not in line  # the reason is what gave way


def state(**kw: object) -> HeaderState:
    fields: dict[str, object] = dict(
        feed="binance", state="reconnecting", reason=REASON, clock_ns=NOW, interval="1m", tick_rate=2013.0,
        health=PipelineHealth(lag_p99_ms=3.4, history_done=12, history_total=40, reconnects=2),
        retry_at_ns=NOW + 12_000_000_000, now_ns=NOW)
    fields.update(kw)
    return HeaderState(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_state_and_countdown_first_then_the_reason_gets_what_is_left(width: int) -> None:
    line = render_header(state(), width).plain
    assert len(line) <= width
    assert "● reconnecting DNS lookup" in line and "(retry in 12s)" in line
    assert line.index("reconnecting") < line.index("DNS") < line.index("(retry in 12s)")
    if width >= 80:
        assert "binance" in line and "2 reconn" in line  # the feed and its trouble next
    if width >= 100:
        assert "history 12/40" in line
    if width < 160:
        assert REASON not in line and "…" in line
    else:  # the whole reason before the lesser parts
        assert REASON in line and "ticks/s" not in line and "tickdeck" not in line
    assert render_header(state(), 250).plain.startswith("tickdeck  binance")  # room for everything


def test_a_reason_that_fits_is_whole_and_the_lesser_parts_give_way_first() -> None:
    live = state(state="live", reason="", retry_at_ns=0, paused=True)
    assert render_header(live).plain == render_header(live, 160).plain  # room for everything: all of it
    narrow = render_header(live, 60).plain
    assert narrow.startswith("binance ● live  ") and narrow.endswith("⏸ PAUSED")
    assert "history 12/40" in narrow and "tickdeck" not in narrow and "1m bars" not in narrow
    short = render_header(state(reason="dropped"), 80).plain
    assert "● reconnecting dropped (retry in 12s)" in short


def test_even_a_tiny_width_keeps_the_state_and_countdown() -> None:
    line = render_header(state(), 30).plain
    assert line.startswith("● reconnecting") and "(retry in 12s)" in line
