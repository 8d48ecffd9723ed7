"""How far a first-run kernel compile has got, for a progress line: which kernel, n of N, elapsed, and
an estimate of the time left.

numba announces every compile of a dispatcher for a signature (the ``"numba:compile"`` event, started
and ended in the compiling thread); a kernel loaded from the cache announces nothing. So counting those
events costs nothing on a warm start, and never runs on the hot path: only while something compiles,
at most a few hundred times per checkout. Each ended compile of an engine kernel (a callee compiled for
its caller counts too) is one step. ``total`` is how many steps a cold cache takes, and ``shares`` how
the time divides among them: figures ``engine.precompile`` measured and ships with its steps.

Readers (a terminal line, the headless log, the console's message) take a :class:`Progress` copy from
any thread: the counter is written by the compiling thread under a lock and never waited on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

ESTIMATE_AFTER = 5
"""Steps done before a time-left estimate is shown (the first ones say little about the rate)."""


@dataclass(frozen=True)
class Progress:
    """A copy of the compile's state at one moment."""

    done: int
    total: int
    kernel: str  # the kernel being compiled, else the last one compiled ('' before the first)
    elapsed_s: float
    finished: bool
    shares: tuple[float, ...] = ()  # see CompileProgress

    @property
    def left_s(self) -> float | None:
        """Seconds left, once ``ESTIMATE_AFTER`` steps are done (None before): the time so far, scaled by
        the share of a compile's time its first ``done`` steps take (steps are far from equal: the
        biggest kernels finish last)."""
        if self.done < ESTIMATE_AFTER or self.finished or self.total <= 0:
            return None
        share = _share(min(self.done / self.total, 1.0), self.shares)
        return self.elapsed_s * (1.0 - share) / share

    def text(self) -> str:
        """``compiling kernels: 23 of 113, 12 s, about 40 s left (sma_step)``: the kernel's name last, so
        a narrow line loses it first."""
        return f"compiling kernels: {self.count_text()}"

    def count_text(self) -> str:
        """``23 of 113, 12 s, about 40 s left (sma_step)``"""
        total = max(self.total, self.done)  # a stale total: never 114 of 113
        left = self.left_s
        estimate = "" if left is None else f", about {_duration(left)} left"
        what = f" ({self.kernel})" if self.kernel else ""
        return f"{self.done} of {total}, {self.elapsed_s:.0f} s{estimate}{what}"

    def fields(self) -> dict[str, Any]:
        """The same, as JSON log fields."""
        left = self.left_s
        return {"done": self.done, "total": self.total, "kernel": self.kernel,
                "elapsed_s": round(self.elapsed_s, 1), "left_s": None if left is None else round(left)}


def _share(fraction: float, shares: tuple[float, ...]) -> float:
    """The share of the time taken by ``fraction`` of the steps: ``shares`` holds it at evenly spaced
    fractions (the last is 1.0), interpolated linearly; without them, steps take equal time."""
    if not shares:
        return fraction
    points = (0.0, *shares)
    x = fraction * (len(points) - 1)
    i = min(int(x), len(points) - 2)
    return max(points[i] + (points[i + 1] - points[i]) * (x - i), 1e-6)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    return f"{seconds / 60:.0f} min"


class CompileProgress:
    """Counts the compiles of kernels whose module starts with ``prefix`` while :meth:`watching`.

    ``on_step`` callbacks run in the compiling thread after each step (only while compiling), given
    the progress with the kernel just compiled."""

    def __init__(self, total: int, prefix: str = "engine.", shares: tuple[float, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.prefix = prefix
        self.shares = shares  # share of the time at 1/len, 2/len, ... of the steps (for the estimate)
        self.on_step: list[Callable[[Progress], None]] = []
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._stack: list[str] = []  # kernels being compiled, innermost last: as deep as kernels call
        # kernels (a handful), since a callee compiles inside its caller
        self._last = ""  # the last kernel compiled
        self._started: float | None = None
        self._finished_at: float | None = None

    @property
    def started(self) -> bool:
        return self._started is not None

    def start(self) -> None:
        """Start (or start again, for a later compile counted by the same reader)."""
        with self._lock:
            self._started = self._clock()
            self._finished_at = None

    def finish(self) -> None:
        with self._lock:
            self._finished_at = self._clock()
            self._stack.clear()

    def began(self, kernel: str) -> None:
        with self._lock:
            self._stack.append(kernel)

    def ended(self) -> None:
        with self._lock:
            if self._stack:
                self._last = self._stack.pop()
            self._done += 1
            last = self._last
        if self.on_step:
            now = dataclasses.replace(self.now(), kernel=last)  # a step's line names what it compiled
            for callback in self.on_step:
                callback(now)

    def now(self) -> Progress:
        with self._lock:
            start = self._started
            end = self._finished_at if self._finished_at is not None else self._clock()
            return Progress(self._done, self.total, self._stack[-1] if self._stack else self._last,
                            0.0 if start is None else end - start, self._finished_at is not None,
                            self.shares)

    @contextlib.contextmanager
    def watching(self) -> Iterator[CompileProgress]:
        """Count numba's compile events until the block ends (imports numba: call it where it may)."""
        from numba.core import event

        progress = self

        class Listener(event.Listener):
            def on_start(self, ev: event.Event) -> None:
                fn = getattr(ev.data.get("dispatcher"), "py_func", None)
                if fn is not None and fn.__module__.startswith(progress.prefix):
                    progress.began(fn.__qualname__)

            def on_end(self, ev: event.Event) -> None:
                fn = getattr(ev.data.get("dispatcher"), "py_func", None)
                if fn is not None and fn.__module__.startswith(progress.prefix):
                    progress.ended()

        self.start()
        try:
            with event.install_listener("numba:compile", Listener()):
                yield self
        finally:
            self.finish()


class ProgressReport:
    """Shows a :class:`CompileProgress` while a compile runs; a context manager around the compile.

    On a terminal: one line, rewritten in place (``\\r``) twice a second by a daemon thread, cut to the
    terminal's width so it never wraps, and cleared at the end. Elsewhere (a pipe, a log file): a line
    after a step when ``every_s`` have passed since the last line, so a minute's compile is about a
    dozen lines, not a wall. ``emit`` takes those lines' place (the headless service logs them)."""

    def __init__(self, progress: CompileProgress, stream: TextIO | None = None, every_s: float = 5.0,
                 emit: Callable[[Progress], None] | None = None) -> None:
        self.progress = progress
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.emit = emit
        self.tty = emit is None and _isatty(self.stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="tickdeck-compile-progress", daemon=True)
        self._last_line: float | None = None  # elapsed time of the last line written (not on a terminal)

    def __enter__(self) -> ProgressReport:
        if self.tty:
            self._thread.start()
        else:
            self.progress.on_step.append(self._step)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.tty:
            self.progress.on_step.remove(self._step)
            return
        self._stop.set()
        self._thread.join(timeout=2.0)  # it wakes twice a second
        self.stream.write("\r\x1b[K")  # the progress line gives way to what follows
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            if self.progress.started:
                line = "tickdeck: " + self.progress.now().text()
                self.stream.write("\r\x1b[K" + line[: _terminal_width(self.stream) - 1])
                self.stream.flush()

    def _step(self, now: Progress) -> None:
        if self._last_line is not None and now.elapsed_s - self._last_line < self.every_s:
            return
        self._last_line = now.elapsed_s
        if self.emit is not None:
            self.emit(now)
        else:
            self.stream.write("tickdeck: " + now.text() + "\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size().columns
