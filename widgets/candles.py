"""The detail pane's chart: candles with SMA, EMA and Bollinger overlays, an RSI panel with its 30/70
lines and a MACD panel with its histogram, stacked over one shared time axis, drawn by plotext.

At 80x24 the chart has 20 rows: too few for three panels that can be read, so below :data:`MACD_FROM` rows
the MACD's panel is left out (its values go on the RSI's legend line), and a short price panel draws the
Bollinger bands and their middle (the SMA 20) but not the EMA, so the candles stay readable. The RSI panel
spans the range the RSI took (with 30 and 70 in it), so no row of it stays empty.

plotext draws every panel; this module only decides what goes where. Each panel's first row is a legend
line written here (the latest values, which plotext's in-canvas legend box would cover candles to show),
and every panel gets y labels of one common width, so a bar sits in the same column from the price down
to the MACD. Bars are at integer x positions, one column per bar (plotext's candle width), the newest at
the right; as many as fit are shown.

Colours come from the theme: :class:`CandleChart` reads its component classes (which use theme
variables) and hands plotext their colours, as 0..15 palette numbers for ANSI colours (so the ``ansi16``
theme stays in the terminal's own palette) and as RGB otherwise; plotext's own background is left unpainted
so the theme's shows. plotext's ANSI output is turned into a rich ``Text`` whose runs are then given the
role styles themselves. A build costs tens of milliseconds, so the widget caches it by the content of the
data it shows, the size and the styles: the screen refetches every second, and an unchanged chart is not
redrawn. plotext (slow to import) and numpy are imported when a chart is first drawn.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rich.color import Color, ColorType
from rich.style import Style
from rich.text import Text
from textual import work
from textual.reactive import reactive
from textual.widget import Widget
from textual.worker import get_current_worker

from widgets import formatting as fmt

if TYPE_CHECKING:
    from engine.chart_data import ChartData

Role = Literal["text", "muted", "up", "down", "sma", "ema", "band", "rsi", "macd", "signal"]
ROLES: tuple[Role, ...] = ("text", "muted", "up", "down", "sma", "ema", "band", "rsi", "macd", "signal")

OVERLAYS: tuple[tuple[str, Role], ...] = (
    ("bb_upper_20_2", "band"), ("bb_lower_20_2", "band"), ("sma_20", "sma"), ("ema_20", "ema"),
)
"""Price overlays, drawn in this order (a later one wins a shared cell), all before the candles so that a
candle is never covered. The Bollinger middle band is the SMA 20, drawn once, as the SMA."""
SMALL_OVERLAYS = OVERLAYS[:3]
"""What a price panel of fewer than :data:`ALL_OVERLAYS_FROM` rows draws: the Bollinger bands around
their middle (the SMA); a fourth line close to the SMA would leave the candles hard to read."""
ALL_OVERLAYS_FROM = 16
"""Plot rows of the price panel from which the EMA is drawn too."""
RSI, RSI_LEVELS = "rsi_14", (70.0, 30.0)
MACD, MACD_SIGNAL, MACD_HIST = "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9"

MIN_PLOT_WIDTH = 10
_PLOTEXT = threading.Lock()
"""One chart built at a time: plotext's candle colours are module-wide settings."""
"""Fewer columns of bars than this is no chart: a short note is drawn instead."""
DAY_NS = 86_400_000_000_000
PlotColour = int | tuple[int, int, int] | None
"""A colour as plotext takes it: a palette number, RGB, or None (the terminal's default)."""


@dataclass(frozen=True)
class Layout:
    """Rows of each part of the chart (0: left out) for a height; each panel's first row is its legend."""

    price: int
    rsi: int
    macd: int
    axis: int

    @property
    def overlays(self) -> tuple[tuple[str, Role], ...]:
        return OVERLAYS if self.price - 1 >= ALL_OVERLAYS_FROM else SMALL_OVERLAYS


MACD_FROM = 25
"""Rows (without the time axis) from which the MACD panel has a place of its own (100x30 has 25 rows of
chart, 80x24 has 19): fewer would leave every panel too short to read, so below it the MACD's values go on
the RSI panel's legend line and its plot is left out (the values tab lists it too)."""


