"""``tickdeck sink --from nats://...``: the signal sinks (webhook, Telegram, JSON lines: ``engine.sinks``,
as the headless service runs them) fed by a durable JetStream pull consumer instead of an engine.

Each fetched batch (``batch`` messages at most) is handed to the sinks; when every sink has written or sent
it (``SinkGroup.drain``: for a webhook that is a 2xx answer or a dead letter, ``engine.sinks.http``), the
pairs (sink, message id) are appended to the delivered journal (fsync'd) and only then is the batch
acknowledged. A webhook records each pair as soon as its 2xx answer arrives, so a kill in the middle of a
batch does not send its first signals again. While a sink is still retrying, the messages are kept from
redelivery with ``in_progress`` (JetStream's ``+WPI``) every ``ack_wait / 3``.

Exactly once, across the process's own restarts: a message the server delivers again (its ack never
reached the server: a kill before it) goes only to the sinks that have no record of it in the journal;
one every sink has is acknowledged at once (``duplicates``). The window left is a kill after a webhook
answered 2xx and before the journal's fsync (for the other sinks: before the batch's fsync); for it each
webhook request carries the message id as an idempotency key (:data:`IDEMPOTENCY_HEADER`), so the
receiver can drop the repeat.

The delivered journal keeps the ``REMEMBER`` newest ids (rewritten atomically when it holds twice that):
the stream's own duplicate window and the consumer's ack floor cover anything older.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from engine.bus.connection import BusError, BusSettings, connect
from engine.bus.subjects import MSG_ID, SIGNALS, SIGNALS_STREAM
from engine.feeds.backoff import Backoff
from engine.files import write_atomically
from engine.signals.events import Signal
from engine.sinks.base import Sink, SinkGroup
from engine.sinks.frames import FrameError, decode
from engine.sinks.http import Outcome
from engine.sinks.webhook import WebhookSink

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

log = logging.getLogger("tickdeck.bus")

IDEMPOTENCY_HEADER = "Idempotency-Key"
"""The IETF httpapi draft "The Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-
header), as Stripe and others use it; the draft makes its value a Structured Field string, so it is
sent quoted (``Idempotency-Key: "binance.1m.BTCUSDT.rsi_oversold.up.1735689600000000000"``)."""
REMEMBER = 100_000  # delivered message ids kept in the journal and in memory
FETCH_S = 1.0  # how long one fetch waits for messages
FIRST_BACKOFF_S = 0.25


@dataclass(frozen=True)
class ConsumerSettings:
    durable: str = "tickdeck-sink"
    """The consumer's name in the stream: a restarted process with the same name resumes where it stopped."""
    subject: str = f"{SIGNALS}.>"
    """Which signals: a subject filter within ``tickdeck.signals.>`` (``tickdeck.signals.binance.*.*``)."""
    ack_wait: float = 30.0
    batch: int = 64
    delivered: Path = Path("tickdeck-sink.delivered")
    """The journal of delivered message ids (see the module docstring)."""


