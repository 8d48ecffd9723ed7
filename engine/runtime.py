"""The runtime: feed -> engine -> signals and frame-rate snapshots, shared by the console and the
headless service.

The engine is owned by one daemon thread (``EngineThread``, in ``engine.engine_thread``): every batch
is processed by ``process`` there, in order (numba kernels release the GIL, so the event loop stays
responsive), and snapshots are built in that same call, so readers only ever get copies. Snapshots are
built at most ``fps`` times a second however fast ticks arrive: the UI gets one snapshot per frame, never
one message per tick. The feed comes from ``engine.feeds.registry``; the figures of how the runtime keeps
up are ``engine.runtime_metrics.RuntimeMetrics``.

When ``run`` returns, the feed has closed: its stream is closed (its ``finally`` runs) in the pump task,
which ``run`` waits for, up to ``feed_close_s`` (then it is left to finish and a warning says so). The
engine thread is not waited for (quitting during a first-run compile must not hang), but it is stopped:
a ``call`` made after that waits until it has finished its last batch and then runs in place, never
beside ``process``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from engine.config import Config, parse_interval
from engine.console_runtime import ClosedBars
from engine.engine_thread import EngineThread
from engine.feeds.base import Feed, FeedStatus, HistoryBars, Refill
from engine.feeds.registry import build_feed, register_symbols
from engine.positions.alerts import figures as position_figures
from engine.positions.book import PositionBook
from engine.positions.daily import DailyCloses
from engine.positions.session import SessionCloses
from engine.runtime_metrics import RuntimeMetrics
from engine.signals.events import Signal
from engine.signals.rules import load_rules
from engine.snapshot import MarketSnapshot, PipelineHealth, Update, build_snapshot
from engine.store import PERSISTED_FEEDS
from engine.store_writer import BarCollector, StoreWriter, persisting
from engine.tick_engine import Engine

if TYPE_CHECKING:
    from engine.chart_data import ChartData
    from engine.stored_bars import StoredBars

__all__ = ["PipelineHealth", "Runtime", "Update", "build_engine"]

T = TypeVar("T")
log = logging.getLogger("tickdeck.runtime")


def build_engine(config: Config) -> Engine:
    """The engine the config describes: its indicators and the watchlist's columns, interval, capacity,
    history depth and rules. (The feed is built by ``engine.feeds.registry.build_feed``.)"""
    from engine.backfill.sizing import ring_bars

    outputs = list(config.engine.indicators)
    outputs += [n for n in config.ui.columns if n not in outputs]
    return Engine(outputs, parse_interval(config.engine.interval), capacity=config.engine.max_symbols,
                  depth=ring_bars(config), rules=load_rules(config.rules))


_END = object()  # the feed finished (a replay reached its end)


ClosedTap = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
"""``Engine.on_closed``'s signature: the slots, open times, bars (open, high, low, close, volume) and
warm-up flags of the bars one engine call closed (views: copy what is kept)."""


class Runtime:
    """Feed -> bounded queue -> engine thread -> updates.

    The queue holds at most ``queue_batches`` batches: a feed faster than the engine waits (bar
    building never drops a tick). When batches pile up, the consumer takes them all at once and
    processes them as one (``metrics.coalesced``), so a lagging engine catches up with one snapshot
    instead of one per batch.
    """

    # What the console may ask of it (engine.console_runtime.ConsoleRuntime): everything.
    implements_subscribe = True
    implements_watch = True
    implements_history = True
    implements_alerts = True

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
        self.sessions = SessionCloses(self.feed.name, self.feed.previous_closes)
        self.metrics = RuntimeMetrics()
        self.taps: list[Callable[[np.ndarray], None]] = []  # e.g. a recorder; called on the event loop
        self.closed_taps: list[ClosedTap] = []  # e.g. the bus; called on the engine thread, must not block
        self._last_frame = 0
        self._worker: EngineThread | None = None  # the thread that owns the engine (stopped after a run)
        self._held: list[Any] = []  # at most one item taken from the queue while coalescing, not merged
        self.store_writer: StoreWriter | None = None  # persisting closed bars, while a live feed runs
        self._collector: BarCollector | None = None
        self._stored: StoredBars | None = None  # bars older than the ring, for charts and backtests
        # previous closes beyond the ring, for held symbols' day P&L: a live feed's store's, its service's
        stored = self._stored_close if self.feed.name in PERSISTED_FEEDS else None
        self.sessions.daily = DailyCloses.for_feed(self.feed, stored)

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
        refuse = getattr(self.feed, "refuse", None)  # a feed that knows its service's listings
        return refuse(name) if refuse is not None else None

    async def set_positions(self, book: PositionBook) -> None:
        """Hand ``book`` to the detector's position rules (pnl, stop, target), on the engine thread; call it
        when the book changes (its ``version``), never per tick."""
        held = position_figures(book)
        if self.sessions.daily is not None:
            self.sessions.daily.hold(held)
        await self.call(self.engine.detector.set_positions, held)

    async def add_symbols(self, names: Sequence[str]) -> None:
        """Give ``names`` engine slots (on the engine thread) and ask the feed to deliver them."""
        await self.call(register_symbols, self.engine, names)
        await self.feed.subscribe(names)

    async def drop_symbols(self, names: Sequence[str]) -> None:
        """Ask the feed to stop delivering ``names`` (their engine slots stay)."""
        await self.feed.unsubscribe(names)

    def set_watch(self, symbols: Sequence[str]) -> None:
        """Carry ``symbols`` in the snapshots from the next frame on."""
        self.watch = tuple(symbols)

    async def chart(self, symbol: str, factor: int, bars: int) -> ChartData | None:
        """``symbol``'s chart data (``engine.chart_data``), read on the engine's thread; a timeframe
        longer than the interval also reads older bars from the store (in a thread)."""
        from engine.chart_data import chart_data  # only a console with a detail pane open needs it

        older = None  # at the engine's interval the ring holds the chart; longer timeframes read the store
        if factor > 1:
            older = await asyncio.to_thread(self._stored_bars().newest, symbol, time.time_ns(),
                                            self.engine.history.depth * factor)
        return await self.call(chart_data, self.engine, symbol, factor, bars, older)

    def chart_reach(self) -> int:
        """Bars a chart can have at the bar interval: the ring's, or one store read's when there is one."""
        if not self._stored_bars().missing:
            from engine.stored_bars import READ_MAX

            return READ_MAX
        return self.engine.history.depth

    async def closed_bars(self, symbol: str, stored: int | None = None) -> ClosedBars | None:
        """Copies of ``symbol``'s closed bars, taken on the engine's thread so none is half written, after
        the older ones the store holds (read in a thread first; at most ``stored``, else a backtest's)."""
        from engine.stored_bars import BACKTEST_BARS, merge

        limit = BACKTEST_BARS if stored is None else stored
        older = await asyncio.to_thread(self._stored_bars().newest, symbol, time.time_ns(), limit)
        copied = await self.call(self.engine.closed_bars, symbol)
        if copied is None:
            return None
        times, bars, _ = merge(older, *copied)
        return ClosedBars(times, bars, self.engine.interval_ns)

    def close_history(self) -> None:
        """Close the store reader that charts and backtests opened."""
        if self._stored is not None:
            self._stored.close()

    def _stored_close(self, symbol: str, before_ns: int) -> tuple[int, float] | None:
        return self._stored_bars().last_before(symbol, before_ns)

    def _stored_bars(self) -> StoredBars:
        """The reader of bars older than the engine's ring (it opens the store at its first read)."""
        if self._stored is None:
            from engine.stored_bars import StoredBars

            self._stored = StoredBars(self.config, self.config.feed.name, self.engine.interval_ns)
        return self._stored

    def snapshot(self, now_ns: int, symbols: Sequence[str] | None = None) -> MarketSnapshot:
        # the feed fills its map on the event loop; a lookup from this thread sees a whole entry or none
        return build_snapshot(self.engine, self.watch if symbols is None else symbols, self.outputs,
                              self.spark, now_ns, self.feed.decimals, self.sessions)

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
        daily = self.sessions.daily
        closes = asyncio.create_task(daily.run(), name="tickdeck-daily-closes") if daily is not None else None
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
            if closes is not None:  # before the feed closes: its lookups use the feed's REST source
                closes.cancel()
                await asyncio.wait({closes}, timeout=self.feed_close_s)
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
        if self.closed_taps:  # the store's collector (when there is one) first, then every tap
            taps = [t for t in (self.engine.on_closed, *self.closed_taps) if t is not None]

            def closed(slots: np.ndarray, t: np.ndarray, bars: np.ndarray, warm: np.ndarray) -> None:
                for tap in taps:
                    tap(slots, t, bars, warm)

            self.engine.on_closed = closed

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
