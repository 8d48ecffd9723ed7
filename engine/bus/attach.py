"""``tickdeck attach nats://HOST:4222``: the console over every engine publishing to a bus.

:class:`FleetRuntime` implements what the console needs of a runtime
(:class:`~engine.console_runtime.ConsoleRuntime`) and, like the WebSocket attach
(``engine.remote.RemoteRuntime``), is a view-only one: no local engine, its ``implements_*`` flags all
False. What it reads (``engine.bus.subjects`` names the subjects):

- ``tickdeck.snapshots.<feed>.<interval>.<engine>`` (plain subscription): every engine's snapshots,
  merged into one watchlist and one row per engine by ``engine.bus.merge`` (an engine silent for
  ``merge.GONE_S`` seconds is marked gone; one that publishes again, or a new one, appears by itself);
- ``tickdeck.status.<feed>.<engine>`` (plain subscription): each engine's feed status, on its row;
- the signals from the ``TICKDECK_SIGNALS`` stream, not from their subjects: a plain subscription would
  get both copies of a signal two redundant engines publish, where the stream holds it once (its
  message id). An ordered consumer (ephemeral, no acks, flow control: nats-py's ``ordered_consumer``)
  starts ``HISTORY`` messages before the stream's end, so the log opens with the recent signals, then
  follows live. After a lost bus it resumes after the last stream sequence it delivered: nothing twice,
  nothing skipped that the stream still holds.

``--feed`` and ``--interval`` narrow the subjects (``feed``, ``interval``: wildcards when empty).

States (``FeedStatus`` of the feed ``fleet``, on the header): ``connecting``; ``live`` while every engine
heard of is live (the reason counts them and names the bus); ``stale`` when one is gone or its feed is
not live (the reason names it), or no engine has published yet; ``reconnecting`` with the reason and the
delay while the bus is away: the connection is made again with ``engine.feeds.backoff`` (0.25 s doubling
to ``bus.max_backoff``, forever), and the engines' rows stay as last seen meanwhile.

The symbols in ``watch`` when ``run`` starts are those the console opens with; a symbol first heard of
later (an engine started after the console, or one carrying more) is announced in the update that first
carries its quote (``Update.new_symbols``; again only after its engine was forgotten, ``merge.FORGET_S``),
and the console lists it by itself.

The merged snapshot goes to the console when an engine's snapshot arrives, and every ``TICK_S`` seconds
when nothing arrives, so the rows say gone even when every engine is silent. A malformed message is
counted in ``feed.counters`` and skipped. Credentials are the ``[bus]`` ones (``engine.bus.connection``):
a ``.creds`` file or a token in an environment variable, never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from engine.bus.connection import BusError, BusSettings, connect
from engine.bus.merge import FleetMerge
from engine.bus.subjects import SIGNALS, SIGNALS_STREAM, SNAPSHOTS, STATUS, token, untoken
from engine.console_runtime import ViewOnlyRuntime
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedCounters, FeedStatus
from engine.signals.events import Signal
from engine.sinks.frames import FrameError, Snapshot, decode
from engine.snapshot import Update

F = TypeVar("F", Snapshot, FeedStatus, Signal)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger("tickdeck.bus")

FLEET = "fleet"
HISTORY = 500  # signals read back at start: as many as the console's signal log keeps (widgets.signal_log)
TICK_S = 1.0
GATHER_S = 3.0  # at start, for a first snapshot (the engines publish one every bus.snapshot_every, 1 s)
SETTLE_S = 1.2  # then for the other engines' (one snapshot period and a little)
RETRY_STREAM_S = 2.0  # between looks for a signal stream that does not exist yet
FIRST_BACKOFF_S = 0.25


class FleetFeed:
    """``runtime.feed`` of a fleet console: its name, counters and the symbols heard of."""

    name = FLEET
    realtime = True
    stopped = False
    closed_universe = False  # the engines' symbols: the first list shows them all

    def __init__(self, merge: FleetMerge) -> None:
        self.counters = FeedCounters(FLEET)
        self._merge = merge

    def universe(self) -> tuple[str, ...]:
        return self._merge.symbols

    @property
    def market(self) -> str:
        """The engines' feed when they share one (positions are kept under it), else ``fleet``."""
        feeds = self._merge.feeds
        return feeds[0] if len(feeds) == 1 else self.name

    def now_ns(self) -> int:
        return time.time_ns()


