"""The ``websocket`` sink: a WebSocket server that broadcasts signals, snapshots and feed status.

It listens on ``host:port`` (127.0.0.1:8765 by default; port 0 picks a free one, see ``port`` after
``start``). ``engine.sinks.frames`` encodes the frames it sends (PROTOCOL.md describes them for clients):
``hello`` first, then ``signal``, ``snapshot`` (to clients that asked; at most ``fps`` a second,
coalesced: a client busy receiving gets the newest once it is free, never a backlog), ``status``,
``symbols`` (:meth:`BroadcastSink.set_symbols`: a sharded engine's symbols changed), ``subscribed``,
``pong`` and ``error``.

A client chooses what it gets with ``{"op": "subscribe", "symbols": [...], "rules": [...], "snapshots":
true}``: ``symbols`` (signals and snapshot quotes) and ``rules`` (signals) are lists, or ``null`` for
all; a key left out keeps its value. Until then a client gets every signal and no snapshots. Each
snapshot is encoded once per distinct ``symbols`` list and shared by every client with that list
(``engine.sinks.frames``); at most ``max_subscriptions`` distinct lists may take snapshots at once, and
a subscription that would add one more is refused (``too_many_subscriptions``; the client keeps the
subscription it had).

Each client has its own queue of at most ``max_queue`` frames, written by its own task: a client whose
queue overflows (it stopped reading, or reads slower than signals arrive) is cut off, counted
(``dropped_clients``), and the others never wait for it. Cut off, it gets nothing more except what was
already on its way (the frame in flight) followed by a close frame with code 1013 ("try again later")
and the reason; it has ``CUT_GRACE_S`` seconds to read them. A client that reads nothing within that
time cannot get the close frame (the kernel's buffers ahead of it are full): its connection is reset,
which a client library reports as code 1006 (no close frame), possibly after a truncated last frame.
A malformed client message is counted (``bad_messages``) and answered with an ``error`` frame; after
``MAX_BAD_MESSAGES`` of them the client is disconnected with code 1008.

The handshake policy (a connection cap, the token, throttling and logging of refusals) is in
``engine.sinks.admission``: past ``max_clients`` connections, HTTP 503; without the token, HTTP 401;
after repeated failures from one address, HTTP 429. The token is never logged: the websockets library
logs through a logger held at WARNING (its debug lines would show the request path), and this module
logs client addresses only.

Stopping (``close(timeout)``): no new connections; what is queued goes out while clients take it (a
client whose frame in flight has not moved for ``STUCK_S`` is not waited for); every client gets a close
frame with code 1001 and ``CLOSE_WAIT_S`` to answer it; connections still open are then reset. All of it
within ``timeout``.

Snapshots come from the caller: the headless runner calls :meth:`BroadcastSink.publish` with each
frame's snapshot and health, and :meth:`BroadcastSink.publish_status` with each feed status, on the
event loop. Nothing here loads numba or the compiled kernels (the frames need numpy and the snapshot types).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from engine.addresses import is_loopback
from engine.signals.events import Signal
from engine.sinks import clients as messages
from engine.sinks.admission import Admission
from engine.sinks.base import ANY, SignalFilter, Sink
from engine.sinks.clients import BadMessage, Client, SnapshotLists, peer_host
from engine.sinks.defaults import (
    DEFAULT_WEBSOCKET_CLIENTS,
    DEFAULT_WEBSOCKET_FPS,
    DEFAULT_WEBSOCKET_HOST,
    DEFAULT_WEBSOCKET_PORT,
    DEFAULT_WEBSOCKET_QUEUE,
    DEFAULT_WEBSOCKET_SUBSCRIPTIONS,
)
from engine.sinks.frames import (
    PROTOCOL,
    Hello,
    SnapshotFrames,
    SymbolsChanged,
    dumps,
    error_frame,
    health_frame,
    hello_frame,
    signal_frame,
    snapshot_frame,
    status_frame,
    symbols_frame,
)

if TYPE_CHECKING:
    from engine.feeds.base import FeedStatus
    from engine.snapshot import MarketSnapshot, PipelineHealth

__all__ = ["PROTOCOL", "BroadcastSink", "dumps", "health_frame", "signal_frame", "snapshot_frame",
           "status_frame"]  # the frame encoders live in engine.sinks.frames; these names stay importable here

log = logging.getLogger("tickdeck.sinks.websocket")
_protocol_log = logging.getLogger("tickdeck.sinks.websocket.protocol")
_protocol_log.setLevel(logging.WARNING)  # websockets' DEBUG lines carry the request path (?token=...)

MAX_BAD_MESSAGES = 100  # malformed messages from one client before it is disconnected
MAX_CLIENT_MESSAGE = 64 * 1024  # bytes; a larger client message closes its connection (code 1009)
SEND_BUFFER = 256 * 1024
"""Bytes the kernel may hold for one client: a few hundred frames, then the client counts as slow."""
CLOSE_TOO_SLOW = 1013  # "Try Again Later", in the IANA close code registry (RFC 6455, section 11.7)
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
CUT_GRACE_S = 10.0
"""How long a client cut off (too slow, or misbehaving) has to read what was on its way and the close
frame; then its connection is reset. Also the websockets ``close_timeout``."""
STUCK_S = 1.0  # a frame in flight that long: the client is not reading, a stop does not wait for it
CLOSE_WAIT_S = 1.0  # at a stop, how long clients get to answer the close frame
_ABORT_RESERVE_S = 0.1  # of a stop's time, kept for resetting the connections that did not close
_POLL_S = 0.005


class BroadcastSink(Sink):
    """Signals, snapshots and feed status to WebSocket clients (see the module docstring)."""

    type = "websocket"

    def __init__(self, host: str = DEFAULT_WEBSOCKET_HOST, port: int = DEFAULT_WEBSOCKET_PORT, *,
                 fps: float = DEFAULT_WEBSOCKET_FPS, max_queue: int = DEFAULT_WEBSOCKET_QUEUE,
                 max_clients: int = DEFAULT_WEBSOCKET_CLIENTS,
                 max_subscriptions: int = DEFAULT_WEBSOCKET_SUBSCRIPTIONS, token: str | None = None,
                 token_env: str = "", name: str = "websocket", filter: SignalFilter = ANY) -> None:
        super().__init__(name, filter)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a number of frames a second > 0, got {fps!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.host = host
        self.port = port  # the bound port once started (port 0 picks one)
        self.fps = float(fps)
        self.max_queue = max_queue
        self.token_env = token_env  # for messages; the token itself is kept only by the admission
        self.admission = Admission(name, token or None, max_clients)
        self._has_token = bool(token)
        self._clients: set[Client] = set()
        self._cut: set[Client] = set()  # cut off, given CUT_GRACE_S to take their close frame
        self._admitted: set[ServerConnection] = set()  # handshake accepted, not yet a client
        self._lists = SnapshotLists(max_subscriptions)  # the snapshot lists in use
        self._numbers = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sock: socket.socket | None = None
        self._server: Server | None = None
        self._opening: asyncio.Task[None] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # the source, for ``hello``
        self._feed = ""
        self._symbols: tuple[str, ...] = ()
        self._outputs: tuple[str, ...] = ()
        self._interval = ""
        self._symbols_set = False  # set_symbols was called: an empty list means none, not "undescribed"
        # the latest snapshot (its frames, built on demand) and status
        self._frames = SnapshotFrames()
        self._fresh = False  # the latest snapshot has not been sent yet
        self._timer: asyncio.TimerHandle | None = None
        self._last_frame = -math.inf
        self._status: FeedStatus | None = None
        # counters
        self.clients_total = 0
        self.sent = 0
        self.dropped_clients = 0
        self.reset_clients = 0  # cut off clients that did not take their close frame within CUT_GRACE_S
        self.bad_messages = 0
        self.published = 0  # snapshots handed to ``publish``
        self.frames = 0  # snapshot rounds sent out (at most ``fps`` a second)
        self.frames_coalesced = 0  # snapshots replaced for a client before it could take them
        self.undelivered = 0  # signals that arrived while the sink was not running

    def __repr__(self) -> str:  # never the token
        token = "set" if self._has_token else "none"
        return f"BroadcastSink(name={self.name!r}, url={self.url!r}, token={token})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def max_clients(self) -> int:
        return self.admission.max_clients

    # --- the source ----------------------------------------------------------------------------------
    def set_source(self, feed: str, symbols: Sequence[str], outputs: Sequence[str] = (),
                   interval: str = "") -> None:
        """What ``hello`` tells clients: the publisher's feed, symbols, indicator outputs, bar interval."""
        self._feed, self._symbols, self._outputs = feed, tuple(symbols), tuple(outputs)
        self._interval = interval

    def set_symbols(self, symbols: Sequence[str]) -> None:
        """The publisher carries ``symbols`` now (a sharded engine's share changed): ``hello`` lists them
        from now on, and the clients connected are sent a ``symbols`` frame with the difference.

        Only clients whose subscription covers every symbol (``symbols: null``, as before any subscribe
        and as ``tickdeck attach`` subscribes) get it. A client that named its symbols chose what it
        follows: it gets their signals and quotes whenever the publisher carries them, and a change of the
        others says nothing it asked about. Sent to all clients of one kind, the frame is encoded once."""
        now = tuple(dict.fromkeys(symbols))
        before, self._symbols, self._symbols_set = self._symbols, now, True
        had, has = set(before), set(now)
        added, removed = tuple(s for s in now if s not in had), tuple(s for s in before if s not in has)
        if not (added or removed) or self._sock is None or self._closing:
            return
        text = dumps(symbols_frame(SymbolsChanged(now, added, removed)))
        for client in list(self._clients):
            if client.symbols is None:
                self._push(client, text)

    def hello(self) -> dict[str, Any]:
        symbols, outputs = self._symbols, self._outputs
        latest = self._frames.snapshot
        if latest is not None:  # a source that was not described: what the snapshots show
            if not self._symbols_set:
                symbols = symbols or tuple(q.symbol for q in latest.quotes)
            outputs = outputs or (tuple(latest.quotes[0].values) if latest.quotes else ())
        return hello_frame(Hello(self._feed, tuple(symbols), tuple(outputs), self._interval, self.fps))

    # --- the sink ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the port now (an ``OSError`` when it is taken) and serve from a task of the running loop."""
        if self._sock is not None:
            raise RuntimeError(f"sink {self.name} is already started")
        loop = asyncio.get_running_loop()
        try:
            sock = socket.create_server((self.host, self.port))
        except OSError as exc:  # an OSError still, which the headless service reports as a start-up error
            raise OSError(exc.errno, f"websocket sink {self.name}: cannot listen on {self.url}: "
                                     f"{exc.strerror or exc}") from None
        # Accepted connections inherit this: without it Linux lets a client that stopped reading absorb
        # up to 4 MB of frames in the kernel before the per-client queue (and the cut-off) even sees it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.setblocking(False)
        self._sock, self._loop = sock, loop
        self.port = sock.getsockname()[1]
        self._opening = loop.create_task(self._open(sock), name=f"tickdeck-sink-{self.name}")
        auth = f"token from ${self.token_env}" if self._has_token and self.token_env else (
            "token" if self._has_token else "no token")
        log.info("sink %s: serving signals on %s (%s, at most %d clients)", self.name, self.url, auth,
                 self.max_clients)
        if not self._has_token and not is_loopback(self.host):
            log.warning("sink %s: %s is reachable beyond this machine and has no token: anyone who can "
                        "reach the port can read the signals (set token_env)", self.name, self.url)

    async def _open(self, sock: socket.socket) -> None:
        self._server = await serve(self._serve_client, sock=sock, process_request=self._authorize,
                                   compression=None, max_size=MAX_CLIENT_MESSAGE, max_queue=16,
                                   ping_interval=20, ping_timeout=20, close_timeout=CUT_GRACE_S,
                                   logger=_protocol_log)

    async def started(self) -> None:
        """Wait until the server accepts connections (the port is bound by ``start`` already)."""
        if self._opening is not None:
            await asyncio.shield(self._opening)

    def enqueue(self, signal: Signal) -> None:
        if self._sock is None or self._closing:
            self.undelivered += 1
            return
        text: str | None = None
        for client in list(self._clients):
            if client.wants(signal):
                text = text or dumps(signal_frame(signal))
                self._push(client, text)

    def publish(self, snapshot: MarketSnapshot, health: PipelineHealth | None = None) -> None:
        """The newest frame (call on the event loop, as often as frames come): each client that asked
        for snapshots gets it within ``1/fps`` s, or a newer one; never more than ``fps`` a second."""
        self.published += 1
        self._frames.reset(snapshot, health)  # encoded only when a frame goes out, and once per list
        self._fresh = True
        self._arm()

    def publish_status(self, status: FeedStatus) -> None:
        """A feed status, to every client (and to each new one, until the next)."""
        self._status = status
        if self._sock is None or self._closing:
            return
        text = dumps(status_frame(status))
        for client in list(self._clients):
            self._push(client, text)

    async def drain(self, timeout: float) -> bool:
        """Wait until every client has taken what is queued for it; a client whose frame in flight has
        not moved for ``STUCK_S`` is not waited for (it is not reading). True when nothing is left."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if all(c.idle for c in self._clients if not c.gone and not c.stuck(now, STUCK_S)):
                return all(c.idle for c in self._clients if not c.gone)
            if now >= deadline:
                return False
            await asyncio.sleep(min(_POLL_S, deadline - now))

    async def close(self, timeout: float = 2.0) -> None:
        """Stop within ``timeout`` seconds, whatever the clients do (see the module docstring)."""
        if self._closing or self._sock is None:
            self._closing = True
            return
        self._closing = True
        deadline = time.monotonic() + max(timeout, 0.0)
        soft = deadline - min(_ABORT_RESERVE_S, max(timeout, 0.0) / 4)  # then reset what is still open
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._opening is not None and not self._opening.done():
            await asyncio.wait({self._opening}, timeout=max(soft - time.monotonic(), 0.0))
        await self.drain(max((soft - time.monotonic()) / 2, 0.0))
        server = self._server
        if server is None:
            if self._opening is not None:
                self._opening.cancel()
            self._sock.close()
        else:
            server.close(close_connections=True, code=CLOSE_GOING_AWAY,
                         reason="the publisher is shutting down")
            if not await _closed(server, min(soft, time.monotonic() + CLOSE_WAIT_S)):
                # clients that do not read cannot take a close frame: reset their connections
                for ws in [c.ws for c in (*self._clients, *self._cut)] + list(self._admitted):
                    ws.transport.abort()
                await _closed(server, deadline)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(deadline - time.monotonic(), 0.001))

    def stats(self) -> dict[str, Any]:
        a = self.admission
        return {**super().stats(), "url": self.url, "clients": len(self._clients),
                "clients_total": self.clients_total, "max_clients": self.max_clients, "sent": self.sent,
                "dropped_clients": self.dropped_clients, "reset_clients": self.reset_clients,
                "bad_messages": self.bad_messages, "refused": a.refused, "refused_full": a.full,
                "throttled": a.throttled, "subscriptions": len(self._lists),
                "refused_subscriptions": self._lists.refused, "published": self.published,
                "frames": self.frames, "frames_coalesced": self.frames_coalesced,
                "frames_built": self._frames.frames_built, "quotes_encoded": self._frames.quotes_encoded,
                "undelivered": self.undelivered, "token": self._has_token}

    # --- connections ---------------------------------------------------------------------------------
    def _connected(self) -> int:
        """Connections that count against ``max_clients``: clients, clients being cut off, and handshakes
        accepted whose client has not started yet."""
        self._admitted = {ws for ws in self._admitted if ws.state is not State.CLOSED}
        return len(self._clients) + len(self._cut) + len(self._admitted)

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = self.admission.check(peer_host(connection), request.headers, request.path,
                                       self._connected())
        if refusal is None:
            self._admitted.add(connection)
            return None
        response = connection.respond(refusal.status, refusal.body)
        for header, value in refusal.headers:
            response.headers[header] = value
        return response

    async def _serve_client(self, ws: ServerConnection) -> None:
        self._admitted.discard(ws)
        if self._closing:
            await ws.close(CLOSE_GOING_AWAY, "the publisher is shutting down")
            return
        self._numbers += 1
        client = Client(ws, self._numbers)
        self.clients_total += 1
        self._clients.add(client)
        log.info("sink %s: client #%d connected from %s (%d connected)", self.name, client.number,
                 client.peer, len(self._clients))
        self._push(client, dumps(self.hello()))
        if self._status is not None:
            self._push(client, dumps(status_frame(self._status)))
        client.writer = asyncio.create_task(self._write(client), name=f"tickdeck-ws-client-{client.number}")
        try:
            async for raw in ws:
                if not client.gone:  # a client cut off is not listened to any more
                    self._take(client, raw)
        except ConnectionClosed:
            pass
        finally:
            client.writer.cancel()
            if not client.gone:
                client.gone = True
                self._forget(client)
                log.info("sink %s: client #%d (%s) disconnected (%d connected)", self.name, client.number,
                         client.peer, len(self._clients))
            await asyncio.wait({client.writer})

    def _forget(self, client: Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            if client.snapshots:
                self._lists.leave(client.symbols)

    async def _write(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                while True:  # queued frames first, in order; then the newest snapshot
                    if client.queue:
                        text = client.queue.popleft()
                    elif client.frame is not None:
                        text, client.frame = client.frame, None
                    else:
                        break
                    client.in_flight, client.sending_since = True, time.monotonic()
                    await ws.send(text)
                    client.in_flight = False
                    self.sent += 1
        except ConnectionClosed:
            pass
        finally:
            client.in_flight = False

    def _push(self, client: Client, text: str) -> None:
        if client.gone:
            return
        if len(client.queue) >= self.max_queue:
            self._cut_off(client, CLOSE_TOO_SLOW, f"too slow: more than {self.max_queue} messages "
                                                  "queued for this client")
            return
        client.queue.append(text)
        client.wake.set()

    def _cut_off(self, client: Client, code: int, reason: str) -> None:
        """Stop serving ``client`` at once (it gets nothing more), then close its connection."""
        client.gone = True
        self._forget(client)
        client.queue.clear()
        client.frame = None
        if code == CLOSE_TOO_SLOW:
            self.dropped_clients += 1
        log.warning("sink %s: disconnected client #%d (%s): %s", self.name, client.number, client.peer,
                    reason)
        assert self._loop is not None
        self._cut.add(client)
        task = self._loop.create_task(self._close_cut(client, code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_cut(self, client: Client, code: int, reason: str) -> None:
        """What was on its way, then the close frame: the client has CUT_GRACE_S to read them (websockets
        resets the connection when its ``close_timeout``, the same time, runs out)."""
        if client.writer is not None:
            client.writer.cancel()  # a frame it was writing stays whole: it is in the transport already
        try:  # the connection's own timeout starts only once the close frame is in the kernel's buffer
            async with asyncio.timeout(CUT_GRACE_S):
                await client.ws.close(code, reason)
        except TimeoutError:
            client.ws.transport.abort()
        finally:
            self._cut.discard(client)
            if client.ws.protocol.close_rcvd is None:  # it never answered: it did not get the close frame
                self.reset_clients += 1

    def _take(self, client: Client, raw: str | bytes) -> None:
        try:
            msg = messages.parse(raw)
            if msg["op"] == "subscribe":
                self._subscribe(client, msg)
            else:
                self._push(client, messages.pong(msg))
        except BadMessage as exc:
            self.bad_messages += 1
            client.bad += 1
            if client.bad == 1:
                log.warning("sink %s: client #%d (%s) sent a malformed message: %s (counted from now on)",
                            self.name, client.number, client.peer, exc)
            if client.bad > MAX_BAD_MESSAGES:
                self._cut_off(client, CLOSE_POLICY, f"more than {MAX_BAD_MESSAGES} malformed messages")
                return
            self._push(client, dumps(error_frame("bad_message", str(exc))))

    def _subscribe(self, client: Client, msg: dict[str, Any]) -> None:
        wanted = messages.subscription(msg, client.subscription)
        if not self._lists.move(client.subscription, wanted):
            client.refusals += 1
            if client.refusals == 1:  # once per client: it may retry in a loop
                log.info("sink %s: client #%d (%s): refused a subscription: %d symbol lists take snapshots "
                         "already (max_subscriptions)", self.name, client.number, client.peer,
                         self._lists.limit)
            self._push(client, dumps(error_frame(
                "too_many_subscriptions",
                f"snapshots go out for {self._lists.limit} different symbol lists at most, and that many are "
                "in use; subscribe with one of them (symbols null: all), or try again later; your "
                "subscription is unchanged")))
            return
        client.symbols, client.rules, client.snapshots = wanted.symbols, wanted.rules, wanted.snapshots
        self._push(client, messages.subscribed(wanted))
        if not wanted.snapshots:
            client.frame, client.wants_frame = None, False
        elif self._frames.snapshot is not None:  # a new subscriber need not wait for the next snapshot
            text = self._frames.cached(wanted.symbols)
            if text is not None:
                client.frame = text
                client.wake.set()
            else:  # built by the frame timer, so subscribing over and over costs no extra encoding
                client.wants_frame = True
                self._arm()

    # --- snapshots -----------------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is None and self._loop is not None and not self._closing:
            delay = max(0.0, self._last_frame + 1.0 / self.fps - self._loop.time())
            self._timer = self._loop.call_later(delay, self._send_frame)

    def _send_frame(self) -> None:
        self._timer = None
        if self._frames.snapshot is None or self._closing:
            return
        fresh, self._fresh = self._fresh, False
        targets = [c for c in self._clients if c.snapshots and not c.gone and (fresh or c.wants_frame)]
        if not fresh and not targets:
            return
        assert self._loop is not None
        self._last_frame = self._loop.time()
        if fresh:
            self.frames += 1
        self._frames.keep_only(set(self._lists))
        for client in targets:
            text = self._frames.frame(client.symbols)
            if client.frame is not None:
                self.frames_coalesced += 1
            client.frame, client.wants_frame = text, False
            client.wake.set()


async def _closed(server: Server, deadline: float) -> bool:
    """Wait until ``server`` has closed every connection, or ``deadline`` (monotonic); True if it has."""
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
            await server.wait_closed()
    except TimeoutError:
        return False
    return True
