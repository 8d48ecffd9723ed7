"""The runtime: feed -> engine -> signals and frame-rate snapshots, shared by the console and the
headless service.

The engine is owned by one daemon thread (``EngineThread``): every batch is processed by ``process``
there, in order (numba kernels release the GIL, so the event loop stays responsive), and snapshots are
built in that same call, so readers only ever get copies. A daemon thread, not ``asyncio.to_thread``:
quitting must not wait for a first-run kernel compile to finish. Snapshots are built at most ``fps`` times a
second however fast ticks arrive: the UI gets one snapshot per frame, never one message per tick.

When ``run`` returns, the feed has closed: its stream is closed (its ``finally`` runs) in the pump task,
which ``run`` waits for, up to ``feed_close_s`` (then it is left to finish and a warning says so). The
engine thread is not waited for (quitting during a first-run compile must not hang), but it is stopped:
a ``call`` made after that waits until it has finished its last batch and then runs in place, never
beside ``process``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from engine.config import Config, parse_interval
from engine.feeds.base import Feed, FeedStatus, HistoryBars, Refill
from engine.pipeline import Engine
from engine.positions.session import SessionCloses
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.snapshot import MarketSnapshot, PipelineHealth, Update, build_snapshot
from engine.store_writer import BarCollector, StoreWriter, persisting

__all__ = ["EngineThread", "FeedUnavailable", "PipelineHealth", "Runtime", "RuntimeMetrics", "Update",
           "build_engine", "build_feed", "in_daemon_thread"]

T = TypeVar("T")
log = logging.getLogger("tickdeck.runtime")

LATE_CALL_WAIT_S = 120.0
"""How long a call made after the engine thread was stopped waits for it to finish its last batch (a
first-run kernel compile takes up to a minute on a small machine) before giving up with an error."""


class EngineThread:
    """One daemon thread that runs submitted calls in order and hands results back to the event loop.

    After :meth:`stop`, a :meth:`call` waits for the thread to finish what it was running (at most
    ``LATE_CALL_WAIT_S``) and then runs in the caller's thread: whatever owns the engine is never run
    by two threads at once."""

    def __init__(self, name: str = "tickdeck-engine") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()  # a call is queued before the stop, or runs after the thread ended
        self._stopping = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
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
        finally:
            self._done.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            queued = not self._stopping
            if queued:
                future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
                self._calls.put((functools.partial(fn, *args), future))
        if queued:
            return await future
        if not self._done.is_set() and not await asyncio.to_thread(self._done.wait, LATE_CALL_WAIT_S):
            raise RuntimeError(f"the engine thread was still busy {LATE_CALL_WAIT_S:.0f} s after it was "
                               "stopped")
        return fn(*args)

    def stop(self) -> None:
        """End the thread once the calls already queued have run."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._calls.put(None)

    @property
    def finished(self) -> bool:
        """Whether the thread has stopped (and runs nothing any more)."""
        return self._done.is_set()


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in a new daemon thread; its result or exception in the returned future (of the
    running loop). For a slow start (building the engine compiles its kernels on a first run) that a
    stop must not wait for: ``asyncio.to_thread`` would hold the loop's shutdown, and the exit, until it
    ends. If the loop has closed by then, the outcome is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=work, name=f"tickdeck-{getattr(fn, '__name__', 'start')}", daemon=True).start()
    return future


class FeedUnavailable(RuntimeError):
    """The configured feed cannot be built (unknown name, or not available in this version)."""


def build_engine(config: Config) -> Engine:
    outputs = list(config.engine.indicators)
    outputs += [n for n in config.ui.columns if n not in outputs]
    return Engine(outputs, parse_interval(config.engine.interval), capacity=config.engine.max_symbols,
                  depth=config.engine.history, rules=load_rules(config.rules))


