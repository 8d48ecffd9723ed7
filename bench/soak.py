"""``tickdeck bench --soak [SECONDS]``: the headless service on the sim at 50,000 ticks/s, watched for
leaks (600 s by default).

The service runs in this process as ``tickdeck --headless`` runs it (``engine.headless``: the runtime,
its bounded queue, the engine thread, every signal to a JSON-lines sink, here on /dev/null) over the
sim with 500 symbols, 1 s bars and the default indicators and rules. Once a second a sampler task on the
same event loop records RSS, the C heap in use (glibc's ``mallinfo2``), asyncio tasks, open file
descriptors, the runtime's queue depth and the Python heap (``sys.getallocatedblocks``: tracemalloc would
slow every allocation). After a warm-up (20 %
of the run, at least 10 s: kernels load, the sim's backfill goes through, buffers reach their size),
least-squares slopes give growth per 10 minutes, and the task and descriptor counts at the start and the
end of the measured phase are compared.

RSS is what the target is about, but it lags a leak: the allocator first hands out pages it already
holds (a few MB freed after the sim's backfill), so RSS grows only once those are used up, minutes into a
small leak. The heap in use (bytes malloc has handed out and not got back, numpy's buffers included)
moves with the first leaked byte, so its slope is reported too, against the same target.

The sim's ``rate`` is the average over its trading day: its tape follows a U-shaped intraday profile (up
to 3.5x busier at the open, 0.8x at midday) of a session that repeats back to back from the epoch. So the
bench sets ``rate`` such that *this* window averages 50,000 ticks/s, and reports what it delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psutil

from bench.report import Figure, emit
from engine.config import CONFIG_DIR_VAR, Config, load_config

DEFAULT_SECONDS = 600.0
TARGET_RATE = 50_000.0
SYMBOLS = 500
TARGET_MB_PER_10_MIN = 1.0
MB = 1_000_000


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the run started
    rss: int  # bytes
    rss_anon: int  # of which anonymous memory (heap, stacks, arrays); 0 where /proc does not tell
    tasks: int
    fds: int
    queue_depth: int
    heap: int  # bytes of the C heap in use (0 where glibc's mallinfo2 is not available)
    blocks: int  # sys.getallocatedblocks()
    ticks: int  # processed by the engine so far


@dataclass
class SoakRun:
    seconds: float
    warmup: float
    sim_rate: float  # the sim's configured (day-average) rate
    samples: list[Sample] = field(default_factory=list)
    queue_depth_max: int = 0
    queue_batches: int = 0
    lag_p99_ms: float = 0.0
    signals: int = 0
    exit_code: int = -1
    gc_objects: tuple[int, int] = (0, 0)  # at the start and the end of the measured phase

    @property
    def measured(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.warmup]

    def slope_per_10_min(self, field_name: str) -> float:
        """Least-squares growth of a sampled quantity over the measured phase, per 600 s."""
        m = self.measured
        if len(m) < 3:
            return float("nan")
        t = np.array([s.t for s in m])
        y = np.array([float(getattr(s, field_name)) for s in m])
        return float(np.polyfit(t, y, 1)[0]) * 600.0

    def ends(self, field_name: str, n: int = 5) -> tuple[int, int]:
        """The median of the first and of the last ``n`` samples of the measured phase (a transient
        task, such as the feed's next-item task, may come and go between two samples)."""
        m = self.measured
        first = [getattr(s, field_name) for s in m[:n]]
        last = [getattr(s, field_name) for s in m[-n:]]
        return int(np.median(first)), int(np.median(last))

    @property
    def ticks_per_s(self) -> float:
        m = self.measured
        if len(m) < 2:
            return 0.0
        return (m[-1].ticks - m[0].ticks) / (m[-1].t - m[0].t)

    def rate_range(self) -> tuple[float, float]:
        """The lowest and highest ticks/s over 5 s windows of the measured phase."""
        m = self.measured
        rates = [(b.ticks - a.ticks) / (b.t - a.t) for a, b in zip(m, m[5:], strict=False) if b.t > a.t]
        return (min(rates), max(rates)) if rates else (0.0, 0.0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):  # not glibc, or glibc older than 2.33
        return None
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


def rss_anon() -> int:
    """Bytes of anonymous resident memory (``RssAnon`` in /proc/self/status): RSS without the pages of
    mapped files, such as shared libraries whose code is paged in as paths run for the first time."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def heap_in_use() -> int:
    """Bytes malloc has handed out and not got back (every arena, and its mmapped blocks); 0 when the C
    library cannot tell."""
    fn = _mallinfo2()
    if fn is None:
        return 0
    info = fn()
    return int(info.uordblks + info.hblkhd)


def soak_config(rate: float, config_dir: str, symbols: int = SYMBOLS) -> Config:
    return load_config(overrides={"feed.name": "sim", "feeds.sim.rate": rate, "feeds.sim.symbols": symbols,
                                  "engine.interval": "1s"}, env={CONFIG_DIR_VAR: config_dir})


async def run_soak(seconds: float = DEFAULT_SECONDS, *, target: float = TARGET_RATE, symbols: int = SYMBOLS,
                   warmup: float | None = None, leak_bytes: int = 0,
                   on_sample: Callable[[Sample], None] | None = None) -> SoakRun:
    """One soak run. ``leak_bytes`` > 0 keeps that many bytes per feed batch alive (a deliberate leak,
    to show the slope would catch one)."""
    from engine.feeds.sim import rate_for_window
    from engine.headless import Headless, prepare
    from engine.runtime import Runtime

    warm = max(10.0, 0.2 * seconds) if warmup is None else warmup
    total = seconds
    rate = rate_for_window(target, total, time.time_ns())
    with tempfile.TemporaryDirectory() as config_dir:
        config = soak_config(rate, config_dir, symbols)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        runtime, feed, sinks = prepare(config, stdout_fd=devnull)
        leaked: list[bytearray] = []
        if leak_bytes:
            runtime.taps.append(lambda batch: leaked.append(bytearray(leak_bytes)))
        service = Headless(runtime, feed, sinks, status_every=0)
        await sinks.start()
        result = SoakRun(seconds, warm, rate, queue_batches=Runtime.queue_batches)
        run = asyncio.create_task(service.run(), name="bench-soak-headless")
        process = psutil.Process()
        start = time.monotonic()
        try:
            next_at = start
            while not run.done():
                next_at += 1.0
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                t = time.monotonic() - start
                sample = Sample(t, process.memory_info().rss, rss_anon(), len(asyncio.all_tasks()),
                                process.num_fds(),
                                runtime.metrics.queue_depth, heap_in_use(), sys.getallocatedblocks(),
                                runtime.engine.stats.ticks)
                result.samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                if not result.gc_objects[0] and t >= warm:
                    result.gc_objects = (len(gc.get_objects()), 0)
                if t >= total:
                    break
            result.gc_objects = (result.gc_objects[0], len(gc.get_objects()))
        finally:
            if not run.done():
                service.request_stop("SIGTERM")
            result.exit_code = await run
        result.queue_depth_max = runtime.metrics.queue_depth_max
        result.lag_p99_ms = runtime.metrics.lag_percentiles()[1]
        result.signals = service.signals
    finally:
        os.close(devnull)
    return result


def rss_slope_mb(r: SoakRun) -> float:
    """RSS growth over the measured phase, MB per 10 minutes."""
    return r.slope_per_10_min("rss") / MB


def anon_slope_mb(r: SoakRun) -> float:
    """Anonymous RSS growth, MB per 10 minutes; NaN when not measurable."""
    if not any(s.rss_anon for s in r.samples):
        return float("nan")
    return r.slope_per_10_min("rss_anon") / MB


def heap_slope_mb(r: SoakRun) -> float:
    """C heap (in use) growth over the measured phase, MB per 10 minutes; NaN when not measurable."""
    if not any(s.heap for s in r.samples):
        return float("nan")
    return r.slope_per_10_min("heap") / MB


def figures(r: SoakRun, target: float = TARGET_RATE) -> list[Figure]:
    rate = r.ticks_per_s
    low, high = r.rate_range()
    rss_slope = rss_slope_mb(r)
    heap_slope = heap_slope_mb(r)
    anon_slope = anon_slope_mb(r)
    heap_ok = None if heap_slope != heap_slope else heap_slope < TARGET_MB_PER_10_MIN
    m = r.measured
    rss_first, rss_last = (m[0].rss / MB, m[-1].rss / MB) if m else (0.0, 0.0)
    tasks, fds = r.ends("tasks"), r.ends("fds")
    depth_seen = max((s.queue_depth for s in r.samples), default=0)
    blocks_slope = r.slope_per_10_min("blocks")
    blocks_first = m[0].blocks if m else 0
    return [
        Figure("seconds", "run, s (measured after warm-up)", r.seconds,
               f"{r.seconds:g} ({r.seconds - r.warmup:g})"),
        Figure("ticks_per_s", "ticks/s achieved (engine), measured phase", rate, f"{rate:,.0f}",
               f">= {0.95 * target:,.0f}", rate >= 0.95 * target),
        Figure("ticks_per_s_range", "  lowest / highest over 5 s", [low, high], f"{low:,.0f} / {high:,.0f}"),
        Figure("sim_rate", "  sim rate setting (day average)", r.sim_rate, f"{r.sim_rate:,.0f}"),
        Figure("rss_slope_mb_per_10min", "RSS slope, MB per 10 min", rss_slope, f"{rss_slope:+.3f}",
               f"< {TARGET_MB_PER_10_MIN:g}", rss_slope < TARGET_MB_PER_10_MIN),
        Figure("rss_mb", "  RSS first / last measured sample, MB", [rss_first, rss_last],
               f"{rss_first:.1f} / {rss_last:.1f}"),
        Figure("rss_anon_slope_mb_per_10min", "  of which anonymous memory (not mapped files), slope",
               anon_slope, f"{anon_slope:+.3f}" if anon_slope == anon_slope else "n/a"),
        Figure("heap_slope_mb_per_10min", "C heap in use slope, MB per 10 min", heap_slope,
               f"{heap_slope:+.3f}" if heap_ok is not None else "n/a (not glibc)",
               f"< {TARGET_MB_PER_10_MIN:g}", heap_ok),
        Figure("heap_blocks_slope_per_10min", "Python heap blocks slope per 10 min", blocks_slope,
               f"{blocks_slope:+,.0f} (of {blocks_first:,})"),
        Figure("gc_objects", "gc-tracked objects, start / end of measured phase", list(r.gc_objects),
               f"{r.gc_objects[0]:,} / {r.gc_objects[1]:,}"),
        Figure("tasks", "asyncio tasks, start / end", list(tasks), f"{tasks[0]} / {tasks[1]}", "equal",
               tasks[0] == tasks[1]),
        Figure("fds", "open file descriptors, start / end", list(fds), f"{fds[0]} / {fds[1]}", "equal",
               fds[0] == fds[1]),
        Figure("queue_depth_max", "queue depth, max sampled / max ever (batches)",
               [depth_seen, r.queue_depth_max], f"{depth_seen} / {r.queue_depth_max}",
               f"< {r.queue_batches} (never full)", r.queue_depth_max < r.queue_batches),
        Figure("lag_p99_ms", "receive -> processed lag p99 (last 2,048 batches), ms", r.lag_p99_ms,
               f"{r.lag_p99_ms:.1f}"),
        Figure("signals", "signals delivered to the sink", r.signals, f"{r.signals:,}"),
        Figure("exit_code", "exit status after SIGTERM", r.exit_code, str(r.exit_code), "0",
               r.exit_code == 0),
    ]


def main(args: argparse.Namespace) -> int:
    seconds = float(args.soak)
    if not seconds >= 20:
        print(f"tickdeck: bench --soak takes a number of seconds >= 20, got {args.soak:g}", file=sys.stderr)
        return 2

    def progress(s: Sample) -> None:
        if not args.json and int(s.t) % 30 == 0:
            print(f"  {s.t:5.0f} s  RSS {s.rss / MB:7.1f} MB  {s.ticks:>12,} ticks  tasks {s.tasks}  "
                  f"fds {s.fds}  queue {s.queue_depth}", file=sys.stderr, flush=True)

    r = asyncio.run(run_soak(seconds, on_sample=progress))
    notes = [f"headless service in process: sim, {SYMBOLS} symbols, 1 s bars, default indicators and rules, "
             "signals to a JSON-lines sink on /dev/null; samples every second"]
    return emit("soak", f"tickdeck bench --soak {seconds:g}", figures(r), args.json, notes)