class FleetRuntime(ViewOnlyRuntime):
    """A runtime fed by a fleet's bus (see the module docstring)."""

    def __init__(self, settings: BusSettings, *, feed: str = "", interval: str = "",
                 merge: FleetMerge | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.where = settings.shown.partition("://")[2]
        self.only_feed = feed
        self.only_interval = interval
        self.merge = merge or FleetMerge()
        self.feed = FleetFeed(self.merge)
        self.clock = clock
        self.backoff = Backoff(FIRST_BACKOFF_S, max(settings.max_backoff, FIRST_BACKOFF_S))
        self.last_seq = 0  # the last signal stream sequence delivered
        self.state = "connecting"
        self._client: Client | None = None
        self._closed = asyncio.Event()
        self._on_update: Callable[[Update], None] | None = None
        self._on_status: Callable[[FeedStatus], None] | None = None
        self._signals: list[Signal] = []  # taken in this turn of the loop, handed over at its end
        self._shown: tuple[str, str] = ("", "")

    def __repr__(self) -> str:  # never the credentials
        return f"FleetRuntime({self.settings.shown!r})"

    @property
    def watch(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.merge.symbols

    @property
    def outputs(self) -> tuple[str, ...]:
        """The indicator names the engines' quotes carry (the watchlist's columns), first seen first."""
        snapshot = self.merge.snapshot()
        names: dict[str, None] = {}
        for q in snapshot.quotes if snapshot is not None else ():
            names.update(dict.fromkeys(q.values))
        return tuple(names)

    @property
    def interval(self) -> str:
        """The engines' bar interval when they share one, else ''."""
        intervals = self.merge.intervals
        return intervals[0] if len(intervals) == 1 else ""

    # --- subjects ---------------------------------------------------------------------------------------
    def _part(self, value: str) -> str:
        return token(value) if value else "*"

    @property
    def snapshot_subject(self) -> str:
        return f"{SNAPSHOTS}.{self._part(self.only_feed)}.{self._part(self.only_interval)}.*"

    @property
    def status_subject(self) -> str:
        return f"{STATUS}.{self._part(self.only_feed)}.*"

    @property
    def signal_subject(self) -> str:
        return f"{SIGNALS}.{self._part(self.only_feed)}.{self._part(self.only_interval)}.*"

    # --- start --------------------------------------------------------------------------------------------
    async def handshake(self, gather: float = GATHER_S, settle: float = SETTLE_S) -> None:
        """Connect once (``BusError``, one line, when the bus cannot be reached) and listen for the
        engines' snapshots: up to ``gather`` seconds for the first, then ``settle`` more for the others,
        so the console opens with the fleet's symbols. An empty fleet opens an empty console."""
        client = await connect(self.settings)
        first = asyncio.Event()

        async def snapshot(msg: Msg) -> None:
            self._take_snapshot(msg)
            first.set()

        try:
            await client.subscribe(self.snapshot_subject, cb=snapshot)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first.wait(), gather)
                await asyncio.sleep(settle)  # a phase of the start, not a wait for a condition
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    # --- running ------------------------------------------------------------------------------------------
    async def run(self, on_update: Callable[[Update], None],
                  on_status: Callable[[FeedStatus], None]) -> None:
        """Receive until cancelled, reconnecting with backoff; callbacks run on the event loop."""
        self._on_update, self._on_status = on_update, on_status
        self.merge.take_new_symbols()  # the console opens with these (watch): only later ones are news
        ticker = asyncio.create_task(self._tick(), name="tickdeck-fleet-tick")
        first = True
        try:
            while True:
                if not first:
                    self.feed.counters.reconnects += 1
                first = False
                self.state = "connecting"
                on_status(FeedStatus(FLEET, "connecting", f"to {self.where}"))
                reason = await self._session()
                self.state = "reconnecting"
                delay = self.backoff.next()
                log.info("fleet: bus %s lost (%s); again in %.1f s", self.settings.shown, reason, delay)
                on_status(FeedStatus(FLEET, "reconnecting", reason, retry_in=delay))
                self._shown = ("reconnecting", reason)
                await asyncio.sleep(delay)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._close()

    async def _session(self) -> str:
        """One connection: subscribe, then wait until it closes; why it ended."""
        self._closed.clear()

        async def closed() -> None:
            self._closed.set()

        try:
            client = self._client = await connect(self.settings, on_closed=closed)
        except BusError as exc:
            return str(exc)
        signals: asyncio.Task[None] | None = None
        try:
            await client.subscribe(self.snapshot_subject, cb=self._on_snapshot_msg)
            await client.subscribe(self.status_subject, cb=self._on_status_msg)
            signals = asyncio.create_task(self._follow_signals(client), name="tickdeck-fleet-signals")
            self.state = "live"
            self.backoff.reset()
            self._shown = ("", "")
            self._report()
            self._emit()
            await self._closed.wait()
            return f"the connection to {self.where} closed"
        except Exception as exc:  # a subscription refused, the connection gone under it
            return f"{type(exc).__name__}: {exc}".rstrip(": ")
        finally:
            if signals is not None:
                signals.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await signals
            await self._close()

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    async def _follow_signals(self, client: Client) -> None:
        """The ordered consumer on the signal stream (module docstring), once the stream exists."""
        from nats.js.api import ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        js = client.jetstream(timeout=max(self.settings.connect_timeout, 1.0))
        while True:  # until subscribed; the session's end cancels it
            try:
                state = (await js.stream_info(SIGNALS_STREAM)).state
                if self.last_seq > state.last_seq:  # a stream made anew (its store wiped): from its end
                    self.last_seq = 0
                start = self.last_seq + 1 if self.last_seq else max(state.last_seq - HISTORY + 1, 1)
                config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=max(start, state.first_seq, 1))
                await js.subscribe(self.signal_subject, stream=SIGNALS_STREAM, cb=self._on_signal_msg,
                                   ordered_consumer=True, config=config, idle_heartbeat=2.0)
                return
            except NotFoundError:  # no engine has published yet
                pass
            except Exception as exc:  # a JetStream request that timed out, refused: the next look may work
                log.info("fleet: cannot follow the signal stream yet (%s: %s)", type(exc).__name__, exc)
            await asyncio.sleep(RETRY_STREAM_S)

    # --- messages -------------------------------------------------------------------------------------------
    async def _on_snapshot_msg(self, msg: Msg) -> None:
        if self._take_snapshot(msg):
            self._emit()

    def _take_snapshot(self, msg: Msg) -> bool:
        counters = self.feed.counters
        counters.messages += 1
        parts = msg.subject.split(".")
        if len(parts) != 5:
            counters.bad_message("a snapshot subject that is not tickdeck.snapshots.FEED.INTERVAL.ENGINE",
                                 msg.subject)
            return False
        frame = self._frame(msg, Snapshot, "snapshot", "not a snapshot frame")
        if frame is None:
            return False
        feed, interval, engine = (untoken(p) for p in parts[2:])
        self.merge.take_snapshot(feed, interval, engine, frame.market, frame.health, self.clock())
        return True

    def _frame(self, msg: Msg, kind: type[F], name: str, why: str, fits: bool = True) -> F | None:
        """The ``kind`` frame ``msg`` carries, or None with the message counted as bad (``fits``: its
        subject has the expected shape)."""
        try:
            frame = decode(msg.data)
            if not fits or not isinstance(frame, kind):
                raise FrameError(name, why)
        except FrameError as exc:
            self.feed.counters.bad_message(str(exc), msg.data[:200])
            return None
        return frame

    async def _on_status_msg(self, msg: Msg) -> None:
        counters = self.feed.counters
        counters.messages += 1
        parts = msg.subject.split(".")
        frame = self._frame(msg, FeedStatus, "status", "not a status frame on tickdeck.status.FEED.ENGINE",
                            fits=len(parts) == 4)
        if frame is None:
            return
        self.merge.take_status(untoken(parts[2]), untoken(parts[3]), frame, self.clock())
        self._emit()

    async def _on_signal_msg(self, msg: Msg) -> None:
        counters = self.feed.counters
        counters.messages += 1
        with contextlib.suppress(Exception):  # a status message of the consumer has no metadata
            self.last_seq = max(self.last_seq, int(msg.metadata.sequence.stream))
        frame = self._frame(msg, Signal, "signal", "not a signal frame")
        if frame is None:
            return
        self._signals.append(frame)
        if len(self._signals) == 1:  # handed over together, at the end of this turn of the loop
            asyncio.get_running_loop().call_soon(self._flush_signals)

    def _flush_signals(self) -> None:
        signals, self._signals = tuple(self._signals), []
        if signals and self._on_update is not None:
            self._on_update(Update(signals, None))

    # --- what goes to the console -----------------------------------------------------------------------
    def _emit(self) -> None:
        """The merged snapshot and the fleet's health, and the header's state if it changed."""
        if self._on_update is None:
            return
        now = self.clock()
        snapshot = self.merge.snapshot()
        if snapshot is not None:
            new = self.merge.take_new_symbols()
            self._on_update(Update((), snapshot, self.merge.health(now, FLEET), new_symbols=new))
        self._report()

    def _report(self) -> None:
        if self._on_status is None or self.state != "live":
            return
        state, reason = self.fleet_state(self.clock())
        if (state, reason) != self._shown:
            self._shown = (state, reason)
            self._on_status(FeedStatus(FLEET, state, reason))  # type: ignore[arg-type]

    def fleet_state(self, now: float) -> tuple[str, str]:
        """The header's state and reason while the bus is live (module docstring)."""
        views = self.merge.views(now)
        if not views:
            return "stale", f"no engine publishing on {self.where} yet"
        gone = [v.name for v in views if v.gone]
        troubled = [v for v in views if not v.gone and v.state != "live"]
        here = len(views) - len(gone)
        word = "engine" if len(views) == 1 else "engines"
        if gone:
            names = ", ".join(gone[:3])
            return "stale", f"{len(gone)} of {len(views)} {word} gone ({names}) via {self.where}"
        if troubled:
            t = troubled[0]
            return "stale", f"{t.name}: {t.state}" + (f" ({t.reason})" if t.reason else "")
        return "live", f"{here} {word} via {self.where}"

    async def _tick(self) -> None:
        """Every ``TICK_S``: forget the engines silent for long, and show the rows as they are now."""
        while True:
            await asyncio.sleep(TICK_S)
            self.merge.forget_old(self.clock())
            self._emit()  # the rows' "seen" grows, and a silent engine turns gone, bus or no bus


if TYPE_CHECKING:
    from engine.console_runtime import ConsoleRuntime

    def _implements_the_console_runtime(runtime: FleetRuntime) -> ConsoleRuntime:
        return runtime  # mypy checks it against the protocol here
