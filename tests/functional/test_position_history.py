"""The portfolio pane's line over the stored bars, beside the session's: read when the pane opens, as
users run it (``build_app`` on the seeded sim, whose bars are the ring's: it keeps no store)."""

from __future__ import annotations

import numpy as np

from console.app import TickdeckApp, build_app
from engine.config import Config
from engine.positions.history import HISTORY_BARS, POINTS
from tests.functional.support import wait_for
from tests.functional.test_positions import SIZE, enter, ready


async def test_the_pane_draws_the_total_pnl_over_the_stored_bars_beside_the_session(config: Config) -> None:
    app: TickdeckApp = build_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        symbol = app.watchlist.symbols[0]
        await enter(pilot, f"{symbol} 10 @ 100")
        assert app.portfolio.stored == ()  # read only while the pane shows
        await pilot.press("w")
        await wait_for(pilot, lambda: len(app.portfolio.stored) == POINTS, "the stored line")
        text = app.portfolio.render().plain.splitlines()
        assert text[0].startswith("P&L over the session ")
        assert text[1].startswith(f"P&L over the stored bars ({app.portfolio.stored_span})")
        assert any(ch in text[1] for ch in "▁▂▃▄▅▆▇█")
        assert symbol in text[2]  # the allocation bars follow
        runtime = app.runtime
        assert runtime is not None
        copied = await runtime.closed_bars(symbol, HISTORY_BARS)
        assert copied is not None
        # today's holding at the newest bar the worker read (a second or two ago: still in the ring)
        pnl = 10.0 * copied.bars[:, 3] - 1000.0
        assert np.isclose(pnl, app.portfolio.stored[-1], rtol=0, atol=1e-9).any()
        height = app.portfolio.get_content_height(None, None, 80)
        assert height == len(app.portfolio.rows) + 3  # one line more than the session's alone
