"""The chart's drawing (plotext, via :func:`draw_chart`), a pure function of (data, width, height, styles),
tested with no app running. Expectations come from the data (which bars rise, where the warm-up ends),
never from an earlier drawing."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pytest
from rich.style import Style
from rich.text import Text

from engine.chart_data import SERIES, ChartData
from widgets import formatting as fmt
from widgets.candles import ROLES, data_key, draw_chart, layout, plot_colour, time_label

MIN = 60_000_000_000
T0 = 1_700_000_000 * 1_000_000_000 - (1_700_000_000 * 1_000_000_000) % MIN
STYLES: dict[str, Style] = {role: Style(color=f"color({i + 1})") for i, role in enumerate(ROLES)}
"""ANSI palette colours, one per role: what the ansi16 theme gives."""
RGB: dict[str, Style] = {
    role: Style(color=f"#{40 + 20 * i:02x}{200 - 15 * i:02x}{90 + i:02x}", bold=i % 2 == 0)
    for i, role in enumerate(ROLES)
}
"""Truecolor styles (some bold), one per role: what the other themes give."""
CANDLE = set("█│")
OVERLAY_ROLES = ("sma", "ema", "band")


def data(ohlcv: list[tuple[float, float, float, float, float]], timeframe: int = MIN,
         **series: list[float]) -> ChartData:
    n = len(ohlcv)
    full = {name: np.array(series.get(name, [math.nan] * n), dtype=np.float64) for name in SERIES}
    return ChartData("AAA", timeframe, T0 + np.arange(n, dtype=np.int64) * timeframe,
                     np.array(ohlcv, dtype=np.float64).reshape(n, 5), full, {}, False)


def walk(n: int, seed: int = 1, warm: int = 25) -> ChartData:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high, low = np.maximum(open_, close) * 1.003, np.minimum(open_, close) * 0.997
    rows = [tuple(r) for r in np.column_stack([open_, high, low, close, np.ones(n)]).tolist()]
    wave = np.sin(np.arange(n) / 5.0)
    ready = np.arange(n) >= warm
    series = {
        "sma_20": close * 0.999, "ema_20": close * 1.001, "bb_upper_20_2": close * 1.01,
        "bb_middle_20_2": close, "bb_lower_20_2": close * 0.99, "rsi_14": 50 + 40 * wave,
        "macd_12_26_9": wave, "macd_signal_12_26_9": 0.5 * wave, "macd_hist_12_26_9": 0.5 * wave,
    }
    return data(rows, **{k: np.where(ready, v, np.nan).tolist() for k, v in series.items()})


def cells(line: Text) -> list[tuple[str, Style | None]]:
    """Each cell of ``line`` with the style of its span (None: unstyled)."""
    out: list[tuple[str, Style | None]] = [(ch, None) for ch in line.plain]
    for span in line.spans:
        for x in range(span.start, min(span.end, len(out))):
            out[x] = (out[x][0], span.style if isinstance(span.style, Style) else None)
    return out


def price_rows(lines: Sequence[Text], height: int) -> list[list[tuple[str, Style | None]]]:
    """The price panel's plot rows (below its legend)."""
    return [cells(line) for line in lines[1:layout(height).price]]


def is_braille(ch: str) -> bool:
    return 0x2800 < ord(ch) <= 0x28FF


@pytest.mark.parametrize("size", [(78, 19), (110, 44), (60, 12), (30, 8), (40, 3), (12, 5), (1, 1)])
@pytest.mark.parametrize("styles", [STYLES, RGB], ids=["ansi", "rgb"])
def test_output_is_exactly_the_widget_size(size: tuple[int, int], styles: dict[str, Style]) -> None:
    width, height = size
    lines = draw_chart(walk(500), width, height, styles)
    assert len(lines) == height
    assert [line.cell_len for line in lines] == [width] * height
    assert all("\n" not in line.plain and "\x1b" not in line.plain for line in lines)


@pytest.mark.parametrize("size", [(110, 44), (100, 26)])
def test_panels_start_with_their_legends_and_the_time_axis_is_last(size: tuple[int, int]) -> None:
    chart = walk(300)
    width, height = size
    parts = layout(height)
    assert parts.macd
    lines = [line.plain for line in draw_chart(chart, width, height, STYLES)]
    assert lines[0].startswith(f"SMA 20 {fmt.price(chart.series['sma_20'][-1])}  ")
    assert ("  EMA 20 " in lines[0]) == (parts.price - 1 >= 16)  # drawn, and named, on a tall panel only
    assert lines[parts.price].startswith(f"RSI 14 {fmt.indicator(chart.series['rsi_14'][-1])}  70/30")
    macd = fmt.indicator(chart.series["macd_12_26_9"][-1])
    assert lines[parts.price + parts.rsi].startswith(f"MACD {macd}")
    newest = time_label(int(chart.t[-1]), MIN)
    assert lines[-1].rstrip().endswith(newest)  # the newest bar is labelled, at the right