def layout(height: int) -> Layout:
    """Price first; RSI and MACD panels and the time axis only when they leave the price room to read.
    Every panel shown gets at least four plot rows under its legend, and the price at least twice what the
    RSI gets (80x24 gives price 1 + 12 rows, RSI 1 + 5)."""
    axis = 1 if height >= 8 else 0
    room = height - axis
    if room >= MACD_FROM:
        rsi, macd = max(6, round(room * 0.2)), max(6, round(room * 0.22))
        return Layout(room - rsi - macd, rsi, macd, axis)
    if room >= 10:
        rsi = max(5, round(room * 0.3))
        return Layout(room - rsi, rsi, 0, axis)
    return Layout(max(0, room), 0, 0, axis)


def time_label(ns: int, timeframe_ns: int) -> str:
    """A bar's open time as its timeframe needs it: ``14:05:30`` (seconds), ``14:05`` (minutes and
    hours), ``03-14`` (days and longer); local time, like the header's clock."""
    stamp = time.localtime(ns / 1e9)
    if timeframe_ns >= DAY_NS:
        return time.strftime("%m-%d", stamp)
    if timeframe_ns % 60_000_000_000:
        return time.strftime("%H:%M:%S", stamp)
    return time.strftime("%H:%M", stamp)


def plot_colour(style: Style | None) -> PlotColour:
    """The colour plotext should use for ``style``: ANSI colours by number, so plotext writes them as
    palette colours and the terminal's palette shows; anything else as RGB."""
    color = style.color if style is not None else None
    if color is None or color.type == ColorType.DEFAULT:
        return None
    if color.number is not None and color.number < 16:
        return color.number
    triplet = color.get_truecolor()
    return (triplet.red, triplet.green, triplet.blue)


def _finite_runs(values: Sequence[float], x0: int = 0) -> Iterator[tuple[list[int], list[float]]]:
    """(x, y) of each stretch of finite values: NaN (warm-up) is left out, and lines never bridge it."""
    xs: list[int] = []
    ys: list[float] = []
    for i, value in enumerate(values):
        if math.isfinite(value):
            xs.append(x0 + i)
            ys.append(value)
        elif xs:
            yield xs, ys
            xs, ys = [], []
    if xs:
        yield xs, ys


