"""The chart's drawing, a pure function of (data, width, height, styles), tested with no app running."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pytest
from rich.style import Style

from engine.chart_data import SERIES, ChartData
from widgets.candles import ROLES, Grid, Layout, chart_grid, draw_chart, layout, time_label

MIN = 60_000_000_000
T0 = 1_700_000_000 * 1_000_000_000 - (1_700_000_000 * 1_000_000_000) % MIN
STYLES: dict[str, Style] = {role: Style(color=f"color({i + 1})") for i, role in enumerate(ROLES)}
BRAILLE = range(0x2800, 0x2900)


def data(ohlcv: list[tuple[float, float, float, float, float]], timeframe: int = MIN,
         **series: list[float]) -> ChartData:
    n = len(ohlcv)
    full = {name: np.array(series.get(name, [math.nan] * n), dtype=np.float64) for name in SERIES}
    return ChartData("AAA", timeframe, T0 + np.arange(n, dtype=np.int64) * timeframe,
                     np.array(ohlcv, dtype=np.float64).reshape(n, 5), full, {}, False)


def walk(n: int, seed: int = 1) -> ChartData:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high, low = np.maximum(open_, close) * 1.003, np.minimum(open_, close) * 0.997
    rows = [tuple(r) for r in np.column_stack([open_, high, low, close, np.ones(n)]).tolist()]
    wave = np.sin(np.arange(n) / 5.0)
    warm = np.arange(n) >= 25
    series = {
        "sma_20": close * 0.999, "ema_20": close * 1.001, "bb_upper_20_2": close * 1.01,
        "bb_middle_20_2": close, "bb_lower_20_2": close * 0.99, "rsi_14": 50 + 40 * wave,
        "macd_12_26_9": wave, "macd_signal_12_26_9": 0.5 * wave, "macd_hist_12_26_9": 0.5 * wave,
    }
    return data(rows, **{k: np.where(warm, v, np.nan).tolist() for k, v in series.items()})


def axis_column(grid: Grid) -> int:
    """The price axis: the first muted ``│``/``┤`` on the plot's first row (wicks are up or down)."""
    return next(x for x, ch in enumerate(grid.chars[1]) if ch in "│┤" and grid.roles[1][x] == "muted")


def cells(grid_roles: Sequence[Sequence[str]], role: str) -> list[tuple[int, int]]:
    return [(x, y) for y, row in enumerate(grid_roles) for x, r in enumerate(row) if r == role]


# --- sizes --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "height"), [(80, 20), (160, 46), (60, 12), (30, 8), (20, 5), (12, 3),
                                               (1, 1), (0, 0), (200, 60)])
def test_every_line_is_exactly_the_width_and_there_are_height_lines(width: int, height: int) -> None:
    for chart in (walk(300), walk(5), data([(1.0, 1.0, 1.0, 1.0, 0.0)])):
        lines = draw_chart(chart, width, height, STYLES)
        assert len(lines) == height
        assert all(line.cell_len == width for line in lines)
        assert all("\n" not in line.plain for line in lines)


def test_layout_gives_every_row_to_a_part_and_drops_panels_before_the_price() -> None:
    for height in range(0, 80):
        parts = layout(height)
        assert parts.price + parts.rsi + parts.macd + parts.axis == max(height, 0)
        if height >= 15:
            assert parts.rsi >= 4 and parts.macd >= 5 and parts.price >= 5
    assert layout(20) == Layout(price=10, rsi=4, macd=5, axis=1)
    assert layout(10) == Layout(price=5, rsi=4, macd=0, axis=1)
    assert layout(5) == Layout(price=5, rsi=0, macd=0, axis=0)


def test_a_size_too_small_says_so_instead_of_drawing_garbage() -> None:
    grid = chart_grid(walk(50), 14, 6)
    assert grid.plain()[0].startswith("too small") and all(not line.strip() for line in grid.plain()[1:])


# --- candles -----------------------------------------------------------------------------------------