class KeyedWebhookSink(WebhookSink):
    """A webhook sink whose requests carry the signal's message id as an idempotency key, and which
    records each delivery (``on_sent``) the moment its 2xx answer arrives."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.keys: dict[int, str] = {}  # id() of the Signal objects of the batch in flight -> message id
        self.on_sent: Callable[[str, str], None] | None = None  # (sink name, message id)

    async def attempt(self, session: aiohttp.ClientSession, signal: Signal) -> Outcome:
        key = self.keys.get(id(signal))
        if key is not None:
            self._headers[IDEMPOTENCY_HEADER] = f'"{key}"'
        else:
            self._headers.popall(IDEMPOTENCY_HEADER, None)
        outcome = await super().attempt(session, signal)
        if outcome.ok and key is not None and self.on_sent is not None:
            self.on_sent(self.name, key)
        return outcome


class DeliveredJournal:
    """``<sink name> <message id>`` of every delivery, newest ``remember`` kept; an append-only file."""

    def __init__(self, path: Path, remember: int = REMEMBER) -> None:
        self.path = path
        self.remember = remember
        self.ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lines = 0
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.strip():
                        self._remember(line.strip())
            self._compact()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BusError(f"cannot use the delivered journal {self.path}: {exc.strerror or exc}") from None

    def __contains__(self, mid: str) -> bool:
        return mid in self.ids

    def _remember(self, mid: str) -> None:
        self.ids[mid] = None
        self.ids.move_to_end(mid)
        while len(self.ids) > self.remember:
            self.ids.popitem(last=False)

    def add(self, ids: list[str]) -> None:
        """Record ``ids`` durably (one write, one fsync) before they are acknowledged."""
        if not ids or self._fd is None:
            return
        data = "".join(f"{i}\n" for i in ids).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        for mid in ids:
            self._remember(mid)
        self._lines += len(ids)
        if self._lines >= 2 * self.remember:
            self._compact()
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _compact(self) -> None:
        ids = list(self.ids)
        write_atomically(self.path, lambda fh: fh.writelines(f"{i}\n" for i in ids))
        self._lines = len(ids)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SignalConsumer:
    """Fetch, deliver, record, acknowledge (module docstring); ``request_stop`` ends ``run`` after the
    batch in hand is delivered (or ``stop_budget`` seconds have passed: then it is left unacknowledged
    and the server delivers it again to the next process)."""

    def __init__(self, settings: BusSettings, consumer: ConsumerSettings, sinks: SinkGroup, *,
                 stop_budget: float = 3.0) -> None:
        self.settings = settings
        self.consumer = consumer
        self.sinks = sinks
        self.stop_budget = stop_budget
        self.journal = DeliveredJournal(consumer.delivered, REMEMBER * max(len(sinks), 1))
        self.webhooks = [s for s in sinks if isinstance(s, KeyedWebhookSink)]
        for hook in self.webhooks:
            hook.on_sent = self._sent
        self.received = 0
        self.delivered = 0  # handed to the sinks and written or sent by every one
        self.duplicates = 0  # delivered to every sink before (the journal says): acknowledged at once
        self.partial = 0  # delivered again to some sinks only: those the journal had no record of
        self.bad = 0  # not a signal frame: acknowledged (it never will be one), counted and logged once
        self.reconnects = 0
        self.state = "connecting"
        self._client: Client | None = None
        self._stop = asyncio.Event()
        self._stop_at: float | None = None

    def request_stop(self, name: str = "stop") -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
            log.info("%s: finishing the batch in hand, then stopping", name)
        self._stop.set()

    async def open(self) -> None:
        """Connect (bounded) and bind the durable consumer; ``BusError`` when the bus cannot be used."""
        self.journal.open()
        await self._connect()

    async def _connect(self, timeout: float | None = None) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        client = await connect(self.settings, timeout=timeout)
        js: JetStreamContext = client.jetstream(timeout=max(self.settings.connect_timeout, 1.0))
        config = ConsumerConfig(durable_name=self.consumer.durable, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=self.consumer.ack_wait,
                                max_ack_pending=max(self.consumer.batch * 4, 256),
                                filter_subject=self.consumer.subject)
        try:
            sub = await js.pull_subscribe(self.consumer.subject, durable=self.consumer.durable,
                                          stream=SIGNALS_STREAM, config=config)
        except Exception as exc:
            await client.close()
            raise BusError(f"the bus at {self.settings.shown} has no signal stream to consume "
                           f"({type(exc).__name__}: {exc}); start an engine with --publish first") from None
        self._client = client
        self.state = "live"
        self._sub = sub
        return sub

    async def run(self) -> None:
        backoff = Backoff(FIRST_BACKOFF_S, max(self.settings.max_backoff, FIRST_BACKOFF_S))
        while not self._stop.is_set():
            try:
                msgs = await self._fetch()
                if msgs:
                    await self._handle(msgs)
                backoff.reset()
            except BusError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    break
                await self._reconnect(exc, backoff)

    async def _fetch(self) -> list[Msg]:
        import nats.errors

        fetch = asyncio.create_task(self._sub.fetch(self.consumer.batch, timeout=FETCH_S))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not fetch.done():  # stopping: a batch fetched now would only wait for its redelivery
            fetch.cancel()
            await asyncio.wait({fetch})
            return []
        try:
            return list(fetch.result())
        except (TimeoutError, nats.errors.TimeoutError):
            return []

    async def _reconnect(self, exc: BaseException, backoff: Backoff) -> None:
        self.state = "reconnecting"
        log.warning("bus %s: lost (%s: %s); reconnecting with backoff (up to %g s apart)",
                    self.settings.shown, type(exc).__name__, exc, backoff.cap)
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:
                log.debug("bus: closing the lost connection failed", exc_info=True)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff.next())
            if self._stop.is_set():
                return
            try:
                await self._connect(timeout=self.settings.connect_timeout)
            except BusError as err:
                log.info("%s; trying again", err)
                continue
            self.reconnects += 1
            log.info("bus %s: live again", self.settings.shown)
            return

    async def _handle(self, msgs: list[Msg]) -> None:
        self.received += len(msgs)
        fresh: list[tuple[Msg, str]] = []
        repeat: list[Msg] = []
        taken: list[str] = []  # "<sink> <id>" of this batch, recorded once every sink has it
        for msg in msgs:
            mid = (msg.headers or {}).get(MSG_ID) or f"{msg.metadata.stream}.{msg.metadata.sequence.stream}"
            todo = [s for s in self.sinks if f"{s.name} {mid}" not in self.journal]
            if not todo:
                self.duplicates += 1
                repeat.append(msg)
                continue
            if len(todo) < len(self.sinks):
                self.partial += 1
            try:
                frame = decode(msg.data)
                if not isinstance(frame, Signal):
                    raise FrameError(type(frame).__name__, "not a signal")
            except FrameError as exc:
                self.bad += 1
                if self.bad == 1:
                    log.error("a message on %s is not a signal frame (%s); acknowledged and skipped (counted "
                              "as bad)", msg.subject, exc)
                repeat.append(msg)
                continue
            for hook in self.webhooks:
                hook.keys[id(frame)] = mid
            for sink in todo:
                if self._deliver(sink, frame):
                    taken.append(f"{sink.name} {mid}")
            fresh.append((msg, mid))
        try:
            if fresh and not await self._drained(fresh):
                return  # stopping with the batch still being sent: unacknowledged, delivered again later
            self.journal.add(taken)
        finally:
            for hook in self.webhooks:
                hook.keys.clear()
        self.delivered += len(fresh)
        for msg in [m for m, _ in fresh] + repeat:
            await msg.ack_sync(timeout=max(self.settings.connect_timeout, 1.0))

    def _deliver(self, sink: Sink, signal: Signal) -> bool:
        """As ``SinkGroup.deliver`` does, for one sink: one that raises is counted, never stops the rest."""
        try:
            return sink.deliver(signal)
        except Exception:
            errors = self.sinks.errors
            if sink.name not in errors:
                log.exception("sink %s failed to take a signal (logged once; counted after)", sink.name)
            errors[sink.name] = errors.get(sink.name, 0) + 1
            return False

    def _sent(self, sink: str, mid: str) -> None:
        try:
            self.journal.add([f"{sink} {mid}"])
        except OSError as exc:  # the batch's record after the drain tries again; its ack waits for it
            log.error("cannot record a delivery in %s: %s", self.journal.path, exc.strerror or exc)

    async def _drained(self, fresh: list[tuple[Msg, str]]) -> bool:
        """Wait until every sink has written or sent the batch, keeping it from redelivery meanwhile;
        False when a stop's budget ran out first."""
        beat = max(self.consumer.ack_wait / 3, 0.1)
        while True:
            wait = beat
            if self._stop_at is not None:
                wait = min(wait, self._stop_at + self.stop_budget - time.monotonic())
                if wait <= 0:
                    return False
            if await self.sinks.drain(wait):
                return True
            for msg, _ in fresh:
                await msg.in_progress()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 1.0)
            except Exception:
                log.debug("bus: closing failed", exc_info=True)
        self.journal.close()

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "delivered": self.delivered, "duplicates": self.duplicates,
                "partial": self.partial, "bad": self.bad, "reconnects": self.reconnects,
                "durable": self.consumer.durable, "subject": self.consumer.subject}


