"""The runtime: feed -> engine -> signals and frame-rate snapshots, shared by the console and the
headless service.

The engine is owned by one daemon thread (``EngineThread``): every batch is processed by ``process``
there, in order (numba kernels release the GIL, so the event loop stays responsive), and snapshots are
built in that same call, so readers only ever get copies. A daemon thread, not ``asyncio.to_thread``:
quitting must not wait for a first-run kernel compile to finish. Snapshots are built at most ``fps`` times a
second however fast ticks arrive: the UI gets one snapshot per frame, never one message per tick.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from engine.config import Config, parse_interval
from engine.feeds.base import Feed, FeedStatus
from engine.pipeline import Engine
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.snapshot import MarketSnapshot, build_snapshot

T = TypeVar("T")


class EngineThread:
    """One daemon thread that runs submitted calls in order and hands results back to the event loop."""

    def __init__(self, name: str = "tickdeck-engine") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, future = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task, which decides
                error = exc
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop closed while we worked: nobody is waiting any more
                return

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((functools.partial(fn, *args), future))
        return await future

    def stop(self) -> None:
        self._calls.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class FeedUnavailable(RuntimeError):
    """The configured feed cannot be built (unknown name, or not available in this version)."""


def build_engine(config: Config) -> Engine:
    outputs = list(config.engine.indicators)
    outputs += [n for n in config.ui.columns if n not in outputs]
    return Engine(outputs, parse_interval(config.engine.interval), capacity=config.engine.max_symbols,
                  depth=config.engine.history, rules=load_rules(config.rules))


def build_feed(config: Config, engine: Engine) -> Feed:
    name = config.feed.name
    if name == "sim":
        from engine.feeds.sim import SimFeed

        sim = config.feeds.sim
        backfill_s = sim.backfill * engine.interval_ns / 1e9
        return SimFeed(engine.symbols, n_symbols=sim.symbols, seed=sim.seed, rate=sim.rate,
                       backfill_s=backfill_s)
    raise FeedUnavailable(f"feed {name!r} is not available in this version; use --feed sim")


@dataclass(frozen=True)
class Update:
    """What one processed batch produced: new signals, and a snapshot when a frame is due."""

    signals: tuple[Signal, ...]
    snapshot: MarketSnapshot | None


class Runtime:
    def __init__(self, config: Config, engine: Engine | None = None, feed: Feed | None = None) -> None:
        self.config = config
        self.engine = engine or build_engine(config)
        self.feed = feed or build_feed(config, self.engine)
        self.frame_ns = int(1e9 / config.ui.fps)
        self.watch: tuple[str, ...] = self.feed.universe()
        self.outputs: tuple[str, ...] = tuple(config.ui.columns)
        self.spark = 60
        self._last_frame = 0

    def process(self, ticks: np.ndarray | None, now_ns: int | None = None) -> Update:
        """Apply one batch (or just the clock, when ``ticks`` is None). Runs in a worker thread."""
        now = time.time_ns() if now_ns is None else now_ns
        signals: list[Signal] = []
        if ticks is not None and len(ticks):
            signals += self.engine.ingest(ticks)
        signals += self.engine.close_due(now - now % self.engine.interval_ns)
        snapshot = None
        if now - self._last_frame >= self.frame_ns:
            self._last_frame = now
            snapshot = self.snapshot(now)
        return Update(tuple(signals), snapshot)

    def snapshot(self, now_ns: int, symbols: Sequence[str] | None = None) -> MarketSnapshot:
        return build_snapshot(self.engine, self.watch if symbols is None else symbols, self.outputs,
                              self.spark, now_ns)

    async def run(self, on_update: Callable[[Update], None],
                  on_status: Callable[[FeedStatus], None]) -> None:
        """Pump the feed until cancelled; the callbacks run on the event loop."""
        worker = EngineThread()
        try:
            async for item in self.feed.stream():
                if isinstance(item, FeedStatus):
                    on_status(item)
                    continue
                update = await worker.call(self.process, item)
                if update.signals or update.snapshot is not None:
                    on_update(update)
        finally:
            worker.stop()
