"""The performance panel in a running app: every figure on screen at 80x24 (one column) and 160x48 (two
columns), coloured by threshold through the theme in every theme, and fed by a real PerfMonitor."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from rich.color import ColorType
from rich.style import Style
from textual.app import App, ComposeResult

from console.perf import CacheRate, PerfMonitor, PerfSample
from engine.snapshot import PipelineHealth
from themes import THEME_NAMES, register_themes
from widgets.perf_panel import PerfPanel, line_text, perf_lines

BASE = PerfSample(
    at=0.0, cpu_percent=37.0, rss_bytes=215_300_000, bytes_per_s=12_300.0, bytes_total=1_000_000,
    ticks_in_per_s=2013.0, ticks_processed_per_s=2013.0, backlog=0, engine_p50_us=120.0,
    engine_p99_us=4500.0, signal_p50_ms=3.1, signal_p99_ms=12.0, lag_p50_ms=1.2, lag_p99_ms=5.0,
    loop_lag_ms=2.1, frame_p50_ms=3.2, frame_max_ms=9.1, queue_depth=2, queue_depth_max=7, coalesced=12,
    coalesced_per_s=0.0, gc_per_s=4.0, gc_collections=(310, 28, 3), caches=(CacheRate("rows", 0.982, 1200),),
    feed="binance", reconnects=1, bad_messages=5, gaps=0, duplicates=0,
)
FIGURES = {  # label -> what its value reads
    "CPU": "37%", "memory": "215 MB GC 4.0/s", "output": "12.3 KB/s", "ticks in": "2.01K/s",
    "processed": "2.01K/s", "engine": "p50 120µs p99 4.5ms", "tick→signal": "p50 3.1ms p99 12ms",
    "pipe lag": "p50 1.2ms p99 5.0ms", "loop lag": "2.1ms", "frame": "3.2ms max 9.1ms",
    "queue": "2 max 7 coal 12", "cache rows": "98% of 1.20K", "binance feed": "reconn 1 bad 5",
}
BLOCKS = "▁▂▃▄▅▆▇█"


def history(n: int = 40) -> tuple[PerfSample, ...]:
    return tuple(dataclasses.replace(BASE, at=i * 0.5, cpu_percent=10.0 + i, loop_lag_ms=float(i % 5))
                 for i in range(n))


class PanelApp(App[None]):
    def __init__(self, theme: str = "dark") -> None:
        super().__init__()
        register_themes(self)
        self.theme = theme
        self.panel = PerfPanel()

    def compose(self) -> ComposeResult:
        yield self.panel


def screen_lines(app: App[Any]) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


def style_at(app: App[Any], text: str) -> Style:
    """The style the screen draws the first cell of ``text`` in."""
    for y, line in enumerate(screen_lines(app)):
        if (x := line.find(text)) >= 0:
            return app.screen._compositor.get_style_at(x, y)
    raise AssertionError(f"{text!r} is not on screen")


async def test_every_figure_fits_one_column_at_80x24() -> None:
    app = PanelApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert any("measuring…" in line for line in screen_lines(app))
        app.panel.history = history()
        app.panel.sample = BASE
        await pilot.pause()
        lines = screen_lines(app)
        for label, value in FIGURES.items():
            row = [line for line in lines if line[1:].startswith(label)]  # one cell of padding first
            assert len(row) == 1, f"{label} is not on one row of the screen"
            assert value in row[0], f"{label}: {value!r} not in {row[0]!r}"
            assert any(block in row[0] for block in BLOCKS), f"{label} has no sparkline"
        assert len([line for line in lines if line.strip()]) == len(FIGURES) <= 24


async def test_two_columns_at_160x48_with_wider_sparklines() -> None:
    app = PanelApp()
    async with app.run_test(size=(160, 48)) as pilot:
        app.panel.history = history()
        app.panel.sample = BASE
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        for label, value in FIGURES.items():
            assert label in text and value in text
        first = next(line for line in screen_lines(app) if "CPU" in line)
        assert "pipe lag" in first  # the second column starts beside the first row
        assert len([line for line in screen_lines(app) if line.strip()]) == (len(FIGURES) + 1) // 2
        narrow = max(len(line_text(line).rstrip()) for line in perf_lines(BASE, history(), 78))
        assert narrow <= 78 and all(len(line_text(line)) <= 158 for line in perf_lines(BASE, history(), 158))


@pytest.mark.parametrize("theme", THEME_NAMES)
async def test_thresholds_colour_values_through_the_theme(theme: str) -> None:
    app = PanelApp(theme)
    trouble = dataclasses.replace(BASE, cpu_percent=99.0, frame_max_ms=70.0, queue_depth=1)
    async with app.run_test(size=(80, 24)) as pilot:
        app.panel.sample = trouble
        await pilot.pause()
        bad, warn, fine = style_at(app, "99%"), style_at(app, "3.2ms max"), style_at(app, "1 max 7 coal")
        panel = app.panel
        assert bad.color == panel.get_component_rich_style("perf-panel--bad").color
        assert warn.color == panel.get_component_rich_style("perf-panel--warn").color
        assert len({bad.color, warn.color, fine.color}) == 3  # bad, warning and fine look different
        if theme == "ansi16":  # the terminal's own 16 colours, nothing else
            assert all(s.color is not None and s.color.type in (ColorType.STANDARD, ColorType.DEFAULT)
                       for s in (bad, warn, fine))


async def test_a_new_theme_recolours_the_panel() -> None:
    app = PanelApp("dark")
    async with app.run_test(size=(80, 24)) as pilot:
        app.panel.sample = dataclasses.replace(BASE, cpu_percent=99.0)
        await pilot.pause()
        dark = style_at(app, "99%").color
        app.theme = "light"
        await pilot.pause()
        await pilot.pause()
        assert style_at(app, "99%").color not in (dark, None)


class MonitoredApp(PanelApp):
    """How the console wires it: a monitor started on mount, one sample per snapshot into the panel."""

    def __init__(self) -> None:
        super().__init__()
        self.perf = PerfMonitor(rate=1000.0)  # a sample on every call, so the test need not wait

    def on_mount(self) -> None:
        self.perf.start(self)

    def snapshot_arrived(self, health: PipelineHealth) -> None:
        self.perf.frame_begin()
        sample = self.perf.sample(health)
        self.panel.history = self.perf.history
        self.panel.sample = sample


async def test_a_monitor_feeds_the_panel_in_a_running_app() -> None:
    app = MonitoredApp()
    async with app.run_test(size=(100, 30)) as pilot:
        for i in range(1, 6):
            app.snapshot_arrived(PipelineHealth(feed="sim", ticks_in=1000 * i, ticks_processed=1000 * i - 50,
                                                engine_p50_us=90.0, engine_p99_us=350.0))
            await pilot.pause(0.01)
        text = "\n".join(screen_lines(app))
        assert "p50 90µs p99 350µs" in text and "50 behind" in text and "sim feed" in text
        assert app.perf.bytes.total > 0 and len(app.perf.history) == 5
        assert app.panel.sample is app.perf.history[-1]
        assert app.panel.sample.frame_max_ms >= 0.0  # frames were timed to the refresh


def glyph_runs(line: str) -> list[tuple[int, int]]:
    """(start, end) of each run of sparkline blocks in ``line`` (spaces inside a run, a missing point,
    do not end it)."""
    runs: list[tuple[int, int]] = []
    for x, ch in enumerate(line):
        if ch in BLOCKS:
            if runs and not line[runs[-1][1]:x].strip():
                runs[-1] = (runs[-1][0], x + 1)
            else:
                runs.append((x, x + 1))
    return runs


async def console_panel(size: tuple[int, int], make_config: Any) -> tuple[list[str], int, int, bool]:
    """The real console's performance pane at ``size`` once three samples are in: its lines (the pane's
    whole width, scrollbar included), the panel's width in them, its inner width, and whether the pane
    shows a vertical scrollbar."""
    from console.app import build_app
    from tests.functional.support import wait_for

    app = build_app(make_config())
    async with app.run_test(size=size) as pilot:
        if size[0] < 120:
            await pilot.press("p")  # the panel shares the lower pane with the signal log: swap them in
        panel = app.perf_panel
        await wait_for(pilot, lambda: len(panel.history) >= 3 and panel.sample is panel.history[-1],
                       "three samples")
        await pilot.pause()
        pane = app.query_one("#perf")
        region = pane.content_region
        lines = [line[region.x:region.right] for line in screen_lines(app)[region.y:region.bottom]]
        return lines, panel.region.right - region.x, panel.content_size.width, pane.show_vertical_scrollbar


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
async def test_sparklines_span_the_panel_and_nothing_strays(size: tuple[int, int], make_config: Any) -> None:
    lines, panel_width, inner, scrollbar = await console_panel(size, make_config)
    drawn = 0
    for line in lines:
        runs = glyph_runs(line[:panel_width])
        if not runs:
            continue
        drawn += 1
        assert line[1:13].strip(), f"sparkline glyphs without a label: {line!r}"
        assert len(runs) == 1, f"more than one run of blocks: {line!r}"
        start, end = runs[0]
        assert end - start >= inner / 2, f"a sparkline {end - start} cells wide in {inner}: {line!r}"
    assert drawn >= 3  # CPU, memory and output are measured from the first sample
    if size == (160, 48):  # beside the signal log: every row fits, so no scrollbar (its thumb read ▅▅)
        assert not scrollbar
        assert not any(ch in BLOCKS for line in lines for ch in line[panel_width:])
        text = "\n".join(lines)
        assert all(label in text for label in ("CPU", "queue", "cache rows", "sim feed"))
