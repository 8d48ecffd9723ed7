"""What the console measures about itself, for the performance panel: the process (CPU, memory, garbage
collections), the event loop (how late it wakes), frames (snapshot received to screen refreshed), the
bytes written to the terminal, and the hit rates of the caches the app registers — combined with the
pipeline's own figures (``PipelineHealth``) into one :class:`PerfSample`.

The app calls :meth:`PerfMonitor.frame_begin` and :meth:`PerfMonitor.sample` once per snapshot; both
are cheap (a clock read and a comparison) except when a sample is due, at most ``rate`` times a second
whatever the frame rate, which is also when psutil and ``gc.get_stats`` are read. A sample is a frozen
value and the history a tuple, so the panel can keep them while the monitor goes on.

Bytes are counted where Textual hands them to the terminal: the running driver's ``write``, wrapped on
:meth:`PerfMonitor.start`. A headless driver (every test) writes nothing, so there the monitor counts
the bytes each screen update would have written; the figure means the same in a test as over SSH.

No engine imports: the health is only read, by attribute, and the window must appear before numpy loads.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from widgets.perf_sample import CacheRate, PerfSample

if TYPE_CHECKING:
    from textual.app import App

    from engine.bus.merge import EngineView
    from engine.snapshot import PipelineHealth

# The samples' types live in widgets.perf_sample (widgets never import the console); importable here too.
__all__ = ["CacheRate", "CacheStats", "LoopLag", "PerfMonitor", "PerfSample"]

CacheStats = Callable[[], tuple[int, int]]
"""A cache's running (hits, misses)."""

HISTORY = 120
"""Samples kept for the sparklines: a minute at two samples a second."""


