"""The detail pane driven with Pilot: a real Engine fed by the seeded sim (on the event loop, so the fetch
reads it between batches as the runtime's engine thread would), at 80x24 and 160x48, in every theme.

Waits are on conditions (``support.wait_for``); nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.color import ColorType
from textual.app import App, ComposeResult
from textual.widgets import Static, Tab
from textual.widgets._footer import FooterKey

from engine.chart_data import ChartData, chart_data
from engine.config import Config, parse_interval
from engine.feeds.base import HistoryBars
from engine.feeds.registry import build_feed
from engine.runtime import build_engine
from engine.tick_engine import Engine
from engine.ticks import NO_BAR
from tests.data import Bars
from tests.functional.support import wait_for
from tests.unit.oracle import TALIB, assert_matches, scale_for
from themes import THEME_NAMES, register_themes
from widgets import formatting as fmt
from widgets.candles import CandleChart
from widgets.detail import CHART_BARS, Catalogue, DetailScreen, duration_label, timeframe_choices

TIMEFRAMES = [("1s", 1), ("5s", 5), ("15s", 15), ("1m", 60)]
NARROW, WIDE = (80, 24), (160, 48)


class Host(App[None]):
    """The screen under the detail pane (what ``escape`` returns to)."""

    def compose(self) -> ComposeResult:
        yield Static("main", id="main")

    def on_mount(self) -> None:
        register_themes(self)
        self.theme = "dark"


@contextlib.asynccontextmanager
async def fed_engine(config: Config) -> AsyncIterator[tuple[Engine, str]]:
    """An engine built as the runtime builds it, fed by the sim (backfill first) in a task."""
    engine = build_engine(config)
    feed = build_feed(config, engine)

    async def pump() -> None:
        async for item in feed.stream():
            if isinstance(item, np.ndarray):
                engine.ingest(item)
            elif isinstance(item, HistoryBars):
                engine.ingest_history(item.bars)
            now = feed.now_ns()
            engine.close_due(now - now % engine.interval_ns)

    task = asyncio.create_task(pump())
    try:
        yield engine, feed.universe()[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Fetch = Callable[[str, int], Awaitable[ChartData | None]]


def engine_fetch(engine: Engine, calls: list[tuple[str, int]]) -> Fetch:
    async def fetch(symbol: str, factor: int) -> ChartData | None:
        calls.append((symbol, factor))
        return chart_data(engine, symbol, factor, CHART_BARS)

    return fetch


def title(screen: DetailScreen) -> str:
    return str(screen.query_one("#detail-title", Static).render())


async def chart_lines(pilot: Any, screen: DetailScreen) -> list[str]:
    """The chart's lines once the one for the current data is built (plotext draws in a thread)."""
    chart = screen.query_one(CandleChart)
    chart.render()  # starts the build of what is current, if it is not built yet
    await wait_for(pilot, lambda: chart.current, "the chart drawn")
    return chart.render().plain.split("\n")


def highlighted(screen: DetailScreen) -> list[str]:
    """The title's text drawn reversed: the chosen timeframe."""
    content = screen.query_one("#detail-title", Static).visual
    plain = str(content)
    return [plain[s.start:s.end].strip() for s in getattr(content, "spans", []) if "reverse" in str(s.style)]


