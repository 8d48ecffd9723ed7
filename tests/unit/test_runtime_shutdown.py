"""How ``Runtime.run`` ends: the feed has closed (its ``finally`` has run) when it returns, a feed that
does not close in time is reported, and a call made afterwards never runs beside ``process``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from engine.config import load_config
from engine.engine_thread import EngineThread
from engine.feeds.base import Feed, FeedStatus
from engine.runtime import Runtime, Update, build_engine
from engine.ticks import SymbolTable, make_ticks

SEC = 1_000_000_000
T0 = 1_800_000_000 * SEC
WAIT_S = 30.0  # the bound of every wait on a condition here (none is expected to take long)


class EndlessFeed(Feed):
    """Batches for ever; its ``finally`` takes a few event-loop turns (a connection's closing handshake),
    or waits for ``release`` when one is given."""

    name = "sim"

    def __init__(self, symbols: SymbolTable, release: asyncio.Event | None = None) -> None:
        super().__init__(symbols)
        self.release = release
        self.yielded = 0
        self.closing = False
        self.closed = False

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        try:
            yield FeedStatus(self.name, "live")
            while True:
                batch = make_ticks(4)
                batch["ts"] = T0 + self.yielded * SEC
                batch["recv"] = batch["ts"]
                batch["price"] = 100.0
                batch["size"] = 1.0
                self.yielded += 1
                yield batch
                await asyncio.sleep(0)
        finally:
            self.closing = True
            if self.release is not None:
                async with asyncio.timeout(WAIT_S):
                    await self.release.wait()
            for _ in range(3):
                await asyncio.sleep(0)
            self.closed = True

    def now_ns(self) -> int:
        return T0 + self.yielded * SEC


def make_runtime(release: asyncio.Event | None = None) -> tuple[Runtime, EndlessFeed]:
    config = load_config(overrides={"engine.interval": "1s", "feeds.sim.backfill": 0}, env={})
    engine = build_engine(config)
    feed = EndlessFeed(engine.symbols, release)
    return Runtime(config, engine=engine, feed=feed), feed


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)
    assert condition(), what  # type: ignore[operator]


async def test_a_cancelled_run_returns_after_the_feed_has_closed() -> None:
    rt, feed = make_runtime()
    run = asyncio.create_task(rt.run(lambda u: None, lambda s: None))
    await until(lambda: feed.yielded > 5, "batches")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, WAIT_S)
    assert feed.closed


async def test_a_failing_engine_ends_the_run_after_a_feed_parked_at_a_yield_has_closed() -> None:
    """The engine fails while the pump waits for room in a full queue, the feed's stream parked at its
    ``yield``: only an explicit ``aclose`` runs its ``finally`` (the garbage collector would, some day)."""
    rt, feed = make_runtime()
    rt.queue_batches = 1
    gate = threading.Event()

    def stuck_then_fail(ticks: np.ndarray | None, now_ns: int | None = None) -> Update:
        if ticks is not None:
            gate.wait(WAIT_S)  # the engine is behind: the queue fills, the pump waits
            raise ValueError("the engine broke")
        return Update((), None)

    rt.process = stuck_then_fail  # type: ignore[method-assign]
    run = asyncio.create_task(rt.run(lambda u: None, lambda s: None))
    await until(lambda: feed.yielded >= 3, "a full queue and a feed waiting at its yield")
    gate.set()
    with pytest.raises(ValueError, match="the engine broke"):
        await run
    assert feed.closed


async def test_a_feed_that_does_not_close_in_time_is_reported_and_left(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    rt, feed = make_runtime(release)
    rt.feed_close_s = 0.05
    run = asyncio.create_task(rt.run(lambda u: None, lambda s: None))
    await until(lambda: feed.yielded > 2, "batches")
    with caplog.at_level(logging.WARNING, logger="tickdeck.runtime"):
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert feed.closing and not feed.closed
    said = [r.getMessage() for r in caplog.records]
    assert any("the sim feed had not closed 0.1 s after the run ended" in m for m in said), said
    release.set()
    await until(lambda: feed.closed, "the feed to finish closing on its own")


async def test_a_call_after_a_cancelled_run_waits_for_the_engines_last_batch() -> None:
    rt, feed = make_runtime()
    in_process = threading.Event()
    let_go = threading.Event()
    real = rt.process

    def slow(ticks: np.ndarray | None, now_ns: int | None = None) -> Update:
        if ticks is not None and feed.yielded > 3 and not let_go.is_set():
            in_process.set()
            let_go.wait(WAIT_S)  # a long batch (a kernel compile) under way when the run is cancelled
            in_process.clear()
        return real(ticks, now_ns)

    rt.process = slow  # type: ignore[method-assign]
    run = asyncio.create_task(rt.run(lambda u: None, lambda s: None))
    await until(in_process.is_set, "a batch in the engine")
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    seen: list[bool] = []

    def look() -> int:
        seen.append(in_process.is_set())
        return len(seen)

    late = asyncio.create_task(rt.call(look))
    await asyncio.sleep(0)
    assert not late.done()  # it waits for the batch
    let_go.set()
    assert await asyncio.wait_for(late, WAIT_S) == 1
    assert seen == [False]  # ran after the batch, never beside it


async def test_a_stopped_engine_thread_runs_calls_queued_before_the_stop_then_in_place() -> None:
    worker = EngineThread("test-engine")
    first = asyncio.ensure_future(worker.call(threading.current_thread))
    await asyncio.sleep(0)  # the call is queued
    worker.stop()
    assert (await asyncio.wait_for(first, WAIT_S)).name == "test-engine"
    assert await asyncio.wait_for(worker.call(threading.current_thread), WAIT_S) is threading.current_thread()
    assert worker.finished
