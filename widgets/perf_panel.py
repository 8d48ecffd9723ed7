"""The performance panel: the console's own figures, each with its current value and a sparkline of
its recent history, coloured when it crosses a threshold.

State and drawing are apart, as in the watchlist. The widget holds two reactives, the latest
:class:`~widgets.perf_sample.PerfSample` and the history of samples; :func:`figures` decides what each row
says and in which colour *role*, and :func:`perf_lines` lays the rows out for a width (two columns
from :data:`TWO_COLUMNS` cells, one below). The widget only turns roles into its component classes'
styles, which are theme variables, so every theme (``ansi16`` included) recolours it.

Thirteen rows (with the app's one cache): as many as the lower pane holds at 160x48, where the panel
sits beside the signal log. One more would make its pane scroll, and the scrollbar's thumb, drawn with
the same eighth blocks as a sparkline (``▅▅``), would read as a stray sparkline; so related figures share
a row (memory and garbage collections, the queue and the batches coalesced). A console on a fleet
(``tickdeck attach nats://``) has one line per engine above them (:func:`engine_lines`); the pane
scrolls then.

Thresholds are for a console that keeps up on a small machine at 10 frames a second: a frame or a
loop stall near the frame budget (100 ms) warns, one past it is bad.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from widgets import formatting as fmt
from widgets.sparkline import spark

if TYPE_CHECKING:
    from engine.bus.merge import EngineView
    from widgets.perf_sample import PerfSample

Role = Literal["label", "value", "warn", "bad", "muted", "spark"]
ROLES: tuple[Role, ...] = ("label", "value", "warn", "bad", "muted", "spark")

LABEL, VALUE, GAP = 12, 21, 1
"""Cells of a row's label and value, and between the parts of a row."""
GUTTER = 3
"""Cells between the two columns."""
TWO_COLUMNS = 100
"""Width from which the rows are laid out in two columns."""
SPARK_MIN, SPARK_MAX = 4, 60
DEFAULT_WIDTH = 80


class Figure(NamedTuple):
    """One row: what it is, its value as text, the value's colour role, and its history to draw."""

    label: str
    value: str
    role: Role
    series: tuple[float, ...] = ()


Segment = tuple[str, Role]
Line = tuple[Segment, ...]


# --- formatting ------------------------------------------------------------------------------------
def duration(ms: float) -> str:
    """A duration in at most six cells: ``85µs``, ``4.5ms``, ``120ms``, ``1.2s``."""
    if not math.isfinite(ms):
        return fmt.MISSING
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def size(n: float) -> str:
    """A byte count: ``512 B``, ``12.3 KB``, ``215 MB``, ``1.20 GB`` (powers of 1000)."""
    if not math.isfinite(n):
        return fmt.MISSING
    for limit, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(n) >= limit:
            scaled = n / limit
            decimals = 2 if scaled < 10 else 1 if scaled < 100 else 0
            return f"{scaled:.{decimals}f} {unit}"
    return f"{n:.0f} B"


def per_second(n: float) -> str:
    return fmt.MISSING if not math.isfinite(n) else f"{fmt.volume(n)}/s"


def level(value: float, warn: float, bad: float) -> Role:
    """The role of a figure where higher is worse; ``muted`` when it is not measured (NaN)."""
    if not math.isfinite(value):
        return "muted"
    return "bad" if value >= bad else "warn" if value >= warn else "value"


def level_low(value: float, warn: float, bad: float) -> Role:
    """The role of a figure where lower is worse (a hit rate)."""
    if not math.isfinite(value):
        return "muted"
    return "bad" if value <= bad else "warn" if value <= warn else "value"


def pair(p50: float, p99: float, unit: Callable[[float], str] = duration) -> str:
    return f"p50 {unit(p50)} p99 {unit(p99)}"