def loaded(screen: DetailScreen, factor: int, interval_ns: int) -> bool:
    data = screen.data
    return data is not None and data.timeframe_ns == factor * interval_ns and len(data) > 0


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["80x24", "160x48"])
async def test_open_switch_timeframe_and_go_back(config: Config, size: tuple[int, int]) -> None:
    interval = parse_interval(config.engine.interval)
    calls: list[tuple[str, int]] = []
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=size) as pilot:
        main = app.screen
        screen = DetailScreen(symbol, engine_fetch(engine, calls), TIMEFRAMES)
        await app.push_screen(screen)
        await wait_for(pilot, lambda: loaded(screen, 1, interval), "the first chart")
        data, text = screen.data, title(screen)  # read together: a refresh redraws both
        assert data is not None and calls[0] == (symbol, 1)
        assert text.startswith(f"{symbol}  {fmt.price(float(data.ohlcv[-1, 3]))}  ")
        assert highlighted(screen) == ["1s"]

        chart = screen.query_one(CandleChart)
        width, height = chart.size
        lines = await chart_lines(pilot, screen)
        assert width > 40 and height >= 15 and len(lines) == height
        assert all(len(line) == width for line in lines)  # nothing wider than the widget
        assert chart.region.right <= size[0] and chart.region.bottom <= size[1] - 1  # above the footer
        assert lines[0].startswith("SMA 20 ") and any(line.startswith("RSI 14 ") for line in lines)
        if size == WIDE:
            assert any(line.startswith("MACD ") for line in lines)
        else:  # no room for a MACD panel: its values follow the RSI's
            assert any(line.startswith("RSI 14 ") and "  MACD " in line for line in lines)
        values = screen.query_one("#detail-values")
        footer_keys = {b.binding.key for b in screen.active_bindings.values() if b.enabled}
        assert {"escape", "left_square_bracket", "right_square_bracket", "f"} <= footer_keys
        if size == NARROW:
            assert screen.has_class("-narrow") and not values.display
            assert screen.query_one("#detail-tabs").display and "i" in footer_keys
        else:
            assert not screen.has_class("-narrow") and values.display
            assert chart.region.right <= values.region.x  # side by side
            assert not screen.query_one("#detail-tabs").display and "i" not in footer_keys

        before = await chart_lines(pilot, screen)
        await pilot.press("right_square_bracket")
        assert screen.timeframe == "5s" and highlighted(screen) == ["5s"]
        await wait_for(pilot, lambda: loaded(screen, 5, interval), "the 5s chart")
        await pilot.pause()
        assert calls[-1] == (symbol, 5)
        five = screen.data
        assert five is not None and len(five) < len(data)  # five one-second bars make one
        after = await chart_lines(pilot, screen)
        assert after != before
        assert all(len(line) == width for line in after)

        await pilot.press("escape")
        assert app.screen is main


async def test_keys_cycle_the_timeframes_both_ways(config: Config) -> None:
    calls: list[tuple[str, int]] = []
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        screen = DetailScreen(symbol, engine_fetch(engine, calls), TIMEFRAMES)
        await app.push_screen(screen)
        seen = []
        for key in ("f", "f", "f", "f", "left_square_bracket", "left_square_bracket"):
            await pilot.press(key)
            seen.append(screen.timeframe)
        assert seen == ["5s", "15s", "1m", "1s", "1m", "15s"]
        interval = parse_interval(config.engine.interval)
        await wait_for(pilot, lambda: loaded(screen, 15, interval), "the 15s chart")
        assert calls[-1] == (symbol, 15)


async def test_narrow_tabs_switch_to_every_value_of_the_catalogue(config: Config) -> None:
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        screen = DetailScreen(symbol, engine_fetch(engine, []), TIMEFRAMES)
        await app.push_screen(screen)
        await wait_for(pilot, lambda: screen.data is not None, "the first chart")
        await pilot.press("i")
        await pilot.pause()
        catalogue = screen.query_one(Catalogue)
        assert screen.query_one("#detail-values").display and not screen.query_one(CandleChart).display
        text = str(catalogue.render())
        assert set(catalogue.values) == set(engine.bank.names)
        for name in engine.bank.names:
            assert name[:19] in text
        assert all(len(line) <= catalogue.size.width for line in text.split("\n"))
        await pilot.press("i")
        await pilot.pause()
        assert screen.query_one(CandleChart).display and not screen.query_one("#detail-values").display


def footer_keys(screen: DetailScreen) -> dict[str, str]:
    """What the footer shows: key -> description."""
    return {key.key: key.description for key in screen.query(FooterKey)}