def build_feed(config: Config, engine: Engine) -> Feed:
    """The configured feed, its symbols registered with the engine (imports only the feed used); a live
    feed loads its history from the bar store and its service (``engine.backfill``)."""
    name = config.feed.name
    feeds = config.feeds
    if name == "sim":
        from engine.feeds.sim import SimFeed

        sim = feeds.sim
        return SimFeed(engine.symbols, n_symbols=sim.symbols, seed=sim.seed, rate=sim.rate,
                       backfill=sim.backfill, bar_ns=engine.interval_ns)
    if name == "binance":
        from engine.backfill import attach
        from engine.feeds.binance import BinanceFeed

        _register(engine, feeds.binance.symbols)
        binance = BinanceFeed(engine.symbols, feeds.binance.url, wanted=feeds.binance.symbols,
                              stream=feeds.binance.stream, stale_after=feeds.binance.stale_after,
                              rest_url=feeds.binance.rest_url)
        attach(binance, config, engine.interval_ns, refills=True)
        return binance
    if name == "coinbase":
        from engine.backfill import attach
        from engine.feeds.coinbase import CoinbaseFeed

        _register(engine, feeds.coinbase.products)
        coinbase = CoinbaseFeed(engine.symbols, feeds.coinbase.url, wanted=feeds.coinbase.products,
                                stale_after=feeds.coinbase.stale_after, rest_url=feeds.coinbase.rest_url)
        attach(coinbase, config, engine.interval_ns, refills=True)
        return coinbase
    if name == "yahoo":
        from engine.backfill import attach
        from engine.feeds.yahoo import YahooFeed

        y = feeds.yahoo
        _register(engine, y.symbols)
        yahoo = YahooFeed(engine.symbols, y.symbols, y.url, interval=y.interval, batch_size=y.batch_size,
                          requests_per_minute=y.requests_per_minute, burst=y.burst,
                          requests_per_hour=y.requests_per_hour, timeout=y.timeout, cookie_url=y.cookie_url,
                          consent_url=y.consent_url or None, stream_url=y.stream_url or None)
        attach(yahoo, config, engine.interval_ns, refills=True)
        return yahoo
    if name == "replay":
        from engine.feeds.replay import ReplayError, ReplayFeed

        r = feeds.replay
        if not r.file:
            raise FeedUnavailable("the replay feed needs a file: --file PATH (or feeds.replay.file)")
        replay = ReplayFeed(engine.symbols, r.file, speed=r.speed, loop=r.loop, symbol=r.symbol or None,
                            bar_interval=engine.interval_ns)  # OHLCV bars land on the engine's grid
        try:
            replay.load()
        except ReplayError as exc:
            raise FeedUnavailable(str(exc)) from None
        return replay
    raise FeedUnavailable(f"feed {name!r} is not available in this version")


def _register(engine: Engine, names: Sequence[str]) -> None:
    """Give the feed's symbols their slots up front, so the watchlist shows them before a trade."""
    for name in names:
        engine.add_symbol(name)


RECENT = 2048
"""Batches the timing percentiles are taken over: enough for a stable p99, recent enough to move."""


def _recent() -> collections.deque[int]:
    return collections.deque(maxlen=RECENT)


def percentiles(samples: collections.deque[int], unit_ns: float, empty: float = 0.0) -> tuple[float, float]:
    """(p50, p99) of ``samples`` (nanoseconds) in units of ``unit_ns``; ``empty`` for both when there
    are none. The engine thread appends while this runs on the event loop: ``np.fromiter`` copies the
    deque in one C loop, under the GIL, so it never sees a deque mutated during iteration."""
    if not samples:
        return (empty, empty)
    p50, p99 = np.percentile(np.fromiter(samples, dtype=np.int64), [50, 99])
    return (float(p50) / unit_ns, float(p99) / unit_ns)


@dataclass
class RuntimeMetrics:
    """How the pipeline keeps up: queue depth, coalescing, lag from receipt to processing, the engine's
    time per batch, and tick-to-signal latency. The deques are written on the engine thread (timings)
    and the event loop (lag) and only read through :func:`percentiles`."""

    batches: int = 0
    coalesced: int = 0  # batches merged into another because the engine was behind
    queue_depth: int = 0
    queue_depth_max: int = 0
    lag_ns: collections.deque[int] = field(default_factory=_recent)
    engine_ns: collections.deque[int] = field(default_factory=_recent)  # ingest + close_due, per batch
    signal_ns: collections.deque[int] = field(default_factory=_recent)  # receipt -> signal, per batch

    def lag_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of receive-to-processing lag in milliseconds over the recent batches."""
        return percentiles(self.lag_ns, 1e6)

    def engine_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the engine's time per batch in microseconds; NaN before the first batch."""
        return percentiles(self.engine_ns, 1e3, math.nan)

    def signal_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of tick-to-signal latency in milliseconds (the oldest tick of a batch that fired
        to the signal); NaN until a live feed's batch fires one."""
        return percentiles(self.signal_ns, 1e6, math.nan)


