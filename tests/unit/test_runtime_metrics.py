"""The runtime's own figures: engine time per batch, tick-to-signal latency, ticks in vs processed, and
their trip through ``PipelineHealth`` to an attached console."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import time
from typing import Any

import numpy as np

from engine.config import load_config
from engine.config_model import RuleTable
from engine.feeds.sim import SimFeed
from engine.runtime import Runtime
from engine.runtime_metrics import percentiles
from engine.sinks.frames import decode_health, health_frame
from engine.snapshot import PipelineHealth, Update

MS = 1_000_000
SEC = 1_000_000_000
LIVE_FLIP: dict[str, Any] = {"id": "flip", "kind": "cross", "a": "close", "b": "open", "direction": "both",
                             "on": "live"}
"""A rule that fires on nearly every batch: some symbol's forming bar crosses its own open."""


def runtime(rules: tuple[dict[str, Any], ...] | None = None, **overrides: object) -> Runtime:
    config = load_config(overrides={"engine.interval": "1s", "feeds.sim.backfill": 0,
                                    "feeds.sim.seed": 11, **overrides}, env={})
    if rules is not None:
        config = dataclasses.replace(config, rules=tuple(RuleTable(r, "test") for r in rules))
    return Runtime(config)


def sim(rt: Runtime) -> SimFeed:
    assert isinstance(rt.feed, SimFeed)
    return rt.feed


def test_percentiles_scale_and_empty() -> None:
    samples = collections.deque(i * MS for i in range(1, 102))  # 1 .. 101 ms
    assert percentiles(samples, 1e6) == (51.0, 100.0)
    assert percentiles(samples, 1e3)[0] == 51_000.0
    assert percentiles(collections.deque(), 1e6) == (0.0, 0.0)
    empty = percentiles(collections.deque(), 1e6, math.nan)
    assert math.isnan(empty[0]) and math.isnan(empty[1])


def test_engine_time_is_recorded_for_batches_with_ticks_only() -> None:
    rt = runtime(rules=())
    before = rt.health()
    assert math.isnan(before.engine_p50_us) and math.isnan(before.signal_p99_ms)
    now = time.time_ns()
    for i in range(5):
        rt.process(sim(rt).next_batch(400, now + i * SEC // 10, 0.1), now + i * SEC // 10)
    for i in range(3):  # a quiet feed: the clock only
        rt.process(None, now + SEC + i * SEC // 10)
    assert len(rt.metrics.engine_ns) == 5
    assert all(ns > 0 for ns in rt.metrics.engine_ns)
    health = rt.health()
    assert 0.0 < health.engine_p50_us <= health.engine_p99_us
    timed = sorted(rt.metrics.engine_ns)
    assert health.engine_p50_us == timed[2] / 1e3  # the median of five, in microseconds
    assert timed[3] / 1e3 <= health.engine_p99_us <= timed[4] / 1e3
    assert health.ticks_processed == 2000 and health.feed == "sim"
    assert rt.metrics.signal_ns == collections.deque()  # no rules, no signals


def test_signal_latency_runs_from_the_oldest_tick_of_each_batch_that_fired() -> None:
    rt = runtime(rules=(LIVE_FLIP,))
    start = time.time_ns() - SEC  # batches received over the last second, none in the future
    fired = 0
    for i in range(8):
        at = start + i * SEC // 10
        ticks = sim(rt).next_batch(400, at, 0.1)
        ticks["recv"][len(ticks) // 2] -= 2 * SEC  # one tick that waited two seconds before the engine
        fired += bool(rt.process(ticks, at).signals)
    assert fired > 0
    assert len(rt.metrics.signal_ns) == fired
    assert min(rt.metrics.signal_ns) >= 2 * SEC  # measured from that oldest receipt, not the batch's last
    health = rt.health()
    assert 2000.0 <= health.signal_p50_ms <= health.signal_p99_ms


def test_no_signal_latency_for_a_replay_clock() -> None:
    rt = runtime(rules=(LIVE_FLIP,))
    feed = sim(rt)
    feed.realtime = False  # as a replay: its receive times are a file's, not this run's
    now = time.time_ns()
    fired = sum(bool(rt.process(feed.next_batch(400, now + i * SEC // 10, 0.1), now + i * SEC // 10).signals)
                for i in range(5))
    assert fired > 0 and len(rt.metrics.engine_ns) == 5
    assert not rt.metrics.signal_ns and math.isnan(rt.health().signal_p50_ms)


def test_a_running_sim_reports_ticks_in_ahead_of_or_equal_to_ticks_processed() -> None:
    rt = runtime(rules=(LIVE_FLIP,), **{"feeds.sim.rate": 3000.0, "ui.fps": 20})
    healths: list[PipelineHealth] = []
    counted: list[int] = []  # the feed's own count when each frame arrived

    def on_update(update: Update) -> None:
        if update.health is not None:
            healths.append(update.health)
            counted.append(rt.feed.counters.ticks)

    async def main() -> None:
        task = asyncio.create_task(rt.run(on_update, lambda status: None))
        for _ in range(600):  # until a dozen frames with ticks in them (the first run may compile)
            await asyncio.sleep(0.05)
            if sum(h.ticks_processed > 0 for h in healths) >= 12:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    busy = [h for h in healths if h.ticks_processed > 0]
    assert len(busy) >= 12
    assert all(h.ticks_in >= h.ticks_processed for h in healths)
    assert [h.ticks_processed for h in busy] == sorted(h.ticks_processed for h in busy)
    last = busy[-1]
    assert last.feed == "sim" and last.batches > 0
    assert last.engine_p50_us > 0.0 and last.engine_p99_us >= last.engine_p50_us
    assert last.signal_p50_ms >= 0.0  # fired on a live clock: measured, not NaN
    # The feed goes on counting after a frame is taken (it runs beside the publisher), so a frame's
    # figure is at most the feed's count when the frame arrives, never ahead of it, and never goes back.
    assert all(h.ticks_in <= n for h, n in zip(healths, counted, strict=True))
    assert [h.ticks_in for h in healths] == sorted(h.ticks_in for h in healths)
    assert last.ticks_in >= last.ticks_processed > 0


def test_new_health_fields_reach_an_attached_console_and_old_frames_still_decode() -> None:
    sent = PipelineHealth(lag_p99_ms=3.5, feed="binance", batches=9, ticks_in=1200, ticks_processed=1100,
                          engine_p50_us=85.0, engine_p99_us=410.5, signal_p50_ms=2.0)
    wire = json.loads(json.dumps(health_frame(sent), allow_nan=False))  # NaN goes as null
    assert wire["signal_p99_ms"] is None and wire["feed"] == "binance"
    got = decode_health(wire)
    assert got is not None
    assert (got.feed, got.batches, got.ticks_in, got.ticks_processed) == ("binance", 9, 1200, 1100)
    assert (got.engine_p50_us, got.engine_p99_us, got.signal_p50_ms) == (85.0, 410.5, 2.0)
    assert math.isnan(got.signal_p99_ms)
    old = decode_health({"lag_p50_ms": 1.0, "lag_p99_ms": 2.0, "queue_depth": 1, "reconnects": 4,
                         "a_field_from_the_future": [1, 2]})
    assert old is not None and old.reconnects == 4 and old.feed == "" and old.ticks_in == 0
    assert math.isnan(old.engine_p50_us)
    assert np.isnan([old.signal_p50_ms, old.signal_p99_ms]).all()