def resampled(t: np.ndarray, ohlcv: np.ndarray, seconds: int) -> Bars:
    """The oracle's resample: pandas on the epoch grid, empty periods dropped."""
    frame = pd.DataFrame(ohlcv, columns=list("ohlcv"), index=pd.to_datetime(t, unit="ns"))
    out = frame.resample(f"{seconds}s", origin="epoch").agg(
        {"o": "first", "h": "max", "l": "min", "c": "last", "v": "sum"}).dropna()
    return Bars(out.index.asi8, *(out[k].to_numpy() for k in "ohlcv"))


async def test_values_follow_the_timeframe_and_the_footer_names_the_other_tab(config: Config) -> None:
    """At 15s the Indicators tab lists the 15-second values (TA-Lib on the 15-second bars the fetch read),
    says so, and the footer's ``i`` names the tab it goes to."""
    fetched: list[tuple[ChartData | None, np.ndarray, np.ndarray]] = []
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        async def fetch(name: str, factor: int) -> ChartData | None:
            slot = engine.symbols.get(name)
            assert slot is not None
            t, ohlcv = engine.history.tail(slot)
            if engine.forming_start[slot] != NO_BAR:
                t = np.append(t, engine.forming_start[slot])
                ohlcv = np.vstack([ohlcv, engine.forming[slot][None, :]])
            data = chart_data(engine, name, factor, CHART_BARS)
            fetched.append((data, t, ohlcv))
            return data

        screen = DetailScreen(symbol, fetch, TIMEFRAMES)
        await app.push_screen(screen)
        interval = parse_interval(config.engine.interval)
        await wait_for(pilot, lambda: loaded(screen, 1, interval), "the first chart")
        tab = screen.query_one("#tab-values", Tab)
        assert tab.label.plain == "Indicators 1s"
        await wait_for(pilot, lambda: footer_keys(screen).get("i") == "Indicators", "i Indicators")
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.timeframe == "15s" and tab.label.plain == "Indicators 15s"
        await wait_for(pilot, lambda: loaded(screen, 15, interval), "the 15s values")
        await pilot.press("i")
        await wait_for(pilot, lambda: footer_keys(screen).get("i") == "Chart", "the footer to say i Chart")
        assert "Indicators" not in footer_keys(screen).values()

        catalogue = screen.query_one(Catalogue)
        data, shown, text = screen.data, dict(catalogue.values), str(catalogue.render())  # one frame's
        assert data is not None and shown == data.values
        assert text.split("\n")[0].strip() == "values at 15s"
        _, t, ohlcv = next(f for f in fetched if f[0] is data)
        bars = resampled(t, ohlcv, 15)
        assert bars.t.tolist()[-len(data):] == data.t.tolist()  # the bars the chart shows
        names = [name for name in engine.bank.names if name in TALIB]
        assert "rsi_14" in names and len(names) >= 5
        for name in names:
            want = TALIB[name](bars)[-1:]  # a forming period: its value if it closed now
            assert_matches(name, np.array([shown[name]]), want, scale_for(name, bars))
        slot = engine.symbols.get(symbol)
        assert slot is not None
        one_second = engine.bank.values(slot, provisional=data.forming)
        assert shown["rsi_14"] != one_second["rsi_14"]  # not the engine's own one-second value

        await pilot.press("i")
        await wait_for(pilot, lambda: footer_keys(screen).get("i") == "Indicators", "back to i Indicators")
        assert screen.query_one(CandleChart).display


async def test_at_80x24_the_chart_panels_are_tall_enough_and_no_row_is_blank(config: Config) -> None:
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        screen = DetailScreen(symbol, engine_fetch(engine, []), TIMEFRAMES)
        await app.push_screen(screen)
        await wait_for(pilot, lambda: screen.data is not None and len(screen.data) > 60, "60 bars")
        lines = await chart_lines(pilot, screen)
        assert len(lines) == 20  # 24 rows less the title, the tabs and the footer
        price, rsi = 0, next(y for y, line in enumerate(lines) if line.startswith("RSI 14 "))
        assert lines[price].startswith("SMA 20 ") and "  MACD " in lines[rsi]
        assert rsi - price - 1 >= 12 and len(lines) - 1 - rsi - 1 >= 5  # plot rows under each legend
        label = lines[price + 1].index(" ", lines[price + 1].index(".")) + 1  # past the first price label
        over = next(y for y in range(rsi, len(lines)) if lines[y].lstrip().startswith("70 "))
        under = next(y for y in range(over, len(lines)) if lines[y].lstrip().startswith("30 "))
        for y, line in enumerate(lines[:-1]):
            # the RSI panel spans the range the RSI took, widened to 30 and 70: a row between those
            # two lines is blank when the RSI did not reach its band; none outside them is wasted
            if not over < y < under:
                assert line[label:].strip(), f"row {y} of the chart is blank: {lines}"
        assert lines[-1].strip()  # the time axis


