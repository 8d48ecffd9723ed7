"""The detail pane of one symbol: a title line, the chart (candles, overlays, RSI, MACD) and the current
value of every indicator output, at a timeframe the user switches with ``[`` / ``]`` (or ``f``).

The screen does not know where data comes from: it is given ``fetch(symbol, factor)``, an awaitable that
returns a :class:`~engine.chart_data.ChartData` or None (an attached console has no local engine; a
symbol may have no bars yet). It fetches on mount, when the timeframe changes and every second, one
fetch at a time: a tick that finds a fetch still running is skipped (a slow engine never gets a queue of
fetches), and a timeframe change during a fetch makes that fetch's result stale, so the newest choice
wins. A failed fetch is shown on the screen and in a notification, and refreshing pauses until the user
picks a timeframe again.

Narrow terminals (below :data:`WIDE` columns, e.g. 80x24 over SSH) show the chart and the indicator
values as two tabs (``i`` switches, and the footer names the tab it switches to); wide ones show them side
by side. The values are those of the chosen timeframe, as the chart's are, and say which it is. What the
title line and the value table show are pure functions (:func:`render_title`, :func:`render_catalogue`),
tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Static, Tab, Tabs
from textual.worker import Worker, WorkerState

from engine.chart_data import CHART_BARS  # noqa: F401  (bars a fetch keeps; the engine's ring is sized by it)
from widgets import formatting as fmt
from widgets.candles import CandleChart, time_label

if TYPE_CHECKING:
    from engine.chart_data import ChartData

Fetch = Callable[[str, int], Awaitable["ChartData | None"]]
"""``fetch(symbol, factor)``: the symbol's chart data at ``factor`` times the engine's interval."""

WIDE = 120
"""From this many columns the chart and the values sit side by side; below, they are tabs."""
FETCH_GROUP = "detail"
NAME_WIDTH, VALUE_WIDTH, COLUMN_GAP = 19, 9, 2
"""The value table: names cut to 19 cells (``keltner_middle_20_2``), values in nine, two between."""
UP, DOWN, MUTED = "$text-success", "$text-error", "$text-muted"


PRICE_LIKE = ("sma", "ema", "wma", "dema", "tema", "kama", "bb_", "sar", "donchian", "keltner", "vwap",
              "supertrend")
"""Outputs that are prices (averages, bands, stops): shown like prices, to the cent."""


NICE_NS: tuple[int, ...] = tuple(n * 1_000_000_000 for n in (
    1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 86_400, 7 * 86_400))
"""Timeframes people chart in: 1s 5s 15s 30s 1m 5m 15m 30m 1h 4h 1d 1w."""
MIN_BARS = 30
"""A timeframe is offered only if the engine's history makes at least this many of its bars."""
_UNITS = (("w", 7 * 86_400_000_000_000), ("d", 86_400_000_000_000), ("h", 3_600_000_000_000),
          ("m", 60_000_000_000), ("s", 1_000_000_000))


def duration_label(ns: int) -> str:
    """``300e9`` -> ``5m``, ``90e9`` -> ``90s``: the largest unit that divides it."""
    for unit, size in _UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def timeframe_choices(interval_ns: int, depth: int, most: int = 5) -> list[tuple[str, int]]:
    """Up to ``most`` (label, factor) pairs for the engine's bar interval: the interval itself, then the
    usual timeframes that are whole multiples of it and that ``depth`` bars of history fill enough to
    read (``1m`` bars: 1m 5m 15m 30m 1h)."""
    choices = [(duration_label(interval_ns), 1)]
    for ns in NICE_NS:
        factor = ns // interval_ns
        if ns > interval_ns and ns % interval_ns == 0 and depth // factor >= MIN_BARS and len(choices) < most:
            choices.append((duration_label(ns), factor))
    return choices


def value_text(name: str, value: float) -> str:
    """A value in at most nine cells: prices as prices, large counts like OBV as ``12.3M``, the rest as
    the watchlist shows indicators; NaN (warming up) as ``—``."""
    if math.isfinite(value) and abs(value) >= 1e6:
        return fmt.volume(value)
    if name.startswith(PRICE_LIKE) and not name.startswith("supertrend_dir"):  # that one is +1 / -1
        return fmt.price(value)
    return fmt.indicator(value)