def test_at_80x24_two_panels_of_readable_height_and_no_blank_row() -> None:
    """The chart's 80x20 at 80x24: price and RSI panels tall enough to read, the MACD's values on the
    RSI's legend line, every plot row holding something, the candles never covered by a line."""
    chart = walk(300)
    width, height = 80, 20
    parts = layout(height)
    assert (parts.price - 1, parts.rsi - 1, parts.macd, parts.axis) == (12, 5, 0, 1)
    lines = draw_chart(chart, width, height, STYLES)
    plains = [line.plain for line in lines]
    assert plains[0].startswith("SMA 20 ") and "EMA" not in plains[0]  # two overlays fewer than at 110x44
    macd = fmt.indicator(chart.series["macd_12_26_9"][-1])
    assert plains[parts.price].startswith("RSI 14 ") and f"MACD {macd}  signal " in plains[parts.price]
    labels = len(fmt.price(float(chart.ohlcv[:, 1].max()))) + 1
    for y in [*range(1, parts.price), *range(parts.price + 1, height - parts.axis)]:
        assert plains[y][labels:].strip(), f"row {y} is blank"
    assert plains[-1].strip()  # the time axis
    price = {style for row in price_rows(lines, height) for ch, style in row if is_braille(ch)}
    assert price == {STYLES["band"], STYLES["sma"]}
    for x in range(labels, width):  # in each column, nothing but the candle between its top and bottom
        column = [row[x][0] for row in price_rows(lines, height)]
        drawn = [y for y, ch in enumerate(column) if ch in CANDLE]
        assert drawn, f"no candle in column {x}"
        assert all(ch in CANDLE for ch in column[drawn[0]:drawn[-1] + 1]), f"column {x}: {column}"


def test_the_rsi_panel_spends_no_row_where_the_rsi_never_went() -> None:
    chart = walk(300)  # the RSI stays between 10 and 90
    for height in (20, 26, 44):
        parts = layout(height)
        lines = [line.plain for line in draw_chart(chart, 100, height, STYLES)]
        rsi = lines[parts.price + 1:parts.price + parts.rsi]
        assert all(line[7:].strip() for line in rsi), height


def test_up_and_down_candles_in_their_colours_newest_at_the_right() -> None:
    n = 40
    ohlcv: list[tuple[float, float, float, float, float]] = []
    for i in range(n):
        base = 100.0 + (i % 7)
        o, c = (base, base + 2) if i % 3 else (base + 2, base)  # every third bar falls
        ohlcv.append((o, max(o, c) + 1, min(o, c) - 1, c, 1.0))
    width, height = 60, 19
    lines = draw_chart(data(ohlcv), width, height, STYLES)
    rows = price_rows(lines, height)
    for i in range(n):
        column = width - n + i
        drawn = [style for row in rows for ch, style in [row[column]] if ch in CANDLE]
        assert drawn, f"bar {i} is drawn in column {column}"
        expected = STYLES["up"] if i % 3 else STYLES["down"]
        assert set(drawn) == {expected}, f"bar {i}"
    left = {ch for row in rows for ch, _ in row[7:width - n]}
    assert left <= {" "}  # fewer bars than columns: nothing left of the first bar but the labels


def test_only_the_newest_bars_that_fit_are_drawn() -> None:
    n, width, height = 200, 50, 19
    ohlcv = [(100.0, 102.0, 99.0, 101.0, 1.0) if i < n - 10 else (101.0, 102.0, 99.0, 100.0, 1.0)
             for i in range(n)]  # the last ten bars fall
    rows = price_rows(draw_chart(data(ohlcv), width, height, STYLES), height)
    down = {x for row in rows for x, (ch, style) in enumerate(row)
            if ch in CANDLE and style == STYLES["down"]}
    assert down == set(range(width - 10, width))


def test_overlays_and_indicator_lines_take_their_own_colours() -> None:
    width, height = 110, 44
    lines = draw_chart(walk(500), width, height, STYLES)
    parts = layout(height)
    price = {style for row in price_rows(lines, height) for ch, style in row if is_braille(ch)}
    assert {STYLES[role] for role in OVERLAY_ROLES} <= price
    rsi = [cells(line) for line in lines[parts.price + 1:parts.price + parts.rsi]]
    assert any(is_braille(ch) and style == STYLES["rsi"] for row in rsi for ch, style in row)
    macd = [cells(line) for line in lines[parts.price + parts.rsi + 1:height - parts.axis]]
    styles = {style for row in macd for ch, style in row if is_braille(ch)}
    assert {STYLES["macd"], STYLES["signal"]} <= styles
    bars = {style for row in macd for ch, style in row if ch == "█"}
    assert bars == {STYLES["up"], STYLES["down"]}  # the histogram's both signs