async def test_no_data_shows_a_message_instead_of_a_chart() -> None:
    async def nothing(symbol: str, factor: int) -> ChartData | None:
        return None

    app = Host()
    async with app.run_test(size=NARROW) as pilot:
        screen = DetailScreen("ZZZ", nothing, TIMEFRAMES)
        await app.push_screen(screen)
        await wait_for(pilot, lambda: "No chart for ZZZ" in str(
            screen.query_one("#detail-message", Static).render()), "the message")
        assert screen.query_one("#detail-message").display and not screen.query_one("#detail-body").display
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_one_fetch_at_a_time_and_the_latest_timeframe_wins(config: Config) -> None:
    """A slow fetch: timer ticks meanwhile start nothing; timeframe changes meanwhile make its result
    stale, and the one fetch that follows is for the newest choice."""
    gate = asyncio.Event()
    calls: list[int] = []
    running = [0, 0]  # now, most at once

    async def slow(symbol: str, factor: int) -> ChartData | None:
        calls.append(factor)
        running[0] += 1
        running[1] = max(running[1], running[0])
        try:
            await gate.wait()
            return chart_data(engine, symbol, factor, CHART_BARS)
        finally:
            running[0] -= 1

    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        screen = DetailScreen(symbol, slow, TIMEFRAMES, refresh_s=0.05)
        ticks = [0]
        request = screen._request

        def counted(changed: bool = False) -> None:
            ticks[0] += 1
            request(changed)

        screen._request = counted  # type: ignore[method-assign]
        shown: list[ChartData | None] = []
        await app.push_screen(screen)
        screen.watch(screen.query_one(CandleChart), "data", shown.append, init=False)
        await wait_for(pilot, lambda: ticks[0] >= 6, "several refresh ticks")
        assert calls == [1]  # the ticks found the first fetch running
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert calls == [1]
        gate.set()
        await wait_for(pilot, lambda: screen.data is not None, "the chart")
        assert calls[:2] == [1, 15] and running[1] == 1
        assert all(d is None or d.timeframe_ns // parse_interval(config.engine.interval) == 15 for d in shown)


async def test_a_failing_fetch_is_shown_and_refreshing_waits_for_the_user(config: Config) -> None:
    calls: list[int] = []
    notes: list[str] = []

    async def flaky(symbol: str, factor: int) -> ChartData | None:
        calls.append(factor)
        if factor == 1:
            raise RuntimeError("the engine is gone")
        return chart_data(engine, symbol, factor, CHART_BARS)

    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        notify = app.notify

        def spy(message: str, **kwargs: Any) -> None:
            notes.append(str(message))
            notify(message, **kwargs)

        app.notify = spy  # type: ignore[method-assign]
        screen = DetailScreen(symbol, flaky, TIMEFRAMES, refresh_s=0.05)
        await app.push_screen(screen)
        message = screen.query_one("#detail-message", Static)
        await wait_for(pilot, lambda: "Could not load" in str(message.render()), "the error")
        assert "the engine is gone" in str(message.render()) and notes == ["the engine is gone"]
        count = len(calls)
        await pilot.pause(0.3)
        assert len(calls) == count  # paused: no retry every tick, no stream of notifications
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: screen.data is not None and not screen.message, "the 5s chart")
        assert calls[count] == 5