# --- what the panel shows --------------------------------------------------------------------------
def figures(sample: PerfSample, history: Sequence[PerfSample]) -> list[Figure]:
    """Every row of the panel for ``sample``, with sparklines drawn from ``history`` (oldest first)."""
    s = sample

    def series(get: Callable[[PerfSample], float]) -> tuple[float, ...]:
        """The figure's history from its first measurement (samples before it say nothing, and would
        take a share of the stretched line as blanks)."""
        values = [float(get(h)) for h in history]
        first = next((i for i, v in enumerate(values) if math.isfinite(v)), len(values))
        return tuple(values[first:])

    rows = [
        Figure("CPU", _percent(s.cpu_percent), level(s.cpu_percent, 70, 95), series(lambda h: h.cpu_percent)),
        Figure("memory", f"{size(s.rss_bytes)} GC {_per_s(s.gc_per_s)}", level(s.rss_bytes, 1e9, 2e9),
               series(lambda h: h.rss_bytes)),
        Figure("output", per_second_bytes(s.bytes_per_s), level(s.bytes_per_s, 100e3, 500e3),
               series(lambda h: h.bytes_per_s)),
        Figure("ticks in", per_second(s.ticks_in_per_s), neutral(s.ticks_in_per_s),
               series(lambda h: h.ticks_in_per_s)),
        Figure("processed", per_second(s.ticks_processed_per_s) + _behind(s.backlog), _backlog_role(s),
               series(lambda h: h.ticks_processed_per_s)),
        Figure("engine", pair(s.engine_p50_us / 1e3, s.engine_p99_us / 1e3),
               level(s.engine_p99_us, 10e3, 50e3), series(lambda h: h.engine_p99_us)),
        Figure("tick→signal", pair(s.signal_p50_ms, s.signal_p99_ms), level(s.signal_p99_ms, 100, 500),
               series(lambda h: h.signal_p99_ms)),
        Figure("pipe lag", pair(s.lag_p50_ms, s.lag_p99_ms), level(s.lag_p99_ms, 100, 500),
               series(lambda h: h.lag_p99_ms)),
        Figure("loop lag", duration(s.loop_lag_ms), level(s.loop_lag_ms, 50, 200),
               series(lambda h: h.loop_lag_ms)),
        Figure("frame", f"{duration(s.frame_p50_ms)} max {duration(s.frame_max_ms)}",
               level(s.frame_max_ms, 50, 100), series(lambda h: h.frame_max_ms)),
        Figure("queue", f"{s.queue_depth:,} max {s.queue_depth_max:,} coal {s.coalesced:,}", _queue_role(s),
               series(lambda h: h.queue_depth)),
    ]
    for cache in s.caches:
        name = cache.name

        def hit_rate(h: PerfSample, name: str = name) -> float:
            return next((c.hit_rate for c in h.caches if c.name == name), math.nan)

        rate = "—" if not math.isfinite(cache.hit_rate) else f"{cache.hit_rate:.0%}"
        rows.append(Figure(f"cache {name}", f"{rate} of {fmt.volume(cache.lookups)}",
                           level_low(cache.hit_rate, 0.8, 0.5), series(hit_rate)))
    trouble = s.reconnects + s.bad_messages
    gaps = f" gaps {s.gaps:,}" if s.gaps else ""
    rows.append(Figure(f"{s.feed or 'feed'} feed", f"reconn {s.reconnects:,} bad {s.bad_messages:,}{gaps}",
                       "warn" if trouble or s.gaps else "value",
                       series(lambda h: h.reconnects + h.bad_messages)))
    return rows


def engine_line(view: EngineView, width: int) -> Line:
    """One engine of a fleet (``tickdeck attach nats://``): its name, feed and interval, state, symbols,
    when it was last heard of, and its own lag and tick -> signal p99; gone in the bad colour, a feed
    that is not live in the warning one."""
    role: Role = "bad" if view.gone else "value" if view.state == "live" else "warn"
    where = f"{view.feed} {view.interval}".strip()
    figures = "" if view.gone else (f"  lag p99 {duration(view.lag_p99_ms)}  sig p99 "
                                    f"{duration(view.signal_p99_ms)}")
    seen = f"seen {view.seen_s:.1f}s ago"
    line: Line = ((fmt.fit(view.name, LABEL).ljust(LABEL), "label"), (" " * GAP, "value"),
                  (f"{where:<8} ", "muted"), (f"{view.state:<12}", role),
                  (f" {view.symbols:>6,} sym  {seen}{figures}", "value"))
    return _cut(line, width)


def engine_lines(sample: PerfSample, width: int) -> list[Line]:
    """The fleet's engines under a heading line, above the figures (the pane shows its first lines; a
    fleet's console is there for them); none for a console on one runtime."""
    if not sample.engines:
        return []
    gone = sum(v.gone for v in sample.engines)
    head = f"engines {len(sample.engines) - gone} up" + (f", {gone} gone" if gone else "")
    return [((fmt.fit(head, width), "label"),), *(engine_line(v, width) for v in sample.engines)]


def _queue_role(s: PerfSample) -> Role:
    """The queue's depth by its thresholds, and a warning at least while batches are being coalesced
    (the engine is behind)."""
    role = level(s.queue_depth, 8, 32)
    return "warn" if role == "value" and s.coalesced_per_s > 0 else role


def neutral(value: float) -> Role:
    """The role of a figure that is never good or bad in itself (a rate of ticks)."""
    return "value" if math.isfinite(value) else "muted"


def _backlog_role(s: PerfSample) -> Role:
    """Ticks still queued: a warning past a second of the feed's rate, bad past ten seconds of it."""
    if not s.backlog:
        return neutral(s.ticks_processed_per_s)
    second = s.ticks_in_per_s if math.isfinite(s.ticks_in_per_s) and s.ticks_in_per_s > 0 else math.inf
    return level(s.backlog, second, 10 * second)