def catalogue_shape(count: int, width: int) -> tuple[int, int]:
    """(columns, rows) of the value table for ``count`` values in ``width`` cells."""
    cell = NAME_WIDTH + 1 + VALUE_WIDTH
    columns = max(1, (width + COLUMN_GAP) // (cell + COLUMN_GAP))
    columns = min(columns, max(1, count))
    return columns, -(-count // columns) if count else 0


def render_catalogue(values: Mapping[str, float], width: int) -> Content:
    """Name and value of every output, down the columns first (``bb_upper`` over ``bb_middle``), each
    line at most ``width`` cells; values still warming up show ``—``, muted."""
    names = list(values)
    columns, rows = catalogue_shape(len(names), width)
    lines = []
    for r in range(rows):
        parts: list[Content] = []
        for c in range(columns):
            i = c * rows + r
            if i >= len(names):
                break
            name = names[i]
            text = value_text(name, values[name])
            if parts:
                parts.append(Content(" " * COLUMN_GAP))
            parts.append(Content.assemble(
                (f"{fmt.fit(name, NAME_WIDTH):<{NAME_WIDTH}} ", MUTED),
                (f"{text:>{VALUE_WIDTH}}", MUTED if text == fmt.MISSING else ""),
            ))
        lines.append(Content("").join(parts).truncate(max(0, width)))
    return Content("\n").join(lines)


def render_title(symbol: str, data: ChartData | None, timeframes: Sequence[str], index: int,
                 decimals: int | None = None) -> Content:
    """``AAPL  122.63  +0.52  +0.43%  bar 14:05 forming   1m  5m  15m  1h`` with the chosen timeframe
    highlighted; the change is against the previous bar's close at this timeframe. The chart's note
    follows (``112 bars: 535 in memory, the sim feed keeps no bar store``) when it has one."""
    parts: list[str | tuple[str, str]] = [(symbol, "$text-primary bold"), "  "]
    if data is not None and len(data):
        close = data.ohlcv[:, 3]
        last = float(close[-1])
        ref = float(close[-2]) if len(close) > 1 else float(data.ohlcv[-1, 0])
        change = fmt.moved(last - ref, last, decimals)  # zero when it rounds to zero at the precision
        style = UP if change > 0 else DOWN if change < 0 else ""
        bar = f"bar {time_label(int(data.t[-1]), data.timeframe_ns)}{' forming' if data.forming else ''}"
        parts += [(fmt.price(last, decimals), "bold"), "  ",
                  (fmt.change(change, last, decimals), style), "  ",
                  (fmt.percent(100.0 * change / ref if ref else math.nan), style), "  ", (bar, MUTED), "   "]
    for i, label in enumerate(timeframes):
        parts += [(f" {label} ", "reverse bold" if i == index else MUTED)]
    if data is not None and data.note:  # fewer bars than the chart could show, and why
        parts += ["   ", (data.note, MUTED)]
    return Content.assemble(*parts)


class Catalogue(Widget):
    """Every output's current value, in as many columns as the width takes."""

    DEFAULT_CSS = """
    Catalogue {
        height: auto;
        width: 1fr;
    }
    """

    values: reactive[Mapping[str, float]] = reactive(dict, always_update=True)
    """Output name -> current value (assign a new mapping)."""
    timeframe: reactive[str] = reactive("")
    """The timeframe the values are at (``1h``), said on the first line; empty: no such line."""

    def render(self) -> Content:
        if not self.values:
            return Content.styled("no values yet", MUTED)
        table = render_catalogue(self.values, self.size.width)
        if not self.timeframe:
            return table
        heading = Content.styled(fmt.fit(f"values at {self.timeframe}", self.size.width), f"{MUTED} bold")
        return Content("\n").join([heading, table])

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        heading = 1 if self.values and self.timeframe else 0
        return max(1, catalogue_shape(len(self.values), width)[1] + heading)


class DetailScreen(Screen[None]):
    """One symbol's chart and indicator values; ``escape`` goes back."""

    DEFAULT_CSS = """
    DetailScreen {
        layout: vertical;
    }
    DetailScreen #detail-title {
        height: 1;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    DetailScreen #detail-tabs {
        display: none;
    }
    DetailScreen.-narrow #detail-tabs {
        display: block;
    }
    DetailScreen #detail-body {
        height: 1fr;
    }
    DetailScreen #detail-values {
        width: 34;
        height: 1fr;
        padding: 0 1;
        border-left: vkey $primary;
    }
    DetailScreen.-narrow #detail-values {
        display: none;
        width: 1fr;
        border-left: none;
    }
    DetailScreen.-narrow.-values #detail-values {
        display: block;
    }
    DetailScreen.-narrow.-values #detail-chart {
        display: none;
    }
    DetailScreen #detail-message {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
        display: none;
    }
    DetailScreen.-message #detail-message {
        display: block;
    }
    DetailScreen.-message #detail-body, DetailScreen.-message #detail-tabs {
        display: none;
    }
    """

    AUTO_FOCUS = "#detail-values"  # ↑ ↓ pgup pgdn home end scroll the values from the start

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("left_square_bracket", "timeframe(-1)", "Prev TF", key_display="["),
        Binding("right_square_bracket", "timeframe(1)", "Next TF", key_display="]"),
        Binding("f", "timeframe(1)", "Timeframe", show=False),
        Binding("i", "show_tab('values')", "Indicators"),
        Binding("i", "show_tab('chart')", "Chart"),  # one of these two is enabled: the other tab's
    ]

    index: reactive[int] = reactive(0, init=False)
    """Position of the chosen timeframe in ``timeframes``."""
    data: reactive[ChartData | None] = reactive(None, always_update=True, init=False)
    """The latest fetched data for the chosen timeframe (None: nothing to show)."""
    message: reactive[str] = reactive("", init=False)
    """Shown instead of the chart when not empty (loading, no data, a failed fetch)."""

    def __init__(self, symbol: str, fetch: Fetch, timeframes: Sequence[tuple[str, int]],
                 refresh_s: float = 1.0, decimals: int | None = None) -> None:
        if not timeframes:
            raise ValueError("the detail pane needs at least one timeframe")
        super().__init__()
        self.symbol = symbol
        self.decimals = decimals  # of the symbol's tick size, when the feed knows it
        self.fetch = fetch
        self.timeframes = tuple(timeframes)
        self.refresh_s = refresh_s
        self.fetches = 0
        """Fetches started (each one finished before the next began)."""
        self._generation = 0  # bumped when the timeframe changes: results of older fetches are stale
        self._busy = False
        self._timer: Timer | None = None

    @property
    def factor(self) -> int:
        return self.timeframes[self.index][1]

    @property
    def timeframe(self) -> str:
        return self.timeframes[self.index][0]

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        yield Tabs(Tab("Chart", id="tab-chart"), Tab(self._values_label(), id="tab-values"), id="detail-tabs")
        with Horizontal(id="detail-body"):
            yield CandleChart(id="detail-chart")
            with VerticalScroll(id="detail-values"):
                yield Catalogue(id="detail-catalogue")
        yield Static(id="detail-message")
        yield Footer()

    def on_mount(self) -> None:
        self.message = f"loading {self.symbol}…"
        self._draw_title()
        self._timer = self.set_interval(self.refresh_s, self._request)
        self._request()

    def on_resize(self, event: events.Resize) -> None:
        narrow = event.size.width < WIDE
        if narrow != self.has_class("-narrow"):
            self.set_class(narrow, "-narrow")
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``i`` only where the values are a tab (wide screens show them beside the chart), and only the
        binding to the tab not shown, so the footer says where ``i`` goes."""
        if action != "show_tab":
            return True
        return self.has_class("-narrow") and (parameters == ("values",)) != self.has_class("-values")

    # --- fetching -----------------------------------------------------------------------------------
    def _request(self, changed: bool = False) -> None:
        """Fetch now unless a fetch is running; ``changed``: the running one's result is stale."""
        if changed:
            self._generation += 1
        if not self._busy:
            self._busy = True
            self._fetch_latest()

    @work(group=FETCH_GROUP, exit_on_error=False, name="chart")
    async def _fetch_latest(self) -> None:
        try:
            while True:
                generation, factor = self._generation, self.factor
                self.fetches += 1
                data = await self.fetch(self.symbol, factor)
                if generation == self._generation:  # else the timeframe changed meanwhile: go again
                    self._show(data)
                    return
        finally:
            self._busy = False

    def _show(self, data: ChartData | None) -> None:
        self.data = data
        if data is None:
            self.message = (f"No chart for {self.symbol}: it has no bars yet, or this console has no "
                            f"local engine (attached to a service).")
        else:
            self.message = ""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed fetch: said on the screen and once as a notification; refreshing pauses."""
        worker = event.worker
        if worker.group != FETCH_GROUP or event.state != WorkerState.ERROR:
            return
        error = worker.error
        text = str(error) or type(error).__name__
        self.log.error("chart fetch failed", error)
        if self._timer is not None:
            self._timer.pause()
        self.message = f"Could not load {self.symbol} ({self.timeframe}): {text}"
        self.notify(text, title="chart stopped", severity="error", timeout=10)

    # --- state to widgets ---------------------------------------------------------------------------
    def watch_data(self, data: ChartData | None) -> None:
        self.query_one(CandleChart).data = data
        catalogue = self.query_one(Catalogue)
        catalogue.values = dict(data.values) if data is not None else {}
        catalogue.timeframe = duration_label(data.timeframe_ns) if data is not None else ""
        self._draw_title()

    def watch_index(self) -> None:
        self._draw_title()
        self.query_one("#tab-values", Tab).label = self._values_label()

    def _values_label(self) -> str:
        return f"Indicators {self.timeframe}"

    def watch_message(self, message: str) -> None:
        self.query_one("#detail-message", Static).update(message)
        self.set_class(bool(message), "-message")

    def _draw_title(self) -> None:
        data = self.data
        labels = [label for label, _ in self.timeframes]
        self.query_one("#detail-title", Static).update(render_title(self.symbol, data, labels, self.index,
                                                                           self.decimals))

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        self.set_class(event.tab.id == "tab-values", "-values")
        self.refresh_bindings()

    # --- actions ------------------------------------------------------------------------------------
    def action_timeframe(self, step: int) -> None:
        """The previous or next timeframe, wrapping; fetched at once (and refreshing resumes)."""
        self.index = (self.index + step) % len(self.timeframes)
        if self.data is not None:  # its candles are the old timeframe's: the title must not claim otherwise
            self.data = None
            self.message = f"loading {self.symbol} ({self.timeframe})…"
        if self._timer is not None:
            self._timer.resume()
        self._request(changed=True)

    def action_show_tab(self, tab: str) -> None:
        """``values`` or ``chart``: the narrow screen's tab to show."""
        self.query_one(Tabs).active = f"tab-{tab}"

    def action_back(self) -> None:
        self.dismiss()