def test_rsi_panel_has_its_30_and_70_lines_and_labels() -> None:
    for width, height in ((78, 19), (60, 12), (110, 44)):
        lines = draw_chart(walk(300), width, height, STYLES)
        parts = layout(height)
        rsi = lines[parts.price + 1:parts.price + parts.rsi]
        labelled = {line.plain.split()[0]: line for line in rsi if line.plain.strip()[:2] in ("30", "70")}
        assert set(labelled) == {"30", "70"}, (width, height)
        plains = [line.plain for line in rsi]
        assert plains.index(labelled["70"].plain) < plains.index(labelled["30"].plain)  # 70 above 30
        for line in labelled.values():
            guide = [style for ch, style in cells(line) if ch == "┈"]
            assert len(guide) > width // 4 and set(guide) == {STYLES["muted"]}


def test_nan_warm_up_is_not_plotted() -> None:
    warm, n, width, height = 30, 60, 78, 19
    lines = draw_chart(walk(n, warm=warm), width, height, STYLES)
    parts = layout(height)
    first_ready = width - n + warm
    for y, line in enumerate(lines[:height - parts.axis]):
        for x, (ch, _style) in enumerate(cells(line)):
            if is_braille(ch) and y not in (0, parts.price, parts.price + parts.rsi):
                assert x >= first_ready - 1, f"a line drawn at ({x}, {y}) in the warm-up"


def test_all_nan_series_draw_candles_only_and_the_legend_says_missing() -> None:
    ohlcv = [(100.0 + i, 102.0 + i, 99.0 + i, 101.0 + i, 1.0) for i in range(30)]
    width, height = 78, 19
    lines = draw_chart(data(ohlcv), width, height, STYLES)
    assert not any(is_braille(ch) for line in lines for ch in line.plain)
    assert lines[0].plain.startswith(f"SMA 20 {fmt.MISSING}")
    assert sum(ch in CANDLE for row in price_rows(lines, height) for ch, _ in row) >= 30


def test_a_size_too_small_or_no_bars_gives_a_short_note() -> None:
    small = draw_chart(walk(100), 14, 5, STYLES)
    assert small[0].plain.startswith("too small") and all(not line.plain.strip() for line in small[1:])
    assert small[0].spans and all(span.style == STYLES["muted"] for span in small[0].spans)
    empty = data([])
    assert draw_chart(empty, 78, 19, STYLES)[0].plain.startswith("no bars yet")
    assert draw_chart(walk(10), 0, 0, STYLES) == []


def test_theme_colours_reach_plotext_and_come_back_as_the_role_styles() -> None:
    assert plot_colour(Style(color="color(2)")) == 2  # ANSI colours stay palette colours
    assert plot_colour(Style(color="bright_red")) == 9
    assert plot_colour(Style(color="#102030")) == (16, 32, 48)
    assert plot_colour(Style(color="default")) is None and plot_colour(Style()) is None
    for styles in (STYLES, RGB):
        lines = draw_chart(walk(300), 110, 44, styles)
        used = {span.style for line in lines for span in line.spans}
        assert used <= set(styles.values()), "every run is in one of the theme's role styles"
        assert {styles["up"], styles["down"], styles["muted"]} <= used


def test_data_key_follows_what_is_drawn_not_which_object() -> None:
    chart = walk(200)
    copy = ChartData(chart.symbol, chart.timeframe_ns, chart.t.copy(), chart.ohlcv.copy(),
                     {k: v.copy() for k, v in chart.series.items()}, dict(chart.values), chart.forming)
    assert data_key(copy, 80) == data_key(chart, 80)
    moved = chart.ohlcv.copy()
    moved[-1, 3] += 0.01  # the forming bar ticked
    ticked = ChartData(chart.symbol, chart.timeframe_ns, chart.t, moved, chart.series, {}, chart.forming)
    assert data_key(ticked, 80) != data_key(chart, 80)
    assert data_key(chart, 81) != data_key(chart, 80)


def test_time_label_suits_the_timeframe() -> None:
    ns = T0 + 5 * MIN + 30_000_000_000
    stamp = time.localtime(ns / 1e9)
    assert time_label(ns, 1_000_000_000) == time.strftime("%H:%M:%S", stamp)
    assert time_label(ns, 5 * MIN) == time.strftime("%H:%M", stamp)
    assert time_label(ns, 86_400_000_000_000) == time.strftime("%m-%d", stamp)
