"""The ``websocket`` sink: a WebSocket server that broadcasts signals, snapshots and feed status.

It listens on ``host:port`` (127.0.0.1:8765 by default; port 0 picks a free one, see ``port`` after
``start``). Every frame is one JSON object (strict JSON: a non-finite number is ``null``) with a ``type``:

- ``hello``, first, on every connection: ``protocol``, ``feed`` (the publisher's feed), ``symbols``,
  ``outputs`` (indicator names of ``values``), ``interval`` and ``fps``;
- ``signal``: every signal that passes the sink's filter and the client's subscription, in detection
  order (the fields of ``Signal.to_dict()``);
- ``snapshot``, to clients that asked for them: ``at_ns``, ``ticks``, ``bars``, ``quotes`` (``symbol``,
  ``last``, ``change``, ``change_pct``, ``volume``, ``closes``, ``values``, ``bar_time``) and ``health``
  (the fields of ``PipelineHealth``). At most ``fps`` a second, and coalesced: a client that is busy
  receiving gets the newest snapshot once it is free, never a backlog of old ones;
- ``status``: the publisher's feed status (``feed``, ``state``, ``reason``, ``retry_in``, ``at_ns``,
  ``symbols``); the latest one is also sent after ``hello``;
- ``subscribed``: the subscription now in force, after each ``subscribe``;
- ``error``: the answer to a malformed client message (``error``: ``bad_message``, ``message``: why).

A client chooses what it gets with ``{"op": "subscribe", "symbols": [...], "rules": [...], "snapshots":
true}``: ``symbols`` (signals and snapshot quotes) and ``rules`` (signals) are lists, or ``null`` for
all; a key left out keeps its value. Until then a client gets every signal and no snapshots.

Each client has its own queue of at most ``max_queue`` frames, written by its own task: a client whose
queue overflows (it stopped reading, or reads slower than signals arrive) is disconnected with close
code 1013 and a reason, and counted (``dropped_clients``); the others never wait for it. A malformed
client message is counted (``bad_messages``) and answered with an ``error`` frame; after
``MAX_BAD_MESSAGES`` of them the client is disconnected with code 1008.

With a token (``token_env`` in the config names the environment variable that holds it), a client must
send it as ``Authorization: Bearer <token>`` or as ``?token=<token>`` in the URL; otherwise the handshake
is refused with HTTP 401 (counted as ``refused``). The token is never logged: the websockets library logs
through a logger held at WARNING (its debug lines would show the request path), and this module logs
client addresses only.

Snapshots come from the caller: the headless runner calls :meth:`BroadcastSink.publish` with each
frame's snapshot and health, and :meth:`BroadcastSink.publish_status` with each feed status, on the
event loop. This module imports neither numpy nor the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, Sink

if TYPE_CHECKING:
    from engine.feeds.base import FeedStatus
    from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

log = logging.getLogger("tickdeck.sinks.websocket")
_protocol_log = logging.getLogger("tickdeck.sinks.websocket.protocol")
_protocol_log.setLevel(logging.WARNING)  # websockets' DEBUG lines carry the request path (?token=...)

PROTOCOL = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_FPS = 10.0
DEFAULT_MAX_QUEUE = 1024
MAX_BAD_MESSAGES = 100  # malformed messages from one client before it is disconnected
MAX_CLIENT_MESSAGE = 64 * 1024  # bytes; a larger client message closes its connection (code 1009)
SEND_BUFFER = 256 * 1024
"""Bytes the kernel may hold for one client: a few hundred frames, then the client counts as slow."""
MAX_NAMES = 10_000  # symbols or rules in one subscription
CLOSE_TOO_SLOW = 1013  # "try again later"
CLOSE_POLICY = 1008
_POLL_S = 0.005
_KICK_CLOSE_S = 1.0  # how long a disconnected client gets to take its close frame before the socket drops


def dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def signal_frame(signal: Signal) -> dict[str, Any]:
    return {"type": "signal", **signal.to_dict()}


def quote_frame(q: Quote) -> dict[str, Any]:
    return {"symbol": q.symbol, "last": _finite(q.last), "change": _finite(q.change),
            "change_pct": _finite(q.change_pct), "volume": _finite(q.volume),
            "closes": [_finite(c) for c in q.closes.tolist()],
            "values": {k: _finite(v) for k, v in q.values.items()}, "bar_time": int(q.bar_time)}


def health_frame(health: PipelineHealth | None) -> dict[str, Any] | None:
    if health is None:
        return None
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(health).items()}


def snapshot_frame(snapshot: MarketSnapshot, health: PipelineHealth | None,
                   symbols: frozenset[str] | None = None) -> dict[str, Any]:
    """A snapshot frame, with only the quotes of ``symbols`` (all when None)."""
    quotes = [quote_frame(q) for q in snapshot.quotes if symbols is None or q.symbol in symbols]
    return {"type": "snapshot", "at_ns": int(snapshot.at_ns), "ticks": int(snapshot.ticks),
            "bars": int(snapshot.bars), "quotes": quotes, "health": health_frame(health)}


def status_frame(status: FeedStatus) -> dict[str, Any]:
    return {"type": "status", "feed": status.feed, "state": status.state, "reason": status.reason,
            "retry_in": _finite(status.retry_in), "at_ns": int(status.at_ns), "symbols": list(status.symbols)}


class BadMessage(ValueError):
    """A client message that cannot be used; the message says why (it never quotes the client)."""


class _Client:
    """One connection: its subscription, its bounded queue, its pending snapshot and its writer."""

    def __init__(self, ws: ServerConnection, number: int) -> None:
        self.ws = ws
        self.number = number
        self.peer = _peer(ws)
        self.queue: collections.deque[str] = collections.deque()
        self.frame: str | None = None  # the newest snapshot not yet sent (replaced, never queued)
        self.wake = asyncio.Event()
        self.in_flight = False
        self.symbols: frozenset[str] | None = None
        self.rules: frozenset[str] | None = None
        self.snapshots = False
        self.bad = 0
        self.gone = False  # disconnected by the server (too slow, too many bad messages) or closed
        self.writer: asyncio.Task[None] | None = None

    def wants(self, signal: Signal) -> bool:
        return ((self.symbols is None or signal.symbol in self.symbols)
                and (self.rules is None or signal.rule in self.rules))

    @property
    def idle(self) -> bool:
        return not self.queue and not self.in_flight


def _peer(ws: ServerConnection) -> str:
    try:
        address = ws.remote_address
    except Exception:  # a transport already gone
        return "?"
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _names(msg: Mapping[str, Any], key: str) -> frozenset[str] | None:
    value = msg[key]
    if value is None:
        return None
    what = f"{key!r} must be a list of names, or null for all"
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise BadMessage(f"{what} (at most {MAX_NAMES:,})")
    if not all(isinstance(v, str) and v for v in value):
        raise BadMessage(f"{what}; every name must be a non-empty string")
    if not all(_sendable(v) for v in value):  # echoed in ``subscribed``: it must encode as UTF-8
        raise BadMessage(f"{what}; a name must not hold a lone surrogate (\\ud800-\\udfff)")
    return frozenset(value)


def _sendable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class BroadcastSink(Sink):
    """Signals, snapshots and feed status to WebSocket clients (see the module docstring)."""

    type = "websocket"

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, fps: float = DEFAULT_FPS,
                 max_queue: int = DEFAULT_MAX_QUEUE, token: str | None = None, token_env: str = "",
                 name: str = "websocket", filter: SignalFilter = ANY) -> None:
        super().__init__(name, filter)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a number of frames a second > 0, got {fps!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.host = host
        self.port = port  # the bound port once started (port 0 picks one)
        self.fps = float(fps)
        self.max_queue = max_queue
        self.token_env = token_env  # for messages; the token itself is kept only in ``_token``
        self._token = token.encode() if token else None
        self._clients: set[_Client] = set()
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
        # the latest snapshot and status
        self._latest: tuple[MarketSnapshot, PipelineHealth | None] | None = None
        self._fresh = False  # ``_latest`` has not been sent yet
        self._timer: asyncio.TimerHandle | None = None
        self._last_frame = -math.inf
        self._status: FeedStatus | None = None
        # counters
        self.clients_total = 0
        self.sent = 0
        self.dropped_clients = 0
        self.bad_messages = 0
        self.refused = 0
        self.published = 0  # snapshots handed to ``publish``
        self.frames = 0  # snapshot rounds sent out (at most ``fps`` a second)
        self.frames_coalesced = 0  # snapshots replaced for a client before it could take them
        self.undelivered = 0  # signals that arrived while the sink was not running

    def __repr__(self) -> str:  # never the token
        token = "set" if self._token else "none"
        return f"BroadcastSink(name={self.name!r}, url={self.url!r}, token={token})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    # --- the source ----------------------------------------------------------------------------------
    def set_source(self, feed: str, symbols: Sequence[str], outputs: Sequence[str] = (),
                   interval: str = "") -> None:
        """What ``hello`` tells clients: the publisher's feed, symbols, indicator outputs, bar interval."""
        self._feed, self._symbols, self._outputs = feed, tuple(symbols), tuple(outputs)
        self._interval = interval

    def hello(self) -> dict[str, Any]:
        symbols, outputs = self._symbols, self._outputs
        if self._latest is not None:  # a source that was not described: what the snapshots show
            quotes = self._latest[0].quotes
            symbols = symbols or tuple(q.symbol for q in quotes)
            outputs = outputs or (tuple(quotes[0].values) if quotes else ())
        return {"type": "hello", "protocol": PROTOCOL, "feed": self._feed, "symbols": list(symbols),
                "outputs": list(outputs), "interval": self._interval, "fps": self.fps}

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
        auth = f"token from ${self.token_env}" if self._token and self.token_env else (
            "token" if self._token else "no token")
        log.info("sink %s: serving signals on %s (%s)", self.name, self.url, auth)
        if not self._token and not _loopback(self.host):
            log.warning("sink %s: %s is reachable beyond this machine and has no token: anyone who can "
                        "reach the port can read the signals (set token_env)", self.name, self.url)

    async def _open(self, sock: socket.socket) -> None:
        self._server = await serve(self._serve_client, sock=sock, process_request=self._authorize,
                                   compression=None, max_size=MAX_CLIENT_MESSAGE, max_queue=16,
                                   ping_interval=20, ping_timeout=20, close_timeout=2,
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
        self._latest, self._fresh = (snapshot, health), True
        if self._timer is None and self._loop is not None and not self._closing:
            delay = max(0.0, self._last_frame + 1.0 / self.fps - self._loop.time())
            self._timer = self._loop.call_later(delay, self._send_frame)

    def publish_status(self, status: FeedStatus) -> None:
        """A feed status, to every client (and to each new one, until the next)."""
        self._status = status
        if self._sock is None or self._closing:
            return
        text = dumps(status_frame(status))
        for client in list(self._clients):
            self._push(client, text)

    async def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if all(c.idle for c in self._clients if not c.gone):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(_POLL_S, left))

    async def close(self, timeout: float = 2.0) -> None:
        if self._closing or self._sock is None:
            self._closing = True
            return
        self._closing = True
        deadline = time.monotonic() + timeout
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._opening is not None and not self._opening.done():
            await asyncio.wait({self._opening}, timeout=max(deadline - time.monotonic(), 0.01))
        await self.drain(max((deadline - time.monotonic()) / 2, 0.0))
        server = self._server
        if server is None:
            if self._opening is not None:
                self._opening.cancel()
            self._sock.close()
        else:
            server.close(close_connections=True, code=1001, reason="the publisher is shutting down")
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.05)):
                    await server.wait_closed()
            except TimeoutError:  # clients that do not read cannot take a close frame: drop them
                for connection in list(server.connections):
                    connection.transport.abort()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "url": self.url, "clients": len(self._clients),
                "clients_total": self.clients_total, "sent": self.sent,
                "dropped_clients": self.dropped_clients, "bad_messages": self.bad_messages,
                "refused": self.refused, "published": self.published, "frames": self.frames,
                "frames_coalesced": self.frames_coalesced, "undelivered": self.undelivered,
                "token": bool(self._token)}

    # --- connections ---------------------------------------------------------------------------------
    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._token is None:
            return None
        given = _bearer(request.headers)
        if given is None:
            tokens = parse_qs(urlsplit(request.path).query).get("token")
            given = tokens[0] if tokens else None
        if given is None:
            why = "missing token"
        elif not hmac.compare_digest(given.encode(), self._token):
            why = "bad token"
        else:
            return None
        self.refused += 1
        log.warning("sink %s: refused a client from %s (%s)", self.name, _peer(connection), why)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, f"{why}\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tickdeck"'
        return response

    async def _serve_client(self, ws: ServerConnection) -> None:
        if self._closing:
            await ws.close(1001, "the publisher is shutting down")
            return
        self._numbers += 1
        client = _Client(ws, self._numbers)
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
                if client.gone:
                    break
                self._take(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            client.writer.cancel()
            if not client.gone:
                client.gone = True
                log.info("sink %s: client #%d (%s) disconnected (%d connected)", self.name, client.number,
                         client.peer, len(self._clients))
            await asyncio.wait({client.writer})

    async def _write(self, client: _Client) -> None:
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
                    client.in_flight = True
                    await ws.send(text)
                    client.in_flight = False
                    self.sent += 1
        except ConnectionClosed:
            pass
        finally:
            client.in_flight = False

    def _push(self, client: _Client, text: str) -> None:
        if client.gone:
            return
        if len(client.queue) >= self.max_queue:
            self._disconnect(client, CLOSE_TOO_SLOW, f"too slow: more than {self.max_queue} messages "
                                                     "queued for this client")
            return
        client.queue.append(text)
        client.wake.set()

    def _disconnect(self, client: _Client, code: int, reason: str) -> None:
        """Stop serving ``client`` at once (it gets nothing more), then close its connection."""
        client.gone = True
        self._clients.discard(client)
        client.queue.clear()
        client.frame = None
        if code == CLOSE_TOO_SLOW:
            self.dropped_clients += 1
        log.warning("sink %s: disconnected client #%d (%s): %s", self.name, client.number, client.peer,
                    reason)
        assert self._loop is not None
        task = self._loop.create_task(self._close_client(client, code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_client(self, client: _Client, code: int, reason: str) -> None:
        if client.writer is not None:
            client.writer.cancel()
        try:
            async with asyncio.timeout(_KICK_CLOSE_S):
                await client.ws.close(code, reason)
        except TimeoutError:  # it reads nothing, not even a close frame
            client.ws.transport.abort()

    def _take(self, client: _Client, raw: str | bytes) -> None:
        try:
            try:
                msg = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise BadMessage("not JSON") from None
            except RecursionError:
                raise BadMessage("nested too deeply") from None
            if not isinstance(msg, dict):
                raise BadMessage("a message must be a JSON object")
            op = msg.get("op")
            if op == "subscribe":
                self._subscribe(client, msg)
            elif op == "ping":
                try:  # the id goes back as it came: it must be strict JSON (no NaN, no lone surrogate)
                    pong = dumps({"type": "pong", "id": msg.get("id")})
                    pong.encode()
                except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
                    raise BadMessage("'id' of a ping must be JSON that can be sent back as it is (no NaN, "
                                     "Infinity or lone surrogate)") from None
                self._push(client, pong)
            else:
                shown = repr(op)[:40] if isinstance(op, str) else type(op).__name__
                raise BadMessage(f"unknown op {shown}; known: subscribe, ping")
        except BadMessage as exc:
            self.bad_messages += 1
            client.bad += 1
            if client.bad == 1:
                log.warning("sink %s: client #%d (%s) sent a malformed message: %s (counted from now on)",
                            self.name, client.number, client.peer, exc)
            if client.bad > MAX_BAD_MESSAGES:
                self._disconnect(client, CLOSE_POLICY, f"more than {MAX_BAD_MESSAGES} malformed messages")
                return
            self._push(client, dumps({"type": "error", "error": "bad_message", "message": str(exc)}))

    def _subscribe(self, client: _Client, msg: Mapping[str, Any]) -> None:
        unknown = sorted(str(k)[:40] for k in msg if k not in ("op", "symbols", "rules", "snapshots"))
        if unknown:
            raise BadMessage(f"unknown key {unknown[0]!r} in subscribe; allowed: symbols, rules, snapshots")
        symbols = _names(msg, "symbols") if "symbols" in msg else client.symbols
        rules = _names(msg, "rules") if "rules" in msg else client.rules
        snapshots = msg.get("snapshots", client.snapshots)
        if not isinstance(snapshots, bool):
            raise BadMessage("'snapshots' must be true or false")
        client.symbols, client.rules, client.snapshots = symbols, rules, snapshots
        self._push(client, dumps({"type": "subscribed", "symbols": _listed(symbols), "rules": _listed(rules),
                                  "snapshots": snapshots}))
        if snapshots and self._latest is not None:  # a new subscriber need not wait for the next frame
            client.frame = dumps(snapshot_frame(*self._latest, client.symbols))
            client.wake.set()
        elif not snapshots:
            client.frame = None

    # --- snapshots -----------------------------------------------------------------------------------
    def _send_frame(self) -> None:
        self._timer = None
        if self._latest is None or not self._fresh or self._closing:
            return
        self._fresh = False
        assert self._loop is not None
        self._last_frame = self._loop.time()
        self.frames += 1
        encoded: dict[frozenset[str] | None, str] = {}
        for client in self._clients:
            if not client.snapshots or client.gone:
                continue
            text = encoded.get(client.symbols)
            if text is None:
                text = encoded[client.symbols] = dumps(snapshot_frame(*self._latest, client.symbols))
            if client.frame is not None:
                self.frames_coalesced += 1
            client.frame = text
            client.wake.set()


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _listed(names: Iterable[str] | None) -> list[str] | None:
    return None if names is None else sorted(names)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


