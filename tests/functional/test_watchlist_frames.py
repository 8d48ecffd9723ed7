"""What one frame costs the watchlist: the rows it marks for redrawing, and in how many calls.

A frame in which every visible row ticks is the console's steady state at a thousand symbols; each
``refresh`` call on the rows also drops their style and layout caches, so the frame marks every changed
span in one call, and adjacent changed cells as one span (the terminal gets the same cells either way).
The screen is read back to check the cells redrawn are the new ones.
"""

from __future__ import annotations

import numpy as np
from textual.app import App, ComposeResult
from textual.geometry import Region

from engine.snapshot import MarketSnapshot, Quote
from tests.functional.support import wait_for
from widgets.watchlist import Watchlist
from widgets.watchlist_layout import GAP, row_cells

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def quote(symbol: str, last: float, volume: float = 1_000.0) -> Quote:
    closes = np.linspace(100.0, last, 30)
    closes.flags.writeable = False
    return Quote(symbol, last, last - 100.0, last - 100.0, volume, closes, {"rsi_14": 50.0}, 0, 2)


def snapshot(at: int, **last: float) -> MarketSnapshot:
    return MarketSnapshot(at, tuple(quote(s, last.get(s, 100.5)) for s in SYMBOLS), 0, 0)


class ListApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Watchlist(indicators=("rsi_14",), id="watchlist")


def screen_lines(app: App[None]) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def test_a_frame_marks_each_rows_run_of_changed_cells_in_one_refresh() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 12)) as pilot:
        watchlist = app.query_one(Watchlist)
        watchlist.symbols = SYMBOLS
        watchlist.snapshot = snapshot(1)
        await wait_for(pilot, lambda: any("100.50" in line for line in screen_lines(app)), "the first frame")
        rows = watchlist.rows
        calls: list[tuple[Region, ...]] = []
        refresh = rows.refresh

        def spy(*regions: Region, **kwargs: bool) -> object:
            calls.append(regions)
            return refresh(*regions, **kwargs)

        rows.refresh = spy  # type: ignore[method-assign]
        watchlist.snapshot = snapshot(2, BBB=101.25, DDD=99.75)  # two rows tick; the others do not
        assert len(calls) == 1, calls
        specs = watchlist._specs
        keys = [spec.key for spec in specs]
        changed = [k for k, a, b in zip(keys, row_cells("BBB", quote("BBB", 100.5), None, specs),
                                        row_cells("BBB", quote("BBB", 101.25), None, specs), strict=True)
                   if a != b]
        assert changed[:3] == ["last", "change", "change_pct"], changed  # adjacent: one span
        first = keys.index("last")
        x = sum(spec.width + GAP for spec in specs[:first])
        regions = calls[0]
        assert {r.y for r in regions} == {1, 3}  # only the rows that ticked (screen lines 1 and 3)
        bbb = sorted((r for r in regions if r.y == 1), key=lambda r: r.x)
        width = sum(spec.width + GAP for spec in specs[first:first + 3])
        assert len(bbb) == 1 and bbb[0].x == x and bbb[0].width == width
        await wait_for(pilot, lambda: any("BBB" in line and "101.25" in line for line in screen_lines(app)),
                       "BBB's new price on screen")
        assert any("DDD" in line and "99.75" in line for line in screen_lines(app))


def test_a_held_sparkline_cell_is_shown_as_given_and_the_rest_worked_out() -> None:
    from widgets.columns import Cell, ColumnSpec

    specs = (ColumnSpec("symbol", "Symbol", 6, "left"), ColumnSpec("last", "Last", 9),
             ColumnSpec("spark", "Trend", 8, "left"))
    held = Cell("▁▂▃", "up")
    fresh = row_cells("AAA", quote("AAA", 101.25), None, specs)
    kept = row_cells("AAA", quote("AAA", 101.25), None, specs, spark_cell=held)
    assert kept[2] is held and fresh[2] != held
    assert kept[:2] == fresh[:2]  # the price is new either way


async def test_the_portfolio_pane_lays_out_only_when_its_number_of_rows_changes() -> None:
    """The app hands the pane its rows every frame while it shows: equal rows draw nothing, new values
    redraw it, and only another number of rows (its height) asks for a layout of the screen."""
    from engine.positions.valuation import Totals
    from widgets.portfolio import Allocation, PortfolioPane

    class PaneApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PortfolioPane()

    totals = Totals(2, 300.0, 290.0, 10.0, 3.4, 1.0, 0.0, 2, 0, 0, {})
    app = PaneApp()
    async with app.run_test(size=(80, 12)) as pilot:
        pane = app.query_one(PortfolioPane)
        pane.totals = totals
        pane.rows = (Allocation("AAA", 200.0, 66.7, 2), Allocation("BBB", 100.0, 33.3, 2))
        await wait_for(pilot, lambda: "AAA" in "".join(screen_lines(app)), "the pane drawn")
        calls: list[bool] = []
        refresh = pane.refresh

        def spy(*regions: Region, layout: bool = False, **kwargs: bool) -> object:
            calls.append(layout)
            return refresh(*regions, layout=layout, **kwargs)

        pane.refresh = spy  # type: ignore[method-assign]
        pane.rows = (Allocation("AAA", 200.0, 66.7, 2), Allocation("BBB", 100.0, 33.3, 2))
        assert calls == []  # the same figures: nothing to draw
        pane.rows = (Allocation("AAA", 210.0, 67.7, 2), Allocation("BBB", 100.0, 32.3, 2))
        assert calls and not any(calls)  # redrawn, no layout
        calls.clear()
        pane.rows = (*pane.rows, Allocation("CCC", 5.0, 1.0, 2))
        assert any(calls)  # one more line: laid out again
        await wait_for(pilot, lambda: "CCC" in "".join(screen_lines(app)), "the third row drawn")