def _range(*series: Sequence[float]) -> tuple[float, float]:
    finite = [v for s in series for v in s if math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    if high == low:
        spread = abs(low) * 0.01 or 1.0
        return (low - spread, high + spread)
    return (low, high)


def _value(series: Mapping[str, Sequence[float]], name: str) -> float:
    values = series.get(name)
    return float(values[-1]) if values is not None and len(values) else math.nan


def _legend(parts: Sequence[tuple[str, Role]], styles: Mapping[str, Style], width: int) -> Text:
    line = Text(no_wrap=True, overflow="crop", end="")
    for text, role in parts:
        line.append(text, styles.get(role))
    line.truncate(width, pad=True)
    return line


def _note(message: str, styles: Mapping[str, Style], width: int, height: int) -> list[Text]:
    """``message`` on the first row, cut to ``width``, then empty rows: what a too-small chart shows."""
    first = Text(no_wrap=True, overflow="crop", end="")
    first.append(message[:width], styles.get("muted"))
    first.truncate(width, pad=True)
    return [first] + [Text(" " * width, end="") for _ in range(height - 1)]


@dataclass(frozen=True)
class Window:
    """The bars a chart shows: the last ``shown`` of the data, as plain lists."""

    times: list[int]
    ohlcv: list[list[float]]
    series: dict[str, list[float]]

    @classmethod
    def of(cls, data: ChartData, shown: int) -> Window:
        first = len(data.t) - shown
        return cls(data.t[first:].tolist(), data.ohlcv[first:].tolist(),
                   {name: values[first:].tolist() for name, values in data.series.items()})


def draw_chart(data: ChartData, width: int, height: int, styles: Mapping[str, Style]) -> list[Text]:
    """The chart of ``data`` as ``height`` lines of exactly ``width`` cells, the newest bar at the right;
    too small a size (or no bars) gives a one-line note instead."""
    width, height = max(0, width), max(0, height)
    if not width or not height:
        return [Text("", end="") for _ in range(height)]
    parts = layout(height)
    n = len(data.t)
    label_width = _label_width(data, parts)
    plot = width - label_width
    if plot < MIN_PLOT_WIDTH or parts.price < 3:
        return _note("too small for a chart", styles, width, height)
    if n == 0:
        return _note("no bars yet", styles, width, height)
    window = Window.of(data, min(n, plot))
    legends = _legends(window.series, styles, width, parts)
    panels = _plot_panels(window, data.timeframe_ns, parts, width, label_width, styles)
    lines: list[Text] = []
    rows = iter(panels)
    for legend, panel_rows in zip(legends, _panel_heights(parts), strict=True):
        if not panel_rows:
            continue
        lines.append(legend)
        lines.extend(next(rows, Text("")) for _ in range(panel_rows - 1))
    lines.extend(rows)  # the time axis
    for line in lines:
        line.truncate(width, pad=True)
    return lines[:height]


def _panel_heights(parts: Layout) -> tuple[int, int, int]:
    return (parts.price, parts.rsi, parts.macd)


def _label_width(data: ChartData, parts: Layout) -> int:
    """Width of the y labels, one for every panel so that their plots start in the same column."""
    if not len(data.t):
        return 3
    high, low = float(data.ohlcv[:, 1].max()), float(data.ohlcv[:, 2].min())
    width = max(len(fmt.price(high)), len(fmt.price(low)), 2)
    if parts.macd:
        low, high = _range(*(data.series[k].tolist() for k in (MACD, MACD_SIGNAL, MACD_HIST)), [0.0])
        width = max(width, len(fmt.indicator(low)), len(fmt.indicator(high)))
    return width + 1  # a space between the labels and the plot


def _legends(series: Mapping[str, list[float]], styles: Mapping[str, Style], width: int,
             parts: Layout) -> list[Text]:
    """The legend line of each panel: the latest value of each line drawn in it. Without a MACD panel, its
    values follow the RSI's on that panel's line."""
    hist = _value(series, MACD_HIST)
    band = f"{fmt.price(_value(series, 'bb_lower_20_2'))}..{fmt.price(_value(series, 'bb_upper_20_2'))}"
    ema: list[tuple[str, Role]] = [("  EMA 20 ", "ema"), (fmt.price(_value(series, "ema_20")), "ema")]
    macd: list[tuple[str, Role]] = [
        ("MACD ", "macd"), (fmt.indicator(_value(series, MACD)), "macd"),
        ("  signal ", "signal"), (fmt.indicator(_value(series, MACD_SIGNAL)), "signal"),
        ("  hist ", "muted"), (fmt.indicator(hist), "up" if hist >= 0 else "down")]
    rsi: list[tuple[str, Role]] = [("RSI 14 ", "rsi"), (fmt.indicator(_value(series, RSI)), "rsi"),
                                   ("  70/30", "muted")]
    return [
        _legend([("SMA 20 ", "sma"), (fmt.price(_value(series, "sma_20")), "sma"),
                 *(ema if ("ema_20", "ema") in parts.overlays else []),
                 ("  BB 20 2 ", "band"), (band, "band")], styles, width),
        _legend(rsi if parts.macd else [*rsi, ("   ", "muted"), *macd], styles, width),
        _legend(macd, styles, width),
    ]


@contextmanager
def _candle_colours(up: PlotColour, down: PlotColour) -> Iterator[None]:
    """plotext takes candle colours from two module settings only (``candlestick_up_color`` and
    ``_down_color``, there for themes to override): set for one call, then put back."""
    from plotext._settings import defaults

    saved = defaults.candlestick_up_color, defaults.candlestick_down_color
    defaults.candlestick_up_color = "green" if up is None else up
    defaults.candlestick_down_color = "red" if down is None else down
    try:
        yield
    finally:
        defaults.candlestick_up_color, defaults.candlestick_down_color = saved


def _plot_panels(window: Window, timeframe_ns: int, parts: Layout, width: int, label_width: int,
                 styles: Mapping[str, Style]) -> list[Text]:
    """The panels below their legend rows, and the time axis, built by plotext in one figure."""
    import plotext as plt

    colours: dict[str, PlotColour] = {role: plot_colour(styles.get(role)) for role in ROLES}

    def pixel(role: Role) -> Any:
        # "default" leaves the background to the terminal (the theme's), not plotext's white
        return plt.pixel(foreground=colours[role] if colours[role] is not None else "default",
                         background="default")

    def marker(role: Role, symbol: str = "braille") -> Any:
        return plt.marker(symbol).fill(pixel(role))

    heights = [rows - 1 for rows in _panel_heights(parts) if rows]
    heights[-1] += parts.axis
    terminal = type(plt.terminal)()  # a figure of its own: no state shared with other draws
    terminal.limit(False, False)  # its size is the widget's, not the terminal's
    figure = terminal._master
    figure.plot_size(width, sum(heights))
    if len(heights) > 1:
        figure.subplots(len(heights), 1)
    figure.theme("colorless")
    figure.canvas("default")
    figure.axes(False)
    shown = len(window.times)
    plot = width - label_width
    subplots = [figure.subplot(row + 1, 1) for row in range(len(heights))] if len(heights) > 1 else [figure]
    for subplot, rows in zip(subplots, heights, strict=True):
        subplot.plot_size(width, rows)
        subplot.ruler("x").lim(shown - plot, shown - 1)  # one column per bar, the newest at the right
        subplot.ruler("x").ticks([])
        subplot.ruler("both").pixel(pixel("muted"))

    def labelled(subplot: Any, positions: Sequence[float], labels: Sequence[str]) -> None:
        subplot.ruler("y").ticks(list(positions), [f"{label:>{label_width - 1}} " for label in labels])

    def lines(subplot: Any, values: Sequence[float], role: Role) -> None:
        for xs, ys in _finite_runs(values):
            subplot.draw(subplot.signal(xs, ys, marker=marker(role)).lines(True))

    price = subplots[0]
    ohlcv = window.ohlcv
    overlays = [window.series[name] for name, _ in parts.overlays if name in window.series]
    low, high = _range([bar[2] for bar in ohlcv], [bar[1] for bar in ohlcv], *overlays)
    price.ruler("y").lim(low, high)
    for name, role in parts.overlays:
        if name in window.series:
            lines(price, window.series[name], role)
    with _candle_colours(colours["up"], colours["down"]):
        candles = price.candlestick({"date": list(range(shown)), "open": [b[0] for b in ohlcv],
                                     "close": [b[3] for b in ohlcv], "high": [b[1] for b in ohlcv],
                                     "low": [b[2] for b in ohlcv]})
    price.draw(candles)  # after the overlays, so a candle is never covered by a line
    last = ohlcv[-1][3]
    ticks = [low + (high - low) * k / 3 for k in range(4)] if heights[0] >= 6 else [low, high]
    ticks = [t for t in ticks if abs(t - last) > (high - low) / max(2, heights[0])] + [last]
    labelled(price, ticks, [fmt.price(t) for t in ticks])

    panel = 1
    if parts.rsi:
        rsi = subplots[panel]
        panel += 1
        # The range the RSI took, widened to hold 30 and 70: no row is spent on a stretch it never reached,
        # and the guides sit on the top and bottom rows when it stayed between them.
        rsi.ruler("y").lim(*_range(window.series.get(RSI, []), list(RSI_LEVELS)))
        for level in RSI_LEVELS:
            rsi.line(level, pixel=pixel("muted"), style="dotted")
        lines(rsi, window.series.get(RSI, []), "rsi")
        labelled(rsi, RSI_LEVELS, [f"{level:.0f}" for level in RSI_LEVELS])
    if parts.macd:
        macd = subplots[panel]
        hist = window.series.get(MACD_HIST, [])
        low, high = _range(window.series.get(MACD, []), window.series.get(MACD_SIGNAL, []), hist, [0.0])
        macd.ruler("y").lim(low, high)
        macd.line(0.0, pixel=pixel("muted"))
        for role, keep in (("up", lambda h: h > 0), ("down", lambda h: h < 0)):
            xs = [i for i, h in enumerate(hist) if math.isfinite(h) and keep(h)]
            if xs:
                macd.draw(macd.bar(xs, [hist[i] for i in xs], marker=marker(role, "█")))
        macd.ruler("x").ticks([])  # bar() labels its bars; the time axis does that here
        lines(macd, window.series.get(MACD_SIGNAL, []), "signal")
        lines(macd, window.series.get(MACD, []), "macd")
        labelled(macd, [high, 0.0, low], [fmt.indicator(high), "0", fmt.indicator(low)])
    if parts.axis:
        positions, labels = _time_ticks(window.times, timeframe_ns, plot)
        subplots[-1].ruler("x").ticks(positions, labels)
    ansi = figure.build().string()
    return list(_styled(Text.from_ansi(ansi, no_wrap=True, end=""), colours, styles).split("\n"))


def _time_ticks(times: Sequence[int], timeframe_ns: int, plot: int) -> tuple[list[int], list[str]]:
    """Bar times to label: the newest bar, then every few bars back, far enough apart to read."""
    if not times:
        return [], []
    label = len(time_label(times[-1], timeframe_ns))
    step = max(label + 4, plot // 6)
    last = len(times) - 1
    positions = [i for i in range(last, -1, -step) if i >= label // 2][::-1]
    return positions, [time_label(times[i], timeframe_ns) for i in positions]


def _styled(text: Text, colours: Mapping[str, PlotColour], styles: Mapping[str, Style]) -> Text:
    """``text`` with each plotext colour run given the role style it stands for (the theme's own style,
    bold and all); roles sharing a colour share a style, so any of them will do."""
    by_colour: dict[Color, Style] = {}
    for role in reversed(ROLES):  # the first role of a colour wins
        colour = colours[role]
        if colour is None:
            continue
        parsed = Color.from_ansi(colour) if isinstance(colour, int) else Color.from_rgb(*colour)
        by_colour[parsed] = styles[role]
    for i, span in enumerate(text.spans):
        style = span.style
        if isinstance(style, Style) and style.color is not None:
            key = Color.from_ansi(style.color.number) if style.color.number is not None and \
                style.color.type != ColorType.TRUECOLOR else style.color
            if key in by_colour:
                text.spans[i] = span._replace(style=by_colour[key])
    return text


def data_key(data: ChartData, width: int) -> str:
    """A digest of what a chart of ``data`` at ``width`` shows: refetched data that draws the same
    chart gets the same key, however new the object."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{data.symbol} {data.timeframe_ns} {data.forming} {width}".encode())
    shown = min(len(data.t), max(0, width))
    for array in (data.t[-shown:], data.ohlcv[-shown:], data.ohlcv[:, 1:3]):  # the labels use the whole range
        digest.update(array.tobytes())
    for name in sorted(data.series):
        digest.update(name.encode())
        digest.update(data.series[name][-shown:].tobytes())
    return digest.hexdigest()


class CandleChart(Widget):
    """The chart of the latest :class:`~engine.chart_data.ChartData`; set ``data`` to redraw."""

    DEFAULT_CSS = """
    CandleChart {
        width: 1fr;
        height: 1fr;
    }
    CandleChart > .candles--text { color: $foreground; }
    CandleChart > .candles--muted { color: $foreground-muted; }
    CandleChart > .candles--up { color: $text-success; }
    CandleChart > .candles--down { color: $text-error; }
    CandleChart > .candles--sma { color: $text-warning; }
    CandleChart > .candles--ema { color: $text-primary; }
    CandleChart > .candles--band { color: $foreground-muted; }
    CandleChart > .candles--rsi { color: $text-accent; }
    CandleChart > .candles--macd { color: $text-primary; }
    CandleChart > .candles--signal { color: $text-warning; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"candles--{role}" for role in ROLES}

    data: reactive[ChartData | None] = reactive(None, always_update=True)
    """The bars and series drawn; None draws nothing (the screen shows why)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cache_key: tuple[object, ...] = ()
        self._cached = Text()
        self._wanted: tuple[object, ...] = ()
        self.builds = 0
        """Charts drawn (a refetch of unchanged data draws none)."""

    def styles_by_role(self) -> dict[str, Style]:
        return {role: self.get_component_rich_style(f"candles--{role}", partial=True) for role in ROLES}

    def render(self) -> Text:
        """The last chart built; a build of the current data and size is started if it is not that one.

        plotext takes 40-90 ms for a chart this size, too long for the event loop, so the drawing runs
        in a thread worker and the widget repaints when it is done (the previous chart stays meanwhile).
        """
        data = self.data
        width, height = self.size.width, self.size.height
        if data is None or width <= 0 or height <= 0:
            return Text()
        styles = self.styles_by_role()
        key = (data_key(data, width), width, height, tuple(styles.items()))
        if key != self._cache_key and key != self._wanted:
            self._wanted = key
            self._build(key, data, width, height, styles)
        return self._cached

    @property
    def current(self) -> bool:
        """Whether the chart on screen is the one for the current data, size and theme."""
        return bool(self._cache_key) and self._cache_key == self._wanted

    @work(thread=True, exclusive=True, group="chart", exit_on_error=False)
    def _build(self, key: tuple[object, ...], data: ChartData, width: int, height: int,
               styles: dict[str, Style]) -> None:
        with _PLOTEXT:  # plotext keeps its candle colours in module-wide settings
            lines = draw_chart(data, width, height, styles)
        text = Text("\n", no_wrap=True, overflow="crop").join(lines)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._built, key, text)

    def _built(self, key: tuple[object, ...], text: Text) -> None:
        self._cached, self._cache_key = text, key
        self.builds += 1
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()  # a theme switch: the cache key holds the styles, so this redraws
