"""The header line: app name, feed and its state, market clock, bar interval, ticks per second, history
loading (``history 12/40``), pause.

State is a handful of reactives; :func:`render_header` draws them as ``Content`` (theme variables for
colours) and is tested on its own. :class:`TickRate` turns the engine's running tick count into a rate.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def render_header(s: HeaderState) -> Content:
    """``tickdeck  sim ● live  14:03:27  1m bars  2,013 ticks/s  ⏸ PAUSED`` (parts left out when unknown)."""
    style = STATE_STYLES.get(s.state, MUTED)
    state = STATE_TEXT.get(s.state, s.state)
    parts: list[str | tuple[str, str]] = [
        ("tickdeck", "$text-primary bold"),
        "  ",
        (s.feed, "bold"),
        " ",
        (f"● {state}", style),
    ]
    if s.reason:
        parts += [" ", (s.reason, style)]
    if s.retry_at_ns and s.state == "reconnecting":
        parts += [" ", (f"(retry in {max(0, math.ceil((s.retry_at_ns - s.now_ns) / 1e9))}s)", style)]
    if s.clock_ns:
        parts += ["  ", (fmt.clock(s.clock_ns), "bold")]
    if s.interval:
        parts += ["  ", (f"{s.interval} bars", MUTED)]
    if s.tick_rate == s.tick_rate:
        parts += ["  ", f"{s.tick_rate:,.0f}", (" ticks/s", MUTED)]
    if s.health is not None:
        parts += _health_parts(s.health)
    if s.paused:
        parts += ["  ", ("⏸ PAUSED", "$text-warning bold reverse")]
    return Content.assemble(*parts)


def _health_parts(h: PipelineHealth) -> list[str | tuple[str, str]]:
    """Lag always (it is the figure that says whether the console keeps up); the symbols whose history
    has loaded while some are still loading; trouble only when there is some: a backed-up queue, bad
    messages, reconnects, gaps in the trade sequence."""
    parts: list[str | tuple[str, str]] = ["  ", ("lag ", MUTED), f"{h.lag_p99_ms:,.0f} ms"]
    if h.history_done < h.history_total:
        parts += ["  ", ("history ", MUTED), f"{h.history_done:,}/{h.history_total:,}"]
    for value, label in ((h.queue_depth, "queued"), (h.bad_messages, "bad"), (h.reconnects, "reconn"),
                         (h.gaps, "gaps")):
        if value:
            parts += ["  ", (f"{value:,} {label}", "$text-warning")]
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
        return render_header(self.header_state())