@pytest.mark.parametrize("theme", THEME_NAMES)
async def test_chart_colours_follow_the_theme(config: Config, theme: str) -> None:
    app = Host()
    async with fed_engine(config) as (engine, symbol), app.run_test(size=NARROW) as pilot:
        screen = DetailScreen(symbol, engine_fetch(engine, []), TIMEFRAMES)
        await app.push_screen(screen)
        await wait_for(pilot, lambda: screen.data is not None, "the chart")
        app.theme = theme
        await pilot.pause()
        styles = screen.query_one(CandleChart).styles_by_role()
        assert styles["up"].color != styles["down"].color
        assert styles["up"].color is not None and styles["down"].color is not None
        if theme == "ansi16":
            colours = [s.color for s in styles.values() if s.color is not None]
            assert colours and all(c.type in (ColorType.STANDARD, ColorType.DEFAULT) for c in colours)
        await chart_lines(pilot, screen)
        rendered = screen.query_one(CandleChart).render()
        assert any(span.style == styles["up"] for span in rendered.spans)  # drawn with this theme's styles


async def test_fetch_through_the_running_runtime_on_its_engine_thread(config: Config) -> None:
    """As the console wires it: ``runtime.call`` runs ``chart_data`` on the engine's own thread."""
    from engine.runtime import Runtime

    runtime = Runtime(config)
    symbol = runtime.watch[0]
    calls: list[int] = []

    async def fetch(name: str, factor: int) -> ChartData | None:
        calls.append(factor)
        return await runtime.call(chart_data, runtime.engine, name, factor, CHART_BARS)

    app = Host()
    async with app.run_test(size=WIDE) as pilot:
        task = asyncio.create_task(runtime.run(lambda update: None, lambda status: None))
        try:
            screen = DetailScreen(symbol, fetch, TIMEFRAMES)
            await app.push_screen(screen)
            interval = parse_interval(config.engine.interval)
            await wait_for(pilot, lambda: loaded(screen, 1, interval) and len(calls) >= 2, "two refreshes")
            await pilot.press("right_square_bracket")
            await wait_for(pilot, lambda: loaded(screen, 5, interval), "the 5s chart")
            data = screen.data
            assert data is not None and set(data.values) == set(runtime.engine.bank.names)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_timeframe_choices_are_whole_multiples_the_history_can_fill() -> None:
    sec, minute = 1_000_000_000, 60_000_000_000
    assert timeframe_choices(minute, 2000) == [("1m", 1), ("5m", 5), ("15m", 15), ("30m", 30), ("1h", 60)]
    assert timeframe_choices(sec, 2000) == [("1s", 1), ("5s", 5), ("15s", 15), ("30s", 30), ("1m", 60)]
    assert timeframe_choices(minute, 200) == [("1m", 1), ("5m", 5)]  # 15m: only 13 bars
    assert timeframe_choices(2 * sec, 2000, most=3) == [("2s", 1), ("30s", 15), ("1m", 30)]  # 5s, 15s: no
    assert timeframe_choices(86_400 * sec, 2000) == [("1d", 1), ("1w", 7)]
    assert timeframe_choices(7 * sec, 10) == [("7s", 1)]
    assert duration_label(90 * sec) == "90s" and duration_label(3 * 3600 * sec) == "3h"


def test_the_title_says_why_the_chart_has_fewer_bars_than_it_could_show() -> None:
    from widgets.detail import render_title

    note = "3 bars: 535 in memory, the sim feed keeps no bar store"
    t = np.arange(3, dtype=np.int64) * 3_600_000_000_000
    data = ChartData("AAA", 3_600_000_000_000, t, np.ones((3, 5)), {}, {}, False, note=note)
    assert render_title("AAA", data, ["1m", "1h"], 1).plain.endswith(f" 1h    {note}")
    quiet = ChartData("AAA", 3_600_000_000_000, t, np.ones((3, 5)), {}, {}, False)
    assert render_title("AAA", quiet, ["1m", "1h"], 1).plain.endswith(" 1h ")  # nothing to say
