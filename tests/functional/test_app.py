"""The console as users run it: built by ``build_app``, driven with Pilot on the seeded sim.

Every wait is on a condition (see ``support.wait_for``), never a fixed sleep, and nothing asserts how
long anything took.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np

from console.app import DEFAULT_ROWS, RUNTIME_GROUP, TickdeckApp, build_app
from engine.config import Config
from engine.feeds.base import Feed, FeedStatus
from engine.runtime import Runtime, build_engine
from tests.functional.support import wait_for
from themes import THEME_NAMES
from widgets.formatting import MISSING
from widgets.help_screen import HelpScreen

SIZE = (100, 30)
ROOT = Path(__file__).resolve().parents[2]


def rows(app: TickdeckApp) -> dict[str, list[str]]:
    """What the watchlist's rows show, by symbol: each cell's text."""
    return app.watchlist.rows_text()


def priced(app: TickdeckApp) -> bool:
    """Every row of the watched symbols shows a price."""
    shown = rows(app)
    watched = app.runtime.watch if app.runtime is not None else ()
    return bool(watched) and set(shown) == set(watched) and all(r[1] != MISSING for r in shown.values())


class BrokenFeed(Feed):
    """A feed whose connection fails right after it starts."""

    name = "broken"

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "connecting")
        raise ConnectionError("connection refused by 127.0.0.1:9")

    def universe(self) -> tuple[str, ...]:
        return ("AAA", "BBB")


async def test_first_snapshot_shows_every_symbol_with_a_price(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.watchlist.message == "starting engine…"
        await wait_for(pilot, lambda: app.watchlist.snapshot is not None, "the first snapshot")
        await wait_for(pilot, lambda: priced(app), "a price for every symbol")
        assert app.runtime is not None
        assert list(rows(app)) == list(app.runtime.watch)
        # a simulated market's first watchlist holds its first DEFAULT_ROWS symbols; `a` adds others
        assert list(app.runtime.watch) == list(app.runtime.feed.universe()[:DEFAULT_ROWS])
        assert config.feeds.sim.symbols > DEFAULT_ROWS
        assert app.watchlist.rows.display and app.watchlist.rows.has_focus
        await wait_for(pilot, lambda: app.header.state == "live", "the feed to be live")
        await wait_for(pilot, lambda: math.isfinite(app.header.tick_rate), "a tick rate")
        assert app.header.clock_ns > 0 and app.header.feed == "sim"
        workers = [w for w in app.workers if w.group == RUNTIME_GROUP]
        assert len(workers) == 1 and workers[0].is_running


async def test_space_freezes_the_display_while_the_runtime_keeps_running(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: priced(app), "a price for every symbol")

        await pilot.press("space")
        assert app.paused and app.header.paused
        frozen, frames = rows(app), app.frames
        await wait_for(pilot, lambda: app.frames >= frames + 5, "more snapshots while paused")
        assert rows(app) == frozen

        await pilot.press("space")
        assert not app.paused and not app.header.paused
        await wait_for(pilot, lambda: rows(app) != frozen, "the display to move again")


async def test_question_mark_opens_help_and_escape_closes_it(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        main = app.screen
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = str(app.screen.query_one("#help-keys").render())
        for text in ("Quit", "Pause", "Help", "Next theme", "space"):
            assert text in keys
        await pilot.press("escape")
        assert app.screen is main


def cell_styles(app: TickdeckApp) -> list[str]:
    """The styles of the first rows as drawn on screen."""
    view = app.watchlist.rows
    return [str(seg.style) for y in range(3) for seg in view.render_line(y)]


def restyled(app: TickdeckApp, before: list[str]) -> bool:
    return cell_styles(app) != before


async def test_t_cycles_through_the_themes_and_recolours_the_cells(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "dark"
        await wait_for(pilot, lambda: priced(app), "a price for every symbol")
        await pilot.press("space")  # hold the values still, so only the theme changes the cells
        seen = []
        for _ in THEME_NAMES:
            before = cell_styles(app)
            await pilot.press("t")
            seen.append(app.theme)
            await wait_for(pilot, functools.partial(restyled, app, before), f"new colours for {app.theme}")
        assert seen == [*THEME_NAMES[1:], THEME_NAMES[0]]


async def test_theme_from_config(make_config: Callable[..., Config]) -> None:
    app = build_app(make_config({"ui.theme": "high-contrast"}))
    async with app.run_test(size=SIZE):
        assert app.theme == "high-contrast"


async def test_q_quits(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0


async def test_a_feed_that_raises_is_shown_and_the_app_stays_up(config: Config) -> None:
    engine = build_engine(config)
    runtime = Runtime(config, engine, BrokenFeed(engine.symbols))
    app = build_app(config, runtime)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: app.header.state == "failed", "the error on the header line")
        assert "connection refused" in app.header.reason
        assert "connection refused" in app.watchlist.message
        await wait_for(pilot, lambda: bool(app.screen.query("Toast")), "the error notification")
        assert app.is_running
        await pilot.press("t")
        assert app.theme == THEME_NAMES[1]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


async def test_an_unavailable_feed_is_an_error_on_screen_not_a_crash(
        make_config: Callable[..., Config]) -> None:
    app = build_app(make_config({"feed.name": "replay", "feeds.replay.file": ""}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.header.state == "failed", "the error on the header line")
        assert "replay" in app.header.reason
        assert app.is_running


async def test_fits_80_by_24_without_sideways_scrolling(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: priced(app), "a price for every symbol")
        view = app.watchlist.rows
        assert view.virtual_size.width <= view.size.width
        assert not view.show_horizontal_scrollbar
        assert all(seg.cell_length <= 80 for seg in view.render_line(0))


def test_importing_the_app_loads_no_engine() -> None:
    """The window must appear before numpy and numba load: the worker imports them later."""
    code = ("import sys, console.app; heavy = {'numpy', 'numba', 'engine.runtime'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_note_on_some_symbols_never_hides_the_whole_feeds_trouble(config: Config) -> None:
    """Per-symbol statuses (a symbol without history, a stale quote) show while the feed is up; while
    the whole feed is reconnecting, they must not turn the header back to live."""
    from console.messages import FeedStatusChanged

    app = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        header = app.header
        await wait_for(pilot, lambda: header.state == "live", "the sim's own status, before ours")
        note = FeedStatus("sim", "live", "AAPL: no history (refused)", symbols=("AAPL",))
        app.on_feed_status_changed(FeedStatusChanged(FeedStatus("sim", "reconnecting", "dropped", 3.0)))
        app.on_feed_status_changed(FeedStatusChanged(note))
        await pilot.pause()
        assert (header.state, header.reason) == ("reconnecting", "dropped")
        app.on_feed_status_changed(FeedStatusChanged(FeedStatus("sim", "live")))
        app.on_feed_status_changed(FeedStatusChanged(note))
        await pilot.pause()
        assert (header.state, header.reason) == ("live", "AAPL: no history (refused)")