def _behind(backlog: int) -> str:
    return f" {fmt.volume(backlog)} behind" if backlog else ""


def _percent(value: float) -> str:
    return fmt.MISSING if not math.isfinite(value) else f"{value:.0f}%"


def per_second_bytes(n: float) -> str:
    return fmt.MISSING if not math.isfinite(n) else f"{size(n)}/s"


def _per_s(n: float) -> str:
    return fmt.MISSING if not math.isfinite(n) else f"{n:.1f}/s" if n < 10 else f"{n:,.0f}/s"


def row_line(figure: Figure, width: int) -> Line:
    """One row in ``width`` cells: label, value, and a sparkline over the rest, up to :data:`SPARK_MAX`
    (none below :data:`SPARK_MIN` cells). The sparkline spans its room from the first sample on: a
    history shorter than the room is stretched over it, rather than drawn as a stub beside blanks."""
    label = fmt.fit(figure.label, LABEL).ljust(LABEL)
    value = fmt.fit(figure.value, VALUE).ljust(VALUE)
    room = min(SPARK_MAX, width - LABEL - VALUE - 2 * GAP)
    line: list[Segment] = [(label, "label"), (" " * GAP, "value"), (value, figure.role)]
    if room >= SPARK_MIN and figure.series:
        line += [(" " * GAP, "value"), (spark(figure.series, room, stretch=True).ljust(room), "spark")]
    else:
        line.append((" " * max(0, width - LABEL - VALUE - GAP), "value"))
    return _cut(tuple(line), width)


def perf_lines(sample: PerfSample | None, history: Sequence[PerfSample], width: int) -> list[Line]:
    """The panel as lines of ``width`` cells at most: one column of rows, two from :data:`TWO_COLUMNS`."""
    if sample is None:
        return [(("measuring…", "muted"),)]
    rows = figures(sample, history)
    if width < TWO_COLUMNS:
        return engine_lines(sample, width) + [row_line(f, width) for f in rows]
    column = (width - GUTTER) // 2
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:]
    lines: list[Line] = engine_lines(sample, width)  # a fleet's engines first: what its console is for
    for i, figure in enumerate(left):
        line = row_line(figure, column)
        if i < len(right):
            pad = column - line_width(line)
            line = (*line, (" " * (pad + GUTTER), "value"), *row_line(right[i], column))
        lines.append(line)
    return lines


def line_width(line: Line) -> int:
    return sum(len(text) for text, _ in line)


def line_text(line: Line) -> str:
    return "".join(text for text, _ in line)


def _cut(line: Line, width: int) -> Line:
    """``line`` without anything past ``width`` cells (the sparkline goes first, then the value)."""
    out: list[Segment] = []
    room = width
    for text, role in line:
        if room <= 0:
            break
        out.append((text[:room], role))
        room -= len(text[:room])
    return tuple(out)


class PerfPanel(Widget):
    """The console's performance figures; feed it :class:`~console.perf.PerfMonitor`'s samples."""

    COMPONENT_CLASSES = {f"perf-panel--{role}" for role in ROLES}

    DEFAULT_CSS = """
    PerfPanel {
        height: auto;
        padding: 0 1;
    }
    PerfPanel > .perf-panel--label { color: $foreground-muted; }
    PerfPanel > .perf-panel--value { color: $foreground; }
    PerfPanel > .perf-panel--warn { color: $text-warning; text-style: bold; }
    PerfPanel > .perf-panel--bad { color: $text-error; text-style: bold; }
    PerfPanel > .perf-panel--muted { color: $foreground-muted; }
    PerfPanel > .perf-panel--spark { color: $text-primary; }
    """

    sample: reactive[PerfSample | None] = reactive(None)
    """The latest sample drawn; None until the first (the panel then says it is measuring)."""
    history: reactive[tuple[PerfSample, ...]] = reactive(tuple)
    """Recent samples, oldest first, for the sparklines (set before ``sample``: one redraw for both)."""

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()  # the roles' colours come from the theme: a new theme redraws

    def watch_sample(self, old: PerfSample | None, new: PerfSample | None) -> None:
        # The height changes only from "measuring" to the figures: a layout pass (which redraws the whole
        # screen) then, a repaint of the panel alone on every later sample.
        if (old is None) != (new is None):
            self.refresh(layout=True)

    def render(self) -> Text:
        width = self.content_size.width or DEFAULT_WIDTH
        styles = {role: self.get_component_rich_style(f"perf-panel--{role}", partial=True) for role in ROLES}
        text = Text(no_wrap=True, overflow="crop", end="")
        for i, line in enumerate(perf_lines(self.sample, self.history, width)):
            if i:
                text.append("\n")
            for part, role in line:
                text.append(part, styles.get(role, Style.null()))
        return text
