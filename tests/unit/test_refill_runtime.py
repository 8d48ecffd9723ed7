"""A ``Refill`` through the runtime and the headless service: applied alone (never merged into a live batch,
never handed to a recorder), counted in the health, the status lines and the summary, and leaving every
symbol exactly as an uninterrupted run does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from engine.feeds.base import Feed, FeedItem, FeedStatus, HistoryBars, Refill
from engine.headless import Headless, StoppableFeed
from engine.runtime import Runtime
from engine.signals.events import Signal
from engine.sinks.base import SinkGroup
from engine.sinks.frames import decode_health, health_frame
from engine.snapshot import Update
from engine.store import BarStore
from engine.ticks import SymbolTable, make_ticks
from tests.unit.refill_tape import (
    MIN,
    NAMES,
    SEC,
    T0,
    Gap,
    Item,
    assert_same,
    cut,
    gap_at,
    interrupted,
    make_engine,
    news,
    slot_state,
    steps,
    tape,
)

CONFIG = load_config(overrides={"engine.interval": "1m"}, env={})
WAIT_S = 30.0


class Lockstep(Feed):
    """Yields its items one by one, each once the runtime has processed the one before, so the clock the
    runtime reads with an item is that item's (a live feed's clock never runs ahead of its own tape).
    ``LockstepRuntime`` says when an item is processed."""

    name = "scripted"
    realtime = False

    def __init__(self, symbols: SymbolTable, items: Sequence[Item]) -> None:
        super().__init__(symbols)
        self.items = items
        self.clock = T0
        self.processed = threading.Semaphore(0)
        self.tail: asyncio.Event | None = None  # set: the stream waits for it before it ends

    async def stream(self) -> AsyncIterator[FeedItem]:
        yield FeedStatus(self.name, "live")
        for item in self.items:
            if isinstance(item, Refill):
                yield item
            else:
                batch, self.clock = item
                yield batch
            assert await asyncio.to_thread(self.processed.acquire, True, WAIT_S), "an item was not processed"
        if self.tail is not None:
            await asyncio.wait_for(self.tail.wait(), WAIT_S)

    def now_ns(self) -> int:
        return self.clock


class LockstepRuntime(Runtime):
    emitted = 0  # signals processed so far
    at_refill = -1  # how many had been when the refill went in
    closed_at_refill = -1  # open time of the gap's symbol's newest closed bar then

    def process(self, ticks: np.ndarray | HistoryBars | Refill | None, now_ns: int | None = None) -> Update:
        if isinstance(ticks, Refill):
            assert self.engine.forming_bar(ticks.sym) is None
            t, _ = self.engine.history.tail(ticks.sym, 1)
            self.closed_at_refill = int(t[0])
        update = super().process(ticks, now_ns)
        if isinstance(ticks, Refill):
            self.at_refill = self.emitted
        self.emitted += len(update.signals)
        if ticks is not None:
            feed = self.feed.inner if isinstance(self.feed, StoppableFeed) else self.feed
            assert isinstance(feed, Lockstep)
            feed.processed.release()
        return update


def run(items: Sequence[Item], *, lockstep: bool = True) -> tuple[Runtime, list[Signal], list[np.ndarray]]:
    engine = make_engine()
    feed: Feed = Lockstep(engine.symbols, items) if lockstep else Queued(engine.symbols, items)
    runtime = (LockstepRuntime if lockstep else Runtime)(CONFIG, engine=engine, feed=feed)
    tapped: list[np.ndarray] = []
    runtime.taps.append(tapped.append)
    updates: list[Update] = []
    asyncio.run(runtime.run(updates.append, lambda status: None))
    return runtime, [s for u in updates for s in u.signals], tapped


def the_tape() -> tuple[Gap, list[np.ndarray], list[Item]]:
    ticks = tape(120, seed=21)
    batches = cut(ticks, seed=22)
    gap = gap_at(ticks, 0, T0 + 60 * MIN + 40 * SEC, T0 + 62 * MIN + 10 * SEC)  # 90 s of AAA's trades
    return gap, batches, interrupted(ticks, batches, gap)


def of(signals: list[Signal], symbol: str, since: int | None = None) -> list[Signal]:
    return [s for s in signals if s.symbol == symbol and (since is None or s.bar_time >= since)]


def assert_all_the_same(a: Runtime, b: Runtime) -> None:
    for slot in range(len(NAMES)):
        assert_same(slot_state(a.engine, slot), slot_state(b.engine, slot), f"{NAMES[slot]}: ")


def test_a_refill_through_the_runtime_ends_as_the_uninterrupted_run() -> None:
    gap, batches, items = the_tape()
    whole, signals, _ = run(steps(batches))
    refilled, got, tapped = run(items)
    assert_all_the_same(whole, refilled)
    for name in NAMES[1:]:  # the other symbols fired what they fired uninterrupted...
        assert news(of(got, name)) == news(of(signals, name))
    assert isinstance(refilled, LockstepRuntime) and refilled.at_refill >= 0
    assert refilled.closed_at_refill == gap.since  # the clock had closed the gap's bar, partial
    after = got[refilled.at_refill:]  # ...and AAA, from since on, with the refill and then live
    assert news(of(after, "AAA", gap.since)) == news(of(signals, "AAA", gap.since))
    warm = [s for s in got if s.warmup]
    assert warm and {s.symbol for s in warm} == {"AAA"}  # the refilled bars' signals are history
    live = [item for item in items if not isinstance(item, Refill)]
    assert len(tapped) == len(live) and all(t is item[0] for t, item in zip(tapped, live, strict=True))
    health = refilled.health()
    assert health.refills == 1 and whole.health().refills == 0
    assert decode_health(health_frame(health)) == health  # and so to an attached console


def test_a_refill_corrects_the_bars_in_the_store(tmp_path: Path) -> None:
    """The clock closed AAA's bar at since with part of its trades and the store kept it; the refill
    rebuilds it whole and the store's copy is replaced: the stored bars are the uninterrupted run's."""
    gap, batches, items = the_tape()
    end = (make_ticks(0), int(batches[-1]["ts"][-1]) + 2 * MIN)  # the clock closes the last bars
    whole, _, _ = run([*steps(batches), end])
    items = [*items, end]
    config = load_config(overrides={"engine.interval": "1m", "history.store": str(tmp_path),
                                    "history.retention": "3650d"}, env={})
    engine = make_engine()
    feed = Lockstep(engine.symbols, items)
    feed.name = "binance"  # a live feed: its bars are kept
    runtime = LockstepRuntime(config, engine=engine, feed=feed)
    asyncio.run(runtime.run(lambda update: None, lambda status: None))
    t, bars = whole.engine.history.tail(0)
    with BarStore(tmp_path, 3650 * 1440 * MIN) as store:
        stored = store.load("binance", "AAA", MIN, T0)
    assert gap.since in stored["t"]
    # (a symbol's first bar in a run is never stored: it began at the feed's first trade)
    np.testing.assert_array_equal(stored["t"], t[1:])
    for j, field in enumerate(("open", "high", "low", "close", "volume")):
        np.testing.assert_array_equal(stored[field], bars[1:, j], err_msg=field)


class Queued(Feed):
    """Yields every item at once, so the runtime finds them queued and merges the batches it can; its
    clock stays at the start, so bars close on trades only (the gap's bar is still forming at the
    refill) and, at the end of the feed, all at once."""

    name = "scripted"
    realtime = False

    def __init__(self, symbols: SymbolTable, items: Sequence[Item]) -> None:
        super().__init__(symbols)
        self.items = items

    async def stream(self) -> AsyncIterator[FeedItem]:
        yield FeedStatus(self.name, "live")
        for item in self.items:
            yield item if isinstance(item, Refill) else item[0]

    def now_ns(self) -> int:
        return T0


def test_a_queued_refill_is_never_merged_into_live_batches_nor_tapped() -> None:
    _, batches, items = the_tape()
    whole, _, _ = run(steps(batches), lockstep=False)
    refilled, got, tapped = run(items, lockstep=False)
    assert refilled.metrics.coalesced > 0  # batches were merged around it
    assert_all_the_same(whole, refilled)
    assert all(isinstance(t, np.ndarray) for t in tapped)
    assert sum(len(t) for t in tapped) == sum(len(item[0]) for item in items if not isinstance(item, Refill))
    assert refilled.health().refills == 1 and any(s.warmup for s in got)


def test_the_headless_status_lines_and_summary_count_the_refills(caplog: pytest.LogCaptureFixture) -> None:
    _, _, items = the_tape()
    engine = make_engine()
    inner = Lockstep(engine.symbols, items)
    feed = StoppableFeed(inner)
    service = Headless(LockstepRuntime(CONFIG, engine=engine, feed=feed), feed, SinkGroup([]),
                       status_every=0.05)
    caplog.set_level("INFO", logger="tickdeck.headless")

    def refills_in_status() -> list[logging.LogRecord]:
        return [r for r in caplog.records
                if getattr(r, "event", "") == "status" and r.__dict__["fields"]["refills"] > 0]

    async def go() -> int:
        inner.tail = asyncio.Event()

        async def watch() -> None:  # the feed ends once a status line has shown the refill
            deadline = time.monotonic() + WAIT_S
            while not refills_in_status() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert inner.tail is not None
            inner.tail.set()

        watcher = asyncio.create_task(watch())
        code = await service.run()
        await watcher
        return code

    assert asyncio.run(go()) == 0
    assert service.summary()["refills"] == 1
    line = refills_in_status()[0]
    assert line.__dict__["fields"]["refills"] == 1 and "duplicates, 1 refills" in line.getMessage()
