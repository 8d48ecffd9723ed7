"""The header line: app name, feed and its state, market clock, bar interval, ticks per second, history
loading (``history 12/40``), pause.

State is a handful of reactives; :func:`render_header` draws them as ``Content`` (theme variables for
colours) in the width the line has, and is tested on its own: when not everything fits, the feed's state
and the reconnect countdown stay, the reason is cut to what is left, and the other parts give way by rank
(:func:`fit_parts`). :class:`TickRate` turns the engine's running tick count into a rate.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.cells import cell_len
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from widgets import formatting as fmt

if TYPE_CHECKING:
    from engine.runtime import PipelineHealth

STATE_STYLES = {
    "live": "$text-success",
    "connecting": "$text-warning",
    "reconnecting": "$text-warning",
    "stale": "$text-warning",
    "starting": "$text-warning",
    "failed": "$text-error",
    "stopped": "$text-muted",
}
STATE_TEXT = {"starting": "starting engine…"}
MUTED = "$text-muted"


@dataclass(frozen=True)
class HeaderState:
    """Everything the header line shows (a plain value, so drawing is a pure function of it)."""

    feed: str
    state: str = "starting"
    reason: str = ""
    clock_ns: int = 0
    interval: str = ""
    tick_rate: float = float("nan")
    paused: bool = False
    health: PipelineHealth | None = None
    retry_at_ns: int = 0  # wall time of the next reconnect attempt (0: none pending)
    now_ns: int = 0  # wall time of the drawing, for the countdown


@dataclass(frozen=True)
class Part:
    """One piece of the header line: its text and styles, how much it matters (0 most: kept first when
    the line is too narrow), and whether it is the reason (which is cut to fit rather than left out)."""

    pieces: tuple[tuple[str, str], ...]
    rank: int
    flexible: bool = False

    @property
    def width(self) -> int:
        return sum(cell_len(text) for text, _ in self.pieces)


REASON_MIN = 16
"""Cells the reason keeps before the feed, the clock, trouble counts and history progress get room."""
LESSER = 4
"""Parts of this rank and above (ticks/s, lag, bar interval, the app's name) get room only after the
whole reason: while the feed is down, why matters more than a rate of zero."""
GAP = "  "


def header_parts(s: HeaderState) -> list[Part]:
    """The parts of the line in the order they are drawn, each ranked: the feed's state, the reconnect
    countdown and pause first; then the feed, the clock and trouble; then history progress; the rest
    (tick rate, lag, bar interval, the app's name) only when there is room. The reason is flexible."""
    style = STATE_STYLES.get(s.state, MUTED)
    state = STATE_TEXT.get(s.state, s.state)
    parts = [Part((("tickdeck", "$text-primary bold"), (GAP, "")), 6),
             Part(((s.feed, "bold"), (" ", "")), 1),
             Part(((f"● {state}", style),), 0)]
    if s.reason:
        parts.append(Part(((" ", ""), (s.reason, style)), 0, flexible=True))
    if s.retry_at_ns and s.state == "reconnecting":
        seconds = max(0, math.ceil((s.retry_at_ns - s.now_ns) / 1e9))
        parts.append(Part(((" ", ""), (f"(retry in {seconds}s)", style)), 0))
    if s.clock_ns:
        parts.append(Part(((GAP, ""), (fmt.clock(s.clock_ns), "bold")), 1))
    if s.interval:
        parts.append(Part(((GAP, ""), (f"{s.interval} bars", MUTED)), 5))
    if s.tick_rate == s.tick_rate:
        parts.append(Part(((GAP, ""), (f"{s.tick_rate:,.0f}", ""), (" ticks/s", MUTED)), 4))
    if s.health is not None:
        parts += _health_parts(s.health)
    if s.paused:
        parts.append(Part(((GAP, ""), ("⏸ PAUSED", "$text-warning bold reverse")), 0))
    return parts


def fit_parts(parts: list[Part], width: int | None) -> list[Part]:
    """The parts that fit in ``width`` cells, in their order, the reason cut (``…``) to what is left.

    Parts of rank 0 stay, whatever the width (the line's own ellipsis cuts them when even they do not
    fit). The reason then gets :data:`REASON_MIN` cells (or its length); the other parts are added by
    rank while they fit, those of rank :data:`LESSER` and above only beside the whole reason; the reason
    gets whatever is left after that.
    """
    if width is None:
        return list(parts)
    reason = next((p for p in parts if p.flexible), None)
    kept = {id(p) for p in parts if p.rank == 0 and not p.flexible}
    used = sum(p.width for p in parts if id(p) in kept)
    whole = reason.width if reason is not None else 0
    least = min(whole, REASON_MIN + 1)  # +1: its leading space
    for part in sorted((p for p in parts if p.rank > 0), key=lambda p: p.rank):  # sorted() is stable
        if used + (whole if part.rank >= LESSER else least) + part.width <= width:
            kept.add(id(part))
            used += part.width
    out: list[Part] = []
    for part in parts:
        if part is reason:
            room = width - used
            if room >= min(reason.width, 2 + 1):  # at least a character and the ellipsis
                out.append(part if room >= part.width else _cut_reason(part, room))
        elif id(part) in kept:
            out.append(part)
    return out


def _cut_reason(part: Part, room: int) -> Part:
    (space, _), (text, style) = part.pieces
    return Part(((space, ""), (fmt.fit(text, room - cell_len(space)), style)), part.rank, True)


def render_header(s: HeaderState, width: int | None = None) -> Content:
    """``tickdeck  sim ● live  14:03:27  1m bars  2,013 ticks/s  ⏸ PAUSED`` (parts left out when unknown);
    in ``width`` cells, the parts that matter most (see :func:`fit_parts`)."""
    pieces = [piece for part in fit_parts(header_parts(s), width) for piece in part.pieces]
    return Content.assemble(*((text, style) if style else text for text, style in pieces))


def _health_parts(h: PipelineHealth) -> list[Part]:
    """Lag always (it is the figure that says whether the console keeps up); the symbols whose history
    has loaded while some are still loading; trouble only when there is some: a backed-up queue, bad
    messages, reconnects, gaps in the trade sequence."""
    parts = [Part(((GAP, ""), ("lag ", MUTED), (f"{h.lag_p99_ms:,.0f} ms", "")), 4)]
    if h.history_done < h.history_total:
        done = f"{h.history_done:,}/{h.history_total:,}"
        parts.append(Part(((GAP, ""), ("history ", MUTED), (done, "")), 3))
    for value, label in ((h.queue_depth, "queued"), (h.bad_messages, "bad"), (h.reconnects, "reconn"),
                         (h.gaps, "gaps")):
        if value:
            parts.append(Part(((GAP, ""), (f"{value:,} {label}", "$text-warning")), 2))
    return parts


class TickRate:
    """Ticks per second from the engine's cumulative tick count, over a sliding window of snapshots."""

    MAX_POINTS = 256
    """Snapshots kept: the window holds at most 2 s x 60 fps (``ui.fps`` <= 60) of them, but a clock that
    steps back (a looped replay, a publisher's clock set back) would stop the window from sliding."""

    def __init__(self, window_ns: int = 2_000_000_000) -> None:
        self.window_ns = window_ns
        self._points: deque[tuple[int, int]] = deque(maxlen=self.MAX_POINTS)

    def update(self, at_ns: int, ticks: int) -> float:
        """Record ``ticks`` seen by ``at_ns``; the rate over the window (NaN until two points)."""
        points = self._points
        points.append((at_ns, ticks))
        while len(points) > 2 and at_ns - points[1][0] >= self.window_ns:
            points.popleft()
        (t0, n0), (t1, n1) = points[0], points[-1]
        return (n1 - n0) * 1e9 / (t1 - t0) if t1 > t0 else float("nan")


class HeaderBar(Widget):
    """One line across the top of the app."""

    DEFAULT_CSS = """
    HeaderBar {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    feed: reactive[str] = reactive("")
    """Name of the feed in use (``sim``, ``binance``, …)."""
    state: reactive[str] = reactive("starting")
    """The feed's state (``live``, ``reconnecting``, …), ``starting`` before the engine is up,
    ``failed`` after an error."""
    reason: reactive[str] = reactive("")
    """Why the state is what it is (an error message, a reconnect reason); empty when all is well."""
    clock_ns: reactive[int] = reactive(0)
    """Market clock: the time of the latest snapshot, ns since the epoch (0 before the first)."""
    interval: reactive[str] = reactive("")
    """Bar interval (``1m``)."""
    tick_rate: reactive[float] = reactive(float("nan"))
    """Ticks per second into the engine (NaN until measured)."""
    paused: reactive[bool] = reactive(False)
    """Whether the display is paused."""
    health: reactive[PipelineHealth | None] = reactive(None)
    """The pipeline's lag and the feed's trouble counts, as of the latest frame."""
    retry_at_ns: reactive[int] = reactive(0)
    """Wall time of the next reconnect attempt (0: none); drawn as a countdown, redrawn every frame."""

    def header_state(self) -> HeaderState:
        return HeaderState(self.feed, self.state, self.reason, self.clock_ns, self.interval, self.tick_rate,
                           self.paused, self.health, self.retry_at_ns, time.time_ns())

    def render(self) -> Content:
        return render_header(self.header_state(), self.size.width)