def build_consumer_sinks(tables: Sequence[tuple[Mapping[str, Any], str]]) -> list[Sink]:
    """The ``[[sinks]]`` of a sink config, built as the headless service builds them, except that a
    webhook also sends the idempotency key. Only jsonl, webhook and telegram sinks make sense here."""
    from engine.sinks.config import WebhookSettings, build_sink, load_sinks

    sinks: list[Sink] = []
    for spec in load_sinks(tables):
        if spec.type not in ("jsonl", "webhook", "telegram"):
            raise BusError(f"{spec.file}: {spec.label}: tickdeck sink runs jsonl, webhook and telegram sinks "
                           f"(a {spec.type} sink belongs to an engine)")
        if not spec.enabled:
            continue
        s = spec.settings
        if isinstance(s, WebhookSettings):
            d = s.delivery
            sinks.append(KeyedWebhookSink(s.url, headers=dict(s.headers), name=spec.name, filter=spec.filter,
                                          dead_letter=d.dead_letter, timeout=d.timeout, retries=d.retries,
                                          backoff=d.backoff, max_backoff=d.max_backoff, queue=d.queue))
        else:
            sinks.append(build_sink(spec))
    return sinks


def summary_line(consumer: SignalConsumer, sinks: SinkGroup, stopped_by: str) -> str:
    return json.dumps({"event": "summary", **consumer.stats(), "stopped_by": stopped_by,
                       "sinks": sinks.stats()}, default=str)