def test_up_and_down_candles_in_their_colours_newest_at_the_right() -> None:
    chart = data([(10.0, 12.0, 9.0, 11.0, 1.0), (11.0, 11.5, 8.0, 9.0, 1.0)])  # up, then down
    grid = chart_grid(chart, 40, 12)
    axis_x = axis_column(grid)
    up_x, down_x = axis_x - 2, axis_x - 1
    up = {x for x, _ in cells(grid.roles, "up")}
    down = {x for x, _ in cells(grid.roles, "down")}
    assert up == {up_x} and down_x in down
    # the plot is rows 1..price-1 (row 0 is the legend); the down candle holds the lowest low (8), the up
    # candle the highest high (12)
    down_column = [grid.chars[y][down_x] for y in range(1, layout(12).price)]
    up_column = [grid.chars[y][up_x] for y in range(1, layout(12).price)]
    assert down_column[-1] != " " and up_column[-1] == " "
    assert up_column[0] in "│╵" and "█" in "".join(up_column) and "█" in "".join(down_column)
    lines = draw_chart(chart, 40, 12, STYLES)
    spans = {(span.style, lines[1].plain[span.start:span.end]) for span in lines[1].spans}
    assert (STYLES["up"], grid.chars[1][up_x]) in spans


def test_a_candle_spans_from_its_low_to_its_high_with_its_body_in_between() -> None:
    chart = data([(10.0, 20.0, 0.0, 10.0, 1.0), (5.0, 20.0, 0.0, 15.0, 1.0)])
    grid = chart_grid(chart, 30, 13)
    rows = range(1, layout(13).price)
    axis_x = axis_column(grid)
    tall = "".join(grid.chars[y][axis_x - 1] for y in rows)  # 5 -> 15 within 0 -> 20
    assert tall[0] in "│╷" and tall[-1] in "│╵"  # wick at both ends
    body = [i for i, ch in enumerate(tall) if ch in "█▀▄"]
    assert body == list(range(body[0], body[-1] + 1)) and body[0] > 0 and body[-1] < len(tall) - 1
    assert set(tall) <= set("│╷╵█▀▄")  # no gap from the low to the high
    doji = "".join(grid.chars[y][axis_x - 2] for y in rows)  # open == close: a half-cell body
    assert doji.count("▄") + doji.count("▀") == 1 and "█" not in doji


def test_only_the_newest_bars_that_fit_are_drawn() -> None:
    chart = walk(500)
    grid = chart_grid(chart, 80, 20)
    axis_x = axis_column(grid)
    candles = cells(grid.roles, "up") + cells(grid.roles, "down")
    candle_columns = {x for x, y in candles if y < layout(20).price}
    assert candle_columns == set(range(axis_x))  # one bar per column, every column used
    last_close = float(chart.ohlcv[-1, 3])
    assert any(f"┤{last_close:,.2f}" in line for line in grid.plain())  # the last price on the axis


# --- overlays and warm-up ------------------------------------------------------------------------------

def test_nan_warm_up_draws_no_dots_and_the_legend_says_missing() -> None:
    chart = walk(60)  # series NaN for the first 25 bars
    grid = chart_grid(chart, 60 + 8, 20)
    axis_x = axis_column(grid)
    first_bar_x = axis_x - 60
    dotted = {x for y, row in enumerate(grid.chars) for x, ch in enumerate(row) if ord(ch) in BRAILLE}
    assert dotted and min(dotted) >= first_bar_x + 25
    all_nan = data([(1.0, 2.0, 0.5, 1.5, 1.0)] * 30)
    text = "\n".join(chart_grid(all_nan, 70, 20).plain())
    assert "SMA 20 —" in text and "RSI 14 —" in text and "MACD —" in text
    assert not any(ord(ch) in BRAILLE for ch in text)


def test_overlays_never_cover_candles_and_take_their_own_colours() -> None:
    grid = chart_grid(walk(80), 90, 24)
    price_rows = range(1, layout(24).price)
    for role in ("sma", "ema", "band"):
        assert cells(grid.roles, role), role
    for x, y in cells(grid.roles, "up") + cells(grid.roles, "down"):
        if y in price_rows:
            assert grid.chars[y][x] in "█▀▄│╵╷"


