"""What the headless service publishes on the bus (``--publish nats://HOST:4222``, ``[bus] url``).

``BusPublisher`` is a sink (``engine.sinks.base.Sink``: the service's ``SinkGroup`` hands it the live
signals, drains and closes it within the stop budget, and its ``stats`` are in the summary) that also
takes snapshots and feed statuses (as the websocket broadcast does) and the closed bars (a runtime
``closed_tap``). Payloads are the broadcast protocol's frames (``engine.sinks.frames``), plus a ``bar``
frame (:func:`bar_frame`); subjects and message ids are ``engine.bus.subjects``'.

One signal per (feed, interval, symbol, rule, direction, bar): the message id (``engine.bus.subjects``).
A live rule without a cooldown as long as a bar can fire again on the bar it fired on; the bus carries
the first firing, and the repeats are counted (``repeats``), not published.

Signals, never silently dropped: each is journalled in the disk buffer (``engine.bus.buffer``: fsync'd,
survives a crash and a restart) before it goes to JetStream, and marked done when the stream acknowledged
it (stored, or already there: ``duplicates``, the other engine's copy). The journal holds ``buffer_max``
signals at most; past that a signal is counted as ``overflow`` and logged. At start, what the journal
still holds is published first.

Bars, snapshots and statuses are published fire-and-forget on the connection: while the bus is away they
are dropped and counted (``bars_dropped``); the bar store and the feed's history fill the bars again, and
the next snapshot and status replace the lost ones. Bars waiting for the connection are bounded
(``MAX_BARS``).

A bus lost while running: the connection closes (nats-py does not reconnect it, ``engine.bus.connection``
says why), the state becomes ``reconnecting`` and one warning says so; attempts follow with a backoff of
0.25 s doubling to ``max_backoff`` (with jitter) forever, each failure logged at info level; when one
works, ``live`` again, logged with the number of signals waiting, which then go out in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.buffer import DiskBuffer, JournalError, Pending
from engine.bus.connection import (
    BusError,
    BusSettings,
    Retention,
    connect,
    ensure_streams,
    retention_of,
    settings_of,
)
from engine.bus.subjects import (
    MSG_ID,
    bar_id,
    bar_subject,
    signal_id,
    signal_subject,
    snapshot_subject,
    status_subject,
    token,
)
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, Sink
from engine.sinks.frames import dumps, signal_frame, snapshot_frame, status_frame
from engine.snapshot import MarketSnapshot, PipelineHealth

if TYPE_CHECKING:
    from engine.config import Config
    from engine.runtime import Runtime

log = logging.getLogger("tickdeck.bus")

ACK_S = 2.0  # for JetStream's acknowledgement of one signal; past it the connection is taken as lost
WINDOW = 128  # signals published at once, awaiting their acks together
MAX_BARS = 200_000  # closed bars waiting for the connection; past it the oldest are dropped, counted
SEEN = 65_536  # message ids remembered to tell a repeat firing on the same bar
MAX_STATUSES = 64  # feed statuses waiting for the connection (the newest are kept)
FIRST_BACKOFF_S = 0.25
CLOSE_RESERVE_S = 0.3  # of close's timeout kept for flushing and closing the connection


def bar_frame(feed: str, interval: str, symbol: str, t: int, bar: Sequence[float],
              warmup: bool) -> dict[str, Any]:
    """A closed bar: its open time (ns), open, high, low, close, volume, and whether it came from history."""
    o, h, l, c, v = (float(x) for x in bar[:5])
    return {"type": "bar", "feed": feed, "interval": interval, "symbol": symbol, "t": int(t), "open": o,
            "high": h, "low": l, "close": c, "volume": v, "warmup": bool(warmup)}


def default_engine_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def buffer_path(config: Config, feed: str) -> Path:
    """``bus.buffer``, or for ``auto`` a file in the user state directory, one per feed and engine name
    (stable across restarts, so what one run left is published by the next)."""
    if config.bus.buffer.strip() not in ("", "auto"):
        return Path(config.bus.buffer)
    from engine.positions.stored import state_path

    suffix = f"-{token(config.bus.engine)}" if config.bus.engine else ""
    return state_path().parent / "bus" / f"signals-{token(feed)}{suffix}.jsonl"


class BusPublisher(Sink):
    """See the module docstring. ``open`` connects (bounded) before the run; the rest runs on the
    event loop, except ``on_closed`` (the engine thread)."""

    type = "bus"

    def __init__(self, settings: BusSettings, buffer: DiskBuffer, *, feed: str, interval: str,
                 engine: str = "", retention: Retention | None = None, snapshot_every: float = 1.0,
                 name: str = "bus", filter: SignalFilter = ANY) -> None:
        super().__init__(name, filter)
        self.settings = settings
        self.buffer = buffer
        self.feed = feed
        self.interval = interval
        self.engine = engine or default_engine_name()
        self.retention = retention or Retention()
        self.snapshot_every = snapshot_every
        self.state = "connecting"
        self.published = 0  # signals the stream stored
        self.duplicates = 0  # signals the stream already had (another engine's, or a republish)
        self.repeats = 0  # a rule firing again on a bar it fired on (same message id): not published
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()  # SEEN ids at most
        self.reconnects = 0
        self.bars_published = 0
        self.bars_dropped = 0
        self.snapshots = 0
        self.statuses = 0
        self.journal_errors = 0
        self.symbols: tuple[str, ...] = ()
        self._client: Any = None  # nats.aio.client.Client (only engine.bus.connection imports nats)
        self._js: Any = None  # its JetStreamContext
        self._queue: collections.deque[Pending] = collections.deque()  # bounded by the buffer's max_pending
        self._fresh: list[Pending] = []  # handed over in this turn of the event loop, not yet journalled
        self._bars: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._bars_lock = threading.Lock()
        self._statuses: collections.deque[FeedStatus] = collections.deque(maxlen=MAX_STATUSES)
        self._snapshot: tuple[MarketSnapshot, PipelineHealth | None] | None = None
        self._last_snapshot = -float("inf")
        self._names: Any = None  # slot -> symbol name, from the runtime's engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # signals queued
        self._rest = asyncio.Event()  # bars, statuses or a snapshot queued
        self._idle = asyncio.Event()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._closing = False
        self._down_since = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # --- life ------------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Read back the buffer, connect and set up the streams; ``BusError`` (one line) when any fails."""
        try:
            self.buffer.open()
        except JournalError as exc:
            raise BusError(str(exc)) from None
        try:
            await self._connect()
        except BusError:
            self.buffer.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._queue.extend(self.buffer.pending.values())
        self.state = "live"
        self._up.set()
        self._tasks = [asyncio.create_task(self._send_signals(), name="tickdeck-bus-signals"),
                       asyncio.create_task(self._send_rest(), name="tickdeck-bus-frames"),
                       asyncio.create_task(self._keep_connected(), name="tickdeck-bus-reconnect")]
        log.info("bus %s: publishing as engine %s (signals, bars, status, snapshots every %g s)",
                 self.settings.shown, self.engine, self.snapshot_every,
                 extra={"event": "bus", "fields": {"bus": self.settings.shown, "state": "live"}})

    async def _connect(self, timeout: float | None = None) -> None:
        made: list[Any] = []

        async def closed() -> None:  # nats-py's closed callback, which may run late: this client's only
            if made and made[0] is self._client and not self._closing:
                await self._lost(None)

        client = await connect(self.settings, on_closed=closed, timeout=timeout)
        made.append(client)
        js = client.jetstream(timeout=ACK_S)
        try:
            await ensure_streams(js, self.retention)
        except Exception as exc:  # no JetStream on that server, no permission, a limit the account refuses
            await client.close()
            hint = "is JetStream enabled (nats-server -js)?"
            if self.retention.replicas > 1:
                hint = (f"[bus] replicas = {self.retention.replicas} needs a JetStream cluster of at least "
                        f"{self.retention.replicas} servers; {hint}")
            raise BusError(f"the bus at {self.settings.shown} refused the streams ({type(exc).__name__}: "
                           f"{exc}); {hint}") from None
        self._client, self._js = client, js

    def start(self) -> None:
        """Nothing: ``open`` connected before the sinks started (it is async, ``start`` is not)."""

    def set_source(self, feed: str, symbols: Sequence[str], outputs: Sequence[str] = (),
                   interval: str = "") -> None:
        self.symbols = tuple(symbols)

    def attach(self, runtime: Runtime) -> None:
        """Take the bars ``runtime``'s engine closes (on its thread) from the next run on."""
        self._names = runtime.engine.symbols.name
        runtime.closed_taps.append(self.on_closed)

    # --- what the service hands over -------------------------------------------------------------------
    def enqueue(self, signal: Signal) -> None:
        mid = signal_id(self.feed, self.interval, signal)
        if mid in self._seen:  # the rule fired again on the same bar: the bus has its first firing
            self.repeats += 1
            return
        self._seen[mid] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        self._fresh.append(Pending(mid, signal_subject(self.feed, self.interval, signal.symbol),
                                   dumps(signal_frame(signal))))
        self._idle.clear()
        if len(self._fresh) == 1:  # journalled together, at the end of this turn of the loop
            asyncio.get_running_loop().call_soon(self._journal)

    def _journal(self) -> None:
        """The signals handed over in one turn of the event loop (one processed batch's) into the buffer
        with one write and one fsync, then on to the sender."""
        fresh, self._fresh = self._fresh, []
        try:
            kept = self.buffer.add(fresh)
        except OSError as exc:  # a full disk: kept in memory, published all the same, counted and logged
            self.journal_errors += 1
            if self.journal_errors == 1:
                log.error("bus buffer %s: cannot write (%s); signals are kept in memory only until it can "
                          "(counted as journal_errors)", self.buffer.path, exc.strerror or exc)
            kept = fresh[:max(self.buffer.max_pending - len(self._queue), 0)]
            self.buffer.overflow += len(fresh) - len(kept)
        self._queue.extend(kept)
        self._wake.set()
        if not self._queue:
            self._idle.set()

    def publish(self, snapshot: MarketSnapshot, health: PipelineHealth | None = None) -> None:
        """The newest snapshot: published when ``snapshot_every`` has passed since the last one."""
        if self.snapshot_every > 0:
            self._snapshot = (snapshot, health)
            self._rest.set()

    def publish_status(self, status: FeedStatus) -> None:
        self._statuses.append(status)
        self._rest.set()

    def on_closed(self, slots: np.ndarray, t: np.ndarray, bars: np.ndarray, warm: np.ndarray) -> None:
        """On the engine thread: encode the closed bars and hand them to the event loop."""
        names, loop = self._names, self._loop
        if names is None or loop is None or self._closing:
            return
        out = []
        for slot, when, bar, w in zip(slots.tolist(), t.tolist(), bars.tolist(), warm.tolist(), strict=True):
            symbol = names(slot)
            frame = bar_frame(self.feed, self.interval, symbol, when, bar, w)
            out.append((bar_subject(self.feed, self.interval, symbol), dumps(frame).encode("utf-8"),
                        bar_id(self.feed, self.interval, symbol, when)))
        with self._bars_lock:
            self._bars.extend(out)
            over = len(self._bars) - MAX_BARS
            for _ in range(max(over, 0)):
                self._bars.popleft()
            if over > 0:
                self.bars_dropped += over
        with contextlib.suppress(RuntimeError):  # the loop has closed: the process is ending
            loop.call_soon_threadsafe(self._rest.set)

    # --- sending -----------------------------------------------------------------------------------------
    async def _send_signals(self) -> None:
        while True:
            if not self._queue:
                if not self._fresh:
                    self._idle.set()
                await self._wake.wait()
                self._wake.clear()
                continue
            await self._up.wait()
            js = self._js
            assert js is not None
            # WINDOW publishes in flight at once (one connection keeps their order); each one acked is
            # done, each one that failed stays queued, in order, for the next connection
            # (they stay at the head of the queue while in flight: counted as pending, kept if cancelled)
            window = list(itertools.islice(self._queue, WINDOW))
            acks = await asyncio.gather(*(js.publish(p.subject, p.data.encode("utf-8"), timeout=ACK_S,
                                                     headers={MSG_ID: p.id}) for p in window),
                                        return_exceptions=True)
            for _ in window:
                self._queue.popleft()
            failed = [p for p, ack in zip(window, acks, strict=True) if isinstance(ack, BaseException)]
            for ack in acks:
                if not isinstance(ack, BaseException):
                    if ack.duplicate:
                        self.duplicates += 1
                    else:
                        self.published += 1
            self._queue.extendleft(reversed(failed))
            self._mark_done([p.id for p, ack in zip(window, acks, strict=True)
                             if not isinstance(ack, BaseException)])
            if failed:  # no ack in time, the connection gone, the stream refused it
                await self._lost(next(a for a in acks if isinstance(a, BaseException)))

    def _mark_done(self, ids: list[str]) -> None:
        try:
            self.buffer.mark_done(ids)
        except OSError as exc:
            self.journal_errors += 1
            log.debug("bus buffer: %s", exc)

    async def _send_rest(self) -> None:
        """Bars, statuses and snapshots, as they come, while the bus is up."""
        while True:
            await self._rest.wait()
            self._rest.clear()
            if not self._up.is_set():
                self._drop_bars()
                await self._up.wait()
                self._rest.set()
                continue
            client = self._client
            assert client is not None
            try:
                await self._publish_rest(client)
            except Exception as exc:
                await self._lost(exc)
                continue
            if self._snapshot is not None and not self._rest.is_set():  # one waits for its time
                wait = self._last_snapshot + self.snapshot_every - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rest.wait(), max(wait, 0.0))
                self._rest.set()

    async def _publish_rest(self, client: Any) -> None:
        while self._statuses:
            status = self._statuses[0]
            await client.publish(status_subject(self.feed, self.engine),
                                 dumps(status_frame(status)).encode("utf-8"))
            self._statuses.popleft()
            self.statuses += 1
        with self._bars_lock:
            bars, self._bars = self._bars, collections.deque()
        for n, (subject, data, mid) in enumerate(bars):
            try:
                await client.publish(subject, data, headers={MSG_ID: mid})
            except Exception:
                self.bars_dropped += len(bars) - n
                raise
            self.bars_published += 1
        now = time.monotonic()
        if self._snapshot is not None and now - self._last_snapshot >= self.snapshot_every:
            snapshot, health = self._snapshot
            self._snapshot, self._last_snapshot = None, now
            for part in _split(snapshot, health, client.max_payload):
                await client.publish(snapshot_subject(self.feed, self.interval, self.engine), part)
            self.snapshots += 1

    def _drop_bars(self) -> None:
        with self._bars_lock:
            self.bars_dropped += len(self._bars)
            self._bars.clear()

    # --- losing the bus and getting it back ---------------------------------------------------------------
    async def _closed(self) -> None:
        """nats-py's closed callback: the connection is gone (the server went away, or we closed it)."""
        if not self._closing:
            await self._lost(None)

    async def _lost(self, exc: BaseException | None) -> None:
        if self._closing or not self._up.is_set():
            return
        self._up.clear()
        self.state = "reconnecting"
        self._down_since = time.monotonic()
        reason = "the connection closed" if exc is None else f"{type(exc).__name__}: {exc}".rstrip(": ")
        log.warning("bus %s: lost (%s); reconnecting with backoff, signals wait in %s (%d now)",
                    self.settings.shown, reason, self.buffer.path, len(self._queue),
                    extra={"event": "bus", "fields": {"bus": self.settings.shown, "state": "reconnecting",
                                                      "reason": reason}})
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)
        self._down.set()

    async def _keep_connected(self) -> None:
        backoff = Backoff(FIRST_BACKOFF_S, max(self.settings.max_backoff, FIRST_BACKOFF_S))
        while True:
            await self._down.wait()
            while not self._closing:
                delay = backoff.next()
                await asyncio.sleep(delay)
                try:
                    await self._connect(timeout=min(self.settings.connect_timeout, max(delay, 1.0)))
                except BusError as exc:
                    log.info("%s; trying again with backoff (up to %g s apart)", exc, backoff.cap)
                    continue
                break
            if self._closing:
                return
            backoff.reset()
            self.reconnects += 1
            self._down.clear()
            self.state = "live"
            self._up.set()
            self._wake.set()
            self._rest.set()
            log.info("bus %s: live again after %.1f s; %d buffered signals go out now", self.settings.shown,
                     time.monotonic() - self._down_since, len(self._queue),
                     extra={"event": "bus", "fields": {"bus": self.settings.shown, "state": "live"}})

    # --- the end -------------------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> bool:
        if not self._queue and not self._fresh:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._queue and not self._fresh

    async def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued while ``timeout`` allows; what is left stays in the buffer file."""
        deadline = time.monotonic() + timeout
        await self.drain(max(timeout - CLOSE_RESERVE_S, 0.0))
        self._closing = True
        if self._fresh:  # handed over in this very turn: into the buffer file before it closes
            self._journal()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.flush(), max(deadline - time.monotonic(), 0.05))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), max(deadline - time.monotonic(), 0.05))
        if self._queue:
            log.warning("bus: %d signals were not published before the stop; they stay in %s and go out "
                        "at the next start", len(self._queue), self.buffer.path)
        self.buffer.close()
        self.state = "closed"

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "bus": self.settings.shown, "engine": self.engine, "state": self.state,
                "published": self.published, "duplicates": self.duplicates, "repeats": self.repeats,
                "pending": len(self._queue) + len(self._fresh),
                "reconnects": self.reconnects, "bars_published": self.bars_published,
                "bars_dropped": self.bars_dropped, "snapshots": self.snapshots, "statuses": self.statuses,
                "journal_errors": self.journal_errors, **self.buffer.stats()}


def _split(snapshot: MarketSnapshot, health: PipelineHealth | None, limit: int) -> list[bytes]:
    """The snapshot as one frame, or as several (each with part of the quotes) when one would pass the
    server's ``max_payload`` (1 MB by default; 1,000 symbols make about 1.26 MB)."""
    whole = dumps(snapshot_frame(snapshot, health)).encode("utf-8")
    if len(whole) <= limit or len(snapshot.quotes) < 2:
        return [whole]
    parts = -(-len(whole) * 5 // (limit * 4))  # room to spare: quotes differ in size
    names = [q.symbol for q in snapshot.quotes]
    size = -(-len(names) // parts)
    return [dumps(snapshot_frame(snapshot, health, set(names[i:i + size]))).encode("utf-8")
            for i in range(0, len(names), size)]


async def open_publisher(config: Config, runtime: Runtime, url: str | None = None) -> BusPublisher:
    """The publisher for ``config``'s ``[bus]``, connected, taking ``runtime``'s closed bars; ``BusError``
    (one line) when the settings, the buffer or the bus cannot be used."""
    feed = runtime.feed.name
    publisher = BusPublisher(settings_of(config, url), DiskBuffer(buffer_path(config, feed),
                                                                  max_pending=config.bus.buffer_max),
                             feed=feed, interval=config.engine.interval, engine=config.bus.engine,
                             retention=retention_of(config), snapshot_every=config.bus.snapshot_every)
    await publisher.open()
    publisher.attach(runtime)
    return publisher
