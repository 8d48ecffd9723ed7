"""Windows taller or wider than an 80x24 terminal scroll with their keys from the moment they open.

The app focuses nothing by itself (``AUTO_FOCUS = None``), so a window that does not take the keyboard
for its scrolling container ignores ↓, pgdn and end until tab is pressed. Each test reads the screen as
drawn (the active screen's compositor) to check that the last entry really comes into view.

Waits are on conditions (``support.wait_for``); nothing asserts how long anything took.
"""

from __future__ import annotations

import functools

from textual.containers import ScrollableContainer, Vertical

from console.app import TickdeckApp, build_app
from engine.config import Config
from tests.functional.support import wait_for
from tests.functional.test_backtest_palette import ready, table_shown
from widgets.detail import Catalogue, DetailScreen
from widgets.help_screen import HelpScreen

SMALL = (80, 24)


def screen_text(app: TickdeckApp) -> str:
    """The active screen as drawn, one line per terminal row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_help_scrolls_with_end_and_pgdn_as_soon_as_it_opens(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.pause()
        box = app.screen.query_one("#help-scroll", ScrollableContainer)
        assert box.max_scroll_y > 0, "the help fits at 80x24: this test proves nothing"
        assert "Command palette" not in screen_text(app)

        await pilot.press("end")
        await wait_for(pilot, lambda: box.scroll_y == box.max_scroll_y, "the help's last page")
        assert "ctrl+p   Command palette" in screen_text(app)

        await pilot.press("home")
        await wait_for(pilot, lambda: box.scroll_y == 0, "the help's first page")
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: box.scroll_y > 0, "pgdn to scroll the help")
        assert "scroll" in str(box.border_subtitle)


async def test_backtest_scrolls_sideways_with_right_to_the_mae_column(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: ready(app), "history for the selected symbol")
        await pilot.press("b")
        await wait_for(pilot, functools.partial(table_shown, app), "the backtest table")
        await pilot.pause()
        box = app.screen.query_one("#backtest-scroll", ScrollableContainer)
        assert box.max_scroll_x > 0, "the table fits in 80 columns: this test proves nothing"
        assert "MAE20" not in screen_text(app) and "median" not in screen_text(app)

        await pilot.press("right")
        await wait_for(pilot, lambda: box.scroll_x > 1, "right to move about a column")
        for _ in range(box.max_scroll_x):
            if box.scroll_x == box.max_scroll_x:
                break
            await pilot.press("right")
        assert box.scroll_x == box.max_scroll_x
        shown = screen_text(app)
        assert "median" in shown and "MAE20" in shown
        await pilot.press("left")
        await wait_for(pilot, lambda: box.scroll_x < box.max_scroll_x, "left to scroll back")
        await pilot.press("end")
        await wait_for(pilot, lambda: box.scroll_y == box.max_scroll_y > 0, "end to reach the last rows")
        assert "← →" in str(app.screen.query_one(Vertical).border_subtitle)


async def test_detail_values_scroll_with_end_at_80x24(config: Config) -> None:
    app = build_app(config)
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: app.watchlist.selected is not None, "the watchlist's rows")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        await wait_for(pilot, lambda: screen.data is not None, "the symbol's values")
        await pilot.press("i")
        box = screen.query_one("#detail-values", ScrollableContainer)
        await wait_for(pilot, lambda: box.max_scroll_y > 0, "more values than rows")
        last = str(screen.query_one(Catalogue).render()).splitlines()[-1].split()[0]  # a name: values move
        assert last and last not in screen_text(app)
        await pilot.press("end")
        await wait_for(pilot, lambda: box.scroll_y == box.max_scroll_y, "the last values")
        assert last in screen_text(app)