class LoopLike(Protocol):
    """The part of an asyncio loop the lag probe uses (a fake clock in tests)."""

    def time(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any: ...


class LoopLag:
    """How late the event loop wakes: a timer re-armed every ``interval`` seconds notes its lateness.

    A loop blocked by a long handler (a heavy redraw, a synchronous call) wakes the timer late by as
    long as it was blocked, which is what a user feels as a stutter. One ``call_later`` per interval,
    no task, no thread.
    """

    def __init__(self, loop: LoopLike, interval: float = 0.1) -> None:
        self.loop = loop
        self.interval = interval
        self._worst = math.nan
        self._handle: Any = None

    def start(self) -> None:
        if self._handle is None:
            self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def take(self) -> float:
        """The worst lateness in seconds since the last ``take`` (NaN when the timer has not fired)."""
        worst, self._worst = self._worst, math.nan
        return worst

    def _arm(self) -> None:
        self._handle = self.loop.call_later(self.interval, self._wake, self.loop.time() + self.interval)

    def _wake(self, due: float) -> None:
        late = max(0.0, self.loop.time() - due)
        if not late <= self._worst:  # also when the worst so far is NaN (none yet)
            self._worst = late
        self._arm()


class ByteCounter:
    """Counts the bytes the app writes to its terminal (see the module docstring for headless runs)."""

    def __init__(self) -> None:
        self.total = 0
        self._undo: list[Callable[[], None]] = []

    def count(self, data: str) -> None:
        self.total += len(data) if data.isascii() else len(data.encode("utf-8", "replace"))

    def attach(self, app: App[Any]) -> None:
        """Wrap the running driver's ``write`` (and, headless, the app's display) to count bytes."""
        self.detach()
        driver = app._driver
        if driver is None:
            return
        write = driver.write

        def counted_write(data: str) -> None:
            self.count(data)
            write(data)

        driver.write = counted_write  # type: ignore[method-assign]
        self._undo.append(lambda: vars(driver).pop("write", None))
        if driver.is_headless:
            display = app._display
            console = app.console

            def counted_display(screen: Any, renderable: Any) -> None:
                display(screen, renderable)
                if renderable is not None and not app._batch_count and hasattr(renderable, "render_segments"):
                    self.count(renderable.render_segments(console))

            app._display = counted_display  # type: ignore[method-assign]
            self._undo.append(lambda: vars(app).pop("_display", None))

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()


def fleet_engines(health: PipelineHealth | None) -> tuple[EngineView, ...]:
    """A fleet console's row per engine (its health is a ``FleetHealth``), else none."""
    from engine.bus.merge import FleetHealth  # here: the app's first frame comes before numpy loads

    return health.engines if isinstance(health, FleetHealth) else ()


class PerfMonitor:
    """Measures the console and turns its figures and the pipeline's health into :class:`PerfSample`s.

    ``clock`` (monotonic seconds) and ``process`` are parameters so tests can drive time; the defaults
    are what the app uses.
    """

    def __init__(self, rate: float = 2.0, history: int = HISTORY, clock: Callable[[], float] = time.monotonic,
                 process: psutil.Process | None = None) -> None:
        self.period = 1.0 / rate
        self.clock = clock
        self.bytes = ByteCounter()
        self.loop_lag: LoopLag | None = None
        self._process = process or psutil.Process()
        self._process.cpu_percent(None)  # the first reading only starts the measurement
        self._caches: dict[str, CacheStats] = {}
        self._cache_seen: dict[str, tuple[int, int]] = {}
        self._history: deque[PerfSample] = deque(maxlen=history)
        self._history_view: tuple[PerfSample, ...] = ()
        self._latest: PerfSample | None = None
        self._health: PipelineHealth | None = None
        self._frames: deque[float] = deque(maxlen=256)  # frame times since the last sample, seconds
        self._frame_start: float | None = None
        self.frame_log: list[float] | None = None
        """Set to a list to keep every frame time (seconds), as ``tickdeck bench --ui`` does."""
        self._app: App[Any] | None = None
        self._before = self._totals(None, clock(), _gc_counts())

    # --- wiring --------------------------------------------------------------------------------------
    def start(self, app: App[Any], loop: LoopLike | None = None) -> None:
        """Count the app's terminal output and watch its event loop (call from ``on_mount``)."""
        self._app = app
        self.bytes.attach(app)
        self.loop_lag = LoopLag(loop or asyncio.get_running_loop())
        self.loop_lag.start()

    def stop(self) -> None:
        """Undo :meth:`start` (the app is closing)."""
        self.bytes.detach()
        if self.loop_lag is not None:
            self.loop_lag.stop()
        self._app = None

    def add_cache(self, name: str, stats: CacheStats) -> None:
        """Report the hit rate of a cache: ``stats()`` returns its running (hits, misses)."""
        self._caches[name] = stats
        self._cache_seen[name] = (0, 0)

    # --- per frame -----------------------------------------------------------------------------------
    def frame_begin(self) -> None:
        """A snapshot arrived: time it until the screen has been refreshed.

        While a frame is pending, later snapshots join it: the time runs from the oldest one not yet
        on screen, which is what the user waits for.
        """
        if self._frame_start is not None:
            return
        self._frame_start = self.clock()
        if self._app is not None and not self._app.call_after_refresh(self.frame_end):
            self._frame_start = None  # the app is closing: nothing will be refreshed

    def frame_end(self) -> None:
        """The screen shows the frame begun last (called after the refresh, or by a test)."""
        if self._frame_start is not None:
            took = self.clock() - self._frame_start
            self._frames.append(took)
            if self.frame_log is not None:
                self.frame_log.append(took)
            self._frame_start = None

    def sample(self, health: PipelineHealth | None = None) -> PerfSample:
        """The latest sample: a new one when ``period`` has passed since the last, else the same object
        (so a reactive holding it does not redraw). ``health`` None keeps the last health seen."""
        if health is not None:
            self._health = health
        now = self.clock()
        latest = self._latest
        if latest is not None and now - latest.at < self.period:
            return latest
        latest = self._latest = self._take(now)
        self._history.append(latest)
        self._history_view = tuple(self._history)
        return latest

    @property
    def history(self) -> tuple[PerfSample, ...]:
        """The recent samples, oldest first (the same tuple until the next sample)."""
        return self._history_view

    # --- measuring -----------------------------------------------------------------------------------
    def _totals(self, health: PipelineHealth | None, now: float,
                gcs: tuple[int, ...]) -> tuple[float, int, int, int, int, int]:
        """(time, bytes, gc collections, ticks in, ticks processed, coalesced): the running totals that
        become rates (-1: unknown, no health yet)."""
        if health is None:
            return (now, self.bytes.total, sum(gcs), -1, -1, -1)
        return (now, self.bytes.total, sum(gcs), health.ticks_in, health.ticks_processed, health.coalesced)

    def _take(self, now: float) -> PerfSample:
        proc = self._process
        with proc.oneshot():
            cpu = proc.cpu_percent(None)
            rss = int(proc.memory_info().rss)
        h = self._health
        gcs = _gc_counts()
        before, after = self._before, self._totals(h, now, gcs)
        self._before = after
        dt = after[0] - before[0]
        rate = [_rate(b, a, dt) for b, a in zip(before[1:], after[1:], strict=True)]
        frames = sorted(self._frames)
        self._frames.clear()
        lag = self.loop_lag.take() if self.loop_lag is not None else math.nan
        nan = math.nan
        return PerfSample(
            at=now, cpu_percent=cpu, rss_bytes=rss, bytes_per_s=rate[0], bytes_total=self.bytes.total,
            ticks_in_per_s=rate[2], ticks_processed_per_s=rate[3],
            backlog=max(0, h.ticks_in - h.ticks_processed) if h else 0,
            engine_p50_us=h.engine_p50_us if h else nan, engine_p99_us=h.engine_p99_us if h else nan,
            signal_p50_ms=h.signal_p50_ms if h else nan, signal_p99_ms=h.signal_p99_ms if h else nan,
            lag_p50_ms=h.lag_p50_ms if h else nan, lag_p99_ms=h.lag_p99_ms if h else nan,
            loop_lag_ms=lag * 1e3,
            frame_p50_ms=frames[len(frames) // 2] * 1e3 if frames else nan,
            frame_max_ms=frames[-1] * 1e3 if frames else nan,
            queue_depth=h.queue_depth if h else 0, queue_depth_max=h.queue_depth_max if h else 0,
            coalesced=h.coalesced if h else 0, coalesced_per_s=rate[4],
            gc_per_s=rate[1], gc_collections=gcs,
            caches=self._cache_rates(),
            feed=h.feed if h else "", reconnects=h.reconnects if h else 0,
            bad_messages=h.bad_messages if h else 0, gaps=h.gaps if h else 0,
            duplicates=h.duplicates if h else 0,
            engines=fleet_engines(h),
        )

    def _cache_rates(self) -> tuple[CacheRate, ...]:
        rates = []
        for name, stats in self._caches.items():
            hits, misses = stats()
            seen_hits, seen_misses = self._cache_seen[name]
            self._cache_seen[name] = (hits, misses)
            recent_hits, recent = hits - seen_hits, hits - seen_hits + misses - seen_misses
            if recent <= 0:  # idle (or the cache was reset): the all-time rate
                recent_hits, recent = hits, hits + misses
            rates.append(CacheRate(name, recent_hits / recent if recent > 0 else math.nan, hits + misses))
        return tuple(rates)


def _gc_counts() -> tuple[int, ...]:
    return tuple(int(g["collections"]) for g in gc.get_stats())


def _rate(before: float, after: float, dt: float) -> float:
    """Per second between two running totals; NaN when unknown (no total yet, no time, or a total that
    went back: a reconnected attach restarts its publisher's counts)."""
    if before < 0 or after < before or dt <= 0:
        return math.nan
    return (after - before) / dt
