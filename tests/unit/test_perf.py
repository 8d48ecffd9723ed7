"""PerfMonitor: the console's own figures — loop lag, frames, rates from running totals, cache hit rates,
garbage collections, and the bytes a real Textual app writes to its terminal."""

from __future__ import annotations

import gc
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import psutil
from textual.app import App, ComposeResult
from textual.widgets import Static

from console.perf import LoopLag, PerfMonitor
from engine.snapshot import PipelineHealth


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """An event loop's clock and timers, advanced by hand: ``run_until(t)`` fires what is due by ``t``
    at the moment ``t`` (as a loop that was blocked until then would)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, FakeHandle, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._timers, (self.now + delay, next(self._seq), handle, callback, args))
        return handle

    def run_until(self, t: float) -> None:
        self.now = t
        while self._timers and self._timers[0][0] <= t:
            _, _, handle, callback, args = heapq.heappop(self._timers)
            if not handle.cancelled:
                callback(*args)

    @property
    def pending(self) -> int:
        return sum(not h.cancelled for _, _, h, _, _ in self._timers)


def test_loop_lag_is_the_worst_lateness_since_the_last_take() -> None:
    loop = FakeLoop()
    lag = LoopLag(loop, interval=0.1)
    lag.start()
    assert math.isnan(lag.take())  # nothing fired yet
    loop.run_until(0.1)  # on time
    assert lag.take() == 0.0
    loop.run_until(0.2)
    loop.run_until(0.55)  # blocked: the timer due at 0.3 fires at 0.55
    loop.run_until(0.66)  # re-armed at 0.55 for 0.65: 10 ms late, less than the worst
    assert math.isclose(lag.take(), 0.25)
    assert math.isnan(lag.take())
    loop.run_until(0.78)  # re-armed at 0.66 for 0.76
    assert math.isclose(lag.take(), 0.02)
    lag.stop()
    assert loop.pending == 0
    loop.run_until(5.0)
    assert math.isnan(lag.take())


def monitor(**kwargs: Any) -> tuple[PerfMonitor, FakeClock]:
    clock = FakeClock()
    return PerfMonitor(clock=clock, **kwargs), clock


def test_samples_at_most_at_the_rate_whatever_the_frame_rate() -> None:
    perf, clock = monitor(rate=2.0, history=4)
    first = perf.sample()
    for _ in range(3):  # frames inside half a second: the same sample, no new history
        clock.t += 0.125
        assert perf.sample() is first
    assert perf.history == (first,)
    clock.t += 0.125
    second = perf.sample()
    assert second is not first and perf.history == (first, second)
    for _ in range(5):
        clock.t += 0.5
        perf.sample()
    assert len(perf.history) == 4 and perf.history[-1].at == clock.t  # bounded, newest last
    assert perf.history is perf.history  # one tuple per sample, not a copy per call


def test_rates_and_backlog_come_from_the_health_running_totals() -> None:
    perf, clock = monitor()
    perf.sample(PipelineHealth(ticks_in=1000, ticks_processed=900, coalesced=2, feed="sim"))
    clock.t += 0.5
    s = perf.sample(PipelineHealth(ticks_in=2000, ticks_processed=1800, coalesced=3, feed="sim",
                                   engine_p50_us=80.0, engine_p99_us=300.0, reconnects=1, bad_messages=4))
    assert (s.ticks_in_per_s, s.ticks_processed_per_s, s.coalesced_per_s) == (2000.0, 1800.0, 2.0)
    assert s.backlog == 200 and s.coalesced == 3
    assert (s.engine_p50_us, s.engine_p99_us, s.feed) == (80.0, 300.0, "sim")
    assert (s.reconnects, s.bad_messages) == (1, 4)
    clock.t += 0.5
    s = perf.sample()  # no new health: the last one again, so nothing moved
    assert s.ticks_in_per_s == 0.0 and s.backlog == 200
    clock.t += 0.5
    s = perf.sample(PipelineHealth(ticks_in=10, ticks_processed=10))  # an attach reconnected: totals restart
    assert math.isnan(s.ticks_in_per_s) and s.backlog == 0


def test_before_any_health_the_pipeline_figures_are_unknown_not_zero() -> None:
    perf, _ = monitor()
    s = perf.sample()
    assert math.isnan(s.ticks_in_per_s) and math.isnan(s.engine_p99_us) and math.isnan(s.lag_p99_ms)
    assert math.isnan(s.frame_max_ms) and math.isnan(s.loop_lag_ms)  # not started: no loop watched


def test_cache_hit_rate_over_the_interval_then_all_time_when_idle() -> None:
    perf, clock = monitor()
    counts = {"hits": 0, "misses": 0}
    perf.add_cache("rows", lambda: (counts["hits"], counts["misses"]))
    assert math.isnan(perf.sample().caches[0].hit_rate)  # no lookups yet
    counts.update(hits=90, misses=10)
    clock.t += 0.5
    assert perf.sample().caches[0].hit_rate == 0.9
    counts.update(hits=100, misses=100)  # this interval: 10 hits in 100 lookups
    clock.t += 0.5
    rate = perf.sample().caches[0]
    assert (rate.name, rate.hit_rate, rate.lookups) == ("rows", 0.1, 200)
    clock.t += 0.5
    assert perf.sample().caches[0].hit_rate == 0.5  # idle: all time


def test_frame_time_runs_from_the_oldest_snapshot_not_yet_on_screen() -> None:
    perf, clock = monitor()
    perf.frame_begin()
    clock.t += 0.004
    perf.frame_begin()  # a second snapshot before the refresh joins the first
    clock.t += 0.006
    perf.frame_end()
    perf.frame_end()  # nothing pending: ignored
    for ms in (2, 3, 30):
        perf.frame_begin()
        clock.t += ms / 1000
        perf.frame_end()
    s = perf.sample()
    assert math.isclose(s.frame_max_ms, 30.0) and math.isclose(s.frame_p50_ms, 10.0)
    clock.t += 1.0
    assert math.isnan(perf.sample().frame_max_ms)  # no frames in this interval


def test_garbage_collections_and_process_figures() -> None:
    perf, clock = monitor()
    first = perf.sample()
    for _ in range(3):
        gc.collect()
    clock.t += 1.0
    s = perf.sample()
    assert s.gc_collections[2] >= first.gc_collections[2] + 3
    assert s.gc_per_s >= 3.0
    rss = psutil.Process().memory_info().rss
    assert 0.5 * rss < s.rss_bytes < 2 * rss
    assert s.cpu_percent >= 0.0


class Shown(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.perf = PerfMonitor()
        self.text = Static("", id="text")

    def compose(self) -> ComposeResult:
        yield self.text

    def on_mount(self) -> None:
        self.perf.start(self)

    def on_unmount(self) -> None:
        self.perf.stop()


async def test_bytes_written_to_the_terminal_are_counted_in_a_real_app() -> None:
    app = Shown()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        at_start = app.perf.bytes.total
        assert at_start >= 80 * 24  # the first full screen: at least a byte per cell
        app.text.update("█" * 50)
        await pilot.pause()
        drawn = app.perf.bytes.total - at_start
        assert drawn >= 150  # fifty three-byte blocks reached the terminal, with their cursor moves
        assert drawn < 80 * 24  # an update writes the changed line, not the whole screen
        quiet = app.perf.bytes.total
        await pilot.pause()
        assert app.perf.bytes.total == quiet  # nothing changed, nothing written
        driver = app._driver
        assert driver is not None
        driver.write("é\x1b[0m")  # anything else the app writes counts too, in UTF-8 bytes
        assert app.perf.bytes.total == quiet + 6
        app.perf.frame_begin()
        app.text.update("again")
        await pilot.pause(0.25)  # long enough for the loop-lag timer (every 0.1 s) to fire
        s = app.perf.sample()
        assert s.bytes_total == app.perf.bytes.total and s.bytes_per_s > 0
        assert s.frame_max_ms >= 0.0  # the refresh ended the frame begun above (NaN otherwise)
        assert s.loop_lag_ms >= 0.0  # the probe ran on the app's loop (NaN otherwise)
        app.perf.stop()
        assert "write" not in vars(driver) and "_display" not in vars(app)
        before = app.perf.bytes.total
        app.text.update("not counted")
        await pilot.pause()
        assert app.perf.bytes.total == before