_END = object()  # the feed finished (a replay reached its end)


class Runtime:
    """Feed -> bounded queue -> engine thread -> updates.

    The queue holds at most ``queue_batches`` batches: a feed faster than the engine waits (bar
    building never drops a tick). When batches pile up, the consumer takes them all at once and
    processes them as one (``metrics.coalesced``), so a lagging engine catches up with one snapshot
    instead of one per batch.
    """

    queue_batches = 64
    feed_close_s = 1.0
    """When the run ends, how long the feed may take to close (a WebSocket's closing handshake: one round
    trip) before it is left to finish on its own, with a warning. Short, because a headless stop that
    had to cancel the run (``DRAIN_S``, 3 s) must still exit within its 5 s."""
    store_close_s = 0.5
    """When the run ends, how long the bar store writer may take to write the bars still queued (a few
    milliseconds unless the disk is stuck). Part of the headless stop budget, like ``feed_close_s``."""

    def __init__(self, config: Config, engine: Engine | None = None, feed: Feed | None = None) -> None:
        self.config = config
        self.engine = engine or build_engine(config)
        self.feed = feed or build_feed(config, self.engine)
        self.frame_ns = int(1e9 / config.ui.fps)
        self.watch: tuple[str, ...] = self.feed.universe()
        self.outputs: tuple[str, ...] = tuple(config.ui.columns)
        self.spark = 60
        # each quote's previous session close, for the day P&L (Yahoo reports its own; others: the bars)
        self.sessions = SessionCloses(self.feed.name, getattr(self.feed, "previous_closes", None))
        self.metrics = RuntimeMetrics()
        self.taps: list[Callable[[np.ndarray], None]] = []  # e.g. a recorder; called on the event loop
        self._last_frame = 0
        self._worker: EngineThread | None = None  # the thread that owns the engine (stopped after a run)
        self._held: list[Any] = []  # at most one item taken from the queue while coalescing, not merged
        self.store_writer: StoreWriter | None = None  # persisting closed bars, while a live feed runs
        self._collector: BarCollector | None = None

    def process(self, ticks: np.ndarray | HistoryBars | Refill | None, now_ns: int | None = None) -> Update:
        """Apply one batch (or just the clock, when ``ticks`` is None). Runs on the engine thread.

        ``now_ns`` is the feed's clock (wall time for live feeds, the replayed time for a replay): bars
        whose interval has ended by then are closed even if their symbol has gone quiet. History
        (``HistoryBars``) goes in as such (its signals carry ``warmup=True``) and closes nothing by the
        clock: taking a long history in can outlast a bar, and the bar forming at its end is the live
        tape's to continue (its first batch covers that time) before the clock closes it. A ``Refill``
        re-runs its symbol (``Engine.refill``) and, for the same reason, closes nothing by the clock: the
        live trades the feed held back during the fetch come next and may belong to its last bar.
        """
        now = time.time_ns() if now_ns is None else now_ns
        signals: list[Signal] = []
        history = isinstance(ticks, HistoryBars | Refill)
        if isinstance(ticks, HistoryBars):
            signals += self.engine.ingest_history(ticks.bars)
            ticks = None
        elif isinstance(ticks, Refill):
            signals += self.engine.refill(ticks.sym, ticks.since_ns, ticks.ticks)
            ticks = None
        started = time.perf_counter_ns()
        if ticks is not None and len(ticks):
            signals += self.engine.ingest(ticks)
        if not history:
            signals += self.engine.close_due(now - now % self.engine.interval_ns)
        if ticks is not None and len(ticks):
            self._timed(ticks, bool(signals), time.perf_counter_ns() - started)
        snapshot = None
        if now - self._last_frame >= self.frame_ns:
            self._last_frame = now
            snapshot = self.snapshot(now)
        collector = self._collector  # (read once: the run's end clears it from the event loop)
        if collector is not None:  # every bar this call closed, to the store in one batch
            collector.hand_over()
        return Update(tuple(signals), snapshot)

    def _timed(self, ticks: np.ndarray, fired: bool, engine_ns: int) -> None:
        """Record one batch's engine time and, when it fired a signal, its tick-to-signal latency.

        Only batches with ticks count: a clock-only call closes due bars in microseconds and would pull
        the median down. Latency is measured from the batch's oldest receipt (the tick that waited
        longest) and only on a live feed: a replay's receive times are its file's.
        """
        m = self.metrics
        m.engine_ns.append(engine_ns)
        if fired and self.feed.realtime:
            m.signal_ns.append(time.time_ns() - int(ticks["recv"].min()))

    def finish(self) -> Update:
        """Close every forming bar (nothing more will come) and take a last snapshot."""
        signals = self.engine.close_due(np.iinfo(np.int64).max // 2)
        collector = self._collector
        if collector is not None:  # the last bars of a live feed that ended by itself are stored too
            collector.hand_over()
        now = self.feed.now_ns()
        return Update(tuple(signals), self.snapshot(now))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread that owns the engine while the runtime runs (in place before; after
        the run, in place once that thread has finished its last batch): the console reads a symbol's
        history or values this way, never while a batch is half applied."""
        worker = self._worker
        if worker is None:
            return fn(*args)
        return await worker.call(fn, *args)

    def check_symbol(self, name: str) -> str | None:
        """Why ``name`` cannot be added to a watchlist, or None when it can.

        A simulated market or a replay has a fixed universe; a live feed accepts any well-formed name
        (it cannot know every listing without a catalogue request) and shows it once it trades.
        """
        if not name or len(name) > 32 or not name.isprintable() or " " in name:
            return f"{name!r} is not a symbol name"
        universe = self.feed.universe()
        if self.feed.closed_universe and name not in universe:
            return f"{name} is not traded on the {self.feed.name} feed"
        return None

    async def add_symbols(self, names: Sequence[str]) -> None:
        """Give ``names`` engine slots (on the engine thread) and ask the feed to deliver them."""
        await self.call(_register, self.engine, names)
        await self.feed.subscribe(names)

    def snapshot(self, now_ns: int, symbols: Sequence[str] | None = None) -> MarketSnapshot:
        # the feed fills its map on the event loop; a lookup from this thread sees a whole entry or none
        return build_snapshot(self.engine, self.watch if symbols is None else symbols, self.outputs,
                              self.spark, now_ns, getattr(self.feed, "decimals", None), self.sessions)

    async def run(self, on_update: Callable[[Update], None],
                  on_status: Callable[[FeedStatus], None]) -> None:
        """Pump the feed until it ends or the task is cancelled; callbacks run on the event loop."""
        recorder = None
        if self.config.feed.record:
            from engine.feeds.record import Recorder

            recorder = Recorder(self.config.feed.record, self.engine.symbols)
            self.taps.append(recorder)
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_batches)
        self._held = []
        self._start_persisting()
        pump = asyncio.create_task(self._pump(queue, on_status), name="tickdeck-feed-pump")
        worker = self._worker = EngineThread()
        tick_s = self.frame_ns / 1e9
        try:
            while True:
                try:  # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                    # lands as the item arrives, and this loop would then never end)
                    if self._held:
                        item = self._held.pop(0)
                    else:
                        async with asyncio.timeout(tick_s):
                            item = await queue.get()
                except TimeoutError:  # a quiet feed: still close due bars and refresh the frame
                    item = None
                if item is _END:
                    if not self.feed.stopped:  # a finite feed (a replay) is over: its last bars are done
                        last = await worker.call(self.finish)
                        on_update(dataclasses.replace(last, health=self.health()))
                    break
                if isinstance(item, BaseException):
                    raise item
                batch = self._coalesce(item, queue) if isinstance(item, np.ndarray) else item
                update = await worker.call(self.process, batch, self.feed.now_ns())
                if update.snapshot is not None:
                    update = dataclasses.replace(update, health=self.health())
                if update.signals or update.snapshot is not None:
                    on_update(update)
        finally:
            pump.cancel()
            try:
                await self._closed(pump)
            finally:
                worker.stop()  # kept as self._worker: a late call waits for its last batch, then runs here
                await self._stop_persisting()
                if recorder is not None:
                    self.taps.remove(recorder)
                    await recorder.aclose()

    def _start_persisting(self) -> None:
        """On a live feed with a store configured, every bar the engine closes goes to a store writer."""
        self.store_writer, self._collector = persisting(self.config, self.feed.name, self.engine)

    async def _stop_persisting(self) -> None:
        """Write what is queued (up to ``store_close_s``, in a thread: never on the event loop)."""
        if self.store_writer is not None:
            self._collector = None
            await asyncio.to_thread(self.store_writer.close, self.store_close_s, self.engine)

    async def _closed(self, pump: asyncio.Task[None]) -> None:
        """Wait (up to ``feed_close_s``) for the cancelled pump, in which the feed's stream closes."""
        done, _ = await asyncio.wait({pump}, timeout=self.feed_close_s)
        if not done:
            log.warning("the %s feed had not closed %.1f s after the run ended; it is left to finish on its "
                        "own", self.feed.name, self.feed_close_s)
        elif not pump.cancelled() and (exc := pump.exception()) is not None:
            log.warning("the %s feed failed while closing: %s: %s", self.feed.name, type(exc).__name__, exc)

    def health(self) -> PipelineHealth:
        m = self.metrics
        c = self.feed.counters
        p50, p99 = m.lag_percentiles()
        e50, e99 = m.engine_percentiles()
        s50, s99 = m.signal_percentiles()
        return PipelineHealth(lag_p50_ms=p50, lag_p99_ms=p99, queue_depth=m.queue_depth,
                              queue_depth_max=m.queue_depth_max, coalesced=m.coalesced,
                              bad_messages=c.bad_total, reconnects=c.reconnects, gaps=c.gaps,
                              duplicates=c.duplicates, feed=self.feed.name, batches=m.batches,
                              ticks_in=c.ticks, ticks_processed=self.engine.stats.ticks,
                              engine_p50_us=e50, engine_p99_us=e99, signal_p50_ms=s50, signal_p99_ms=s99,
                              refills=self.engine.stats.refills, history_done=c.history_done,
                              history_total=c.history_total)

    def _coalesce(self, first: np.ndarray, queue: asyncio.Queue[Any]) -> np.ndarray:
        m = self.metrics
        m.queue_depth = queue.qsize()
        m.queue_depth_max = max(m.queue_depth_max, m.queue_depth + 1)
        parts = [first]
        while not queue.empty():
            nxt = queue.get_nowait()
            if not isinstance(nxt, np.ndarray):  # the end, an error, history or a refill: never merged
                self._held.append(nxt)  # handled before anything still in the queue
                break
            parts.append(nxt)
        m.batches += len(parts)
        m.coalesced += len(parts) - 1
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self.feed.realtime:  # a replay's receive times are the file's, not this run's
            m.lag_ns.append(time.time_ns() - int(batch["recv"].min()))
        return batch

    async def _pump(self, queue: asyncio.Queue[Any], on_status: Callable[[FeedStatus], None]) -> None:
        stream = self.feed.stream()
        try:
            async for item in stream:
                if isinstance(item, FeedStatus):
                    on_status(item)
                    continue
                if isinstance(item, np.ndarray):  # taps (a recorder): the live tape; no history, no refill
                    for tap in self.taps:
                        tap(item)
                await queue.put(item)  # waits while the engine is behind: backpressure, no drops
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which raises it in the runtime's task
            await queue.put(exc)
        finally:
            # Cancelled while waiting for room in the queue, the stream is parked at a ``yield``: close it
            # here, where run() waits for it, not whenever the garbage collector finds it.
            closer = getattr(stream, "aclose", None)  # an async generator (every feed's stream is one)
            if closer is not None:
                await closer()