# --- RSI and MACD ------------------------------------------------------------------------------------

def test_rsi_panel_has_its_30_and_70_lines_and_labels() -> None:
    grid = chart_grid(walk(80), 90, 24)
    parts = layout(24)
    rsi_rows = range(parts.price, parts.price + parts.rsi)
    lines = grid.plain()
    assert lines[parts.price].startswith("RSI 14 ")
    guide_rows = [y for y in rsi_rows if lines[y].count("┄") > 10]
    assert len(guide_rows) == 2 and guide_rows[0] < guide_rows[1]
    assert lines[guide_rows[0]].rstrip().endswith("┤70") and lines[guide_rows[1]].rstrip().endswith("┤30")
    assert any(role == "rsi" for y in rsi_rows for role in grid.roles[y])


def test_macd_histogram_rises_above_zero_in_up_and_falls_below_in_down() -> None:
    n = 40
    hist = [1.0 if i < 20 else -1.0 for i in range(n)]
    chart = data([(10.0, 11.0, 9.0, 10.5, 1.0)] * n, macd_hist_12_26_9=hist)
    grid = chart_grid(chart, 60, 24)
    parts = layout(24)
    top = parts.price + parts.rsi
    zero = next(y for y in range(top, top + parts.macd) if "─" in grid.plain()[y] and "┤0" in grid.plain()[y])
    axis_x = axis_column(grid)
    x_up, x_down = axis_x - n + 5, axis_x - 5
    up = [y for y in range(top + 1, top + parts.macd) if grid.roles[y][x_up] == "up"]
    down = [y for y in range(top + 1, top + parts.macd) if grid.roles[y][x_down] == "down"]
    assert up and max(up) <= zero and min(up) == top + 1  # up to the top of the panel
    assert down and min(down) >= zero and max(down) == top + parts.macd - 1
    assert grid.chars[top + 1][x_up] == "█" and grid.chars[top + parts.macd - 1][x_down] == "█"


# --- time axis ---------------------------------------------------------------------------------------

def test_time_labels_suit_the_timeframe_and_sit_on_the_last_row() -> None:
    t = T0 + 3 * MIN + 7_000_000_000
    local = time.localtime(t / 1e9)
    assert time_label(t, MIN) == time.strftime("%H:%M", local)
    assert time_label(t, 5_000_000_000) == time.strftime("%H:%M:%S", local)
    assert time_label(t, 86_400_000_000_000) == time.strftime("%m-%d", local)
    grid = chart_grid(walk(100), 80, 20)
    first = 100 - axis_column(grid)  # the bar in column 0
    assert grid.plain()[-1].startswith(time_label(int(T0 + first * MIN), MIN) + " ")
    assert time_label(int(T0 + (first + 8) * MIN), MIN) in grid.plain()[-1]  # every 8 columns, apart
    assert set(grid.roles[-1]) <= {"muted", "text"}


def test_histogram_bars_stay_inside_the_macd_panel_whatever_the_range() -> None:
    n = 40
    for hist in ([-1e-9] * n, [1e-9] * n, [-0.1] * n, [-5.0] * n, [5.0] * n):
        chart = data([(10.0, 11.0, 9.0, 10.5, 1.0)] * n, macd_12_26_9=[3.0] * n, macd_hist_12_26_9=hist)
        grid = chart_grid(chart, 60, 24)
        parts = layout(24)
        top = parts.price + parts.rsi
        bars = [(x, y) for x, y in cells(grid.roles, "up") + cells(grid.roles, "down") if y >= parts.price
                and grid.chars[y][x] in "▀▄█"]
        assert all(top < y < top + parts.macd for _, y in bars), hist[0]  # below the legend, in the panel
        assert bars or abs(hist[0]) < 1  # tiny bars may vanish into the zero line; big ones show
        assert set(grid.roles[-1]) <= {"muted", "text"}  # the time axis is untouched
