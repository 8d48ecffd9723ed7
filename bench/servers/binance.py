"""A local stand-in for Binance's public market-data WebSocket, speaking the protocol as "WebSocket
Streams for Binance" documents it, with knobs for every way the real one misbehaves.

Served: combined streams at ``/stream?streams=a@trade/b@kline_1m`` (and ``/stream`` with none), events
wrapped as ``{"stream": ..., "data": ...}``, live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``
(and the ``combined`` property) answered by id, errors in Binance's ``{"error": {"code", "msg"}, "id"}``
form, pings every 20 s with a minute to answer. Events reach only connections subscribed to their
stream. Trades and klines are made on demand by the test (``trade``, ``kline``), so every field of
every event is known to it.

It enforces the documented limits the way Binance does, so a client that breaks one fails here as it
would there: more than ``max_messages_per_s`` (5) incoming messages a second on a connection, pings and
pongs counted as messages, and the connection is closed (code 1008; Binance documents the disconnect, not
the code); a connection serves at most ``max_streams`` (1,024) streams: a URL naming more is refused with
HTTP 400 and a ``SUBSCRIBE`` that would go past it gets an error answer. ``announce_shutdown`` sends the
``serverShutdown`` event and leaves the connection open until the test closes it (Binance: "a
serverShutdown event will be sent when the server is about to shutdown, resulting in disconnection").

Misbehaviour on demand: ``disconnect`` (what Binance does after 24 h, cleanly or by dropping the TCP
connection), ``cut_short`` (the connection ends in the middle of a frame, or of a fragmented message),
``stall`` (the open connections send nothing at all, answers included; trades made
meanwhile are lost to them), ``fail_next`` (an error answer to the next request), ``send_garbage``
(malformed JSON, truncated frames, unknown event types, negative or NaN prices, unknown symbols),
``replay`` (resend the last trades of a stream when a connection subscribes to it, as a reconnect
may), ``skip`` (a gap in trade ids) and ``refuse_status`` (answer the handshake with an HTTP status).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

COUNTED = (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG)  # Binance's "messages"

STREAM = re.compile(r"^[a-z0-9]+@(trade|kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M))$")
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
GARBAGE = ("malformed json", "truncated frame", "unknown event type", "negative price", "nan price",
           "unknown symbol")


@dataclass
class Connection:
    ws: ServerConnection
    path: str
    subs: list[str] = field(default_factory=list)
    stalled: bool = False  # sends nothing at all, answers included


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class BinanceServer:
    """``async with BinanceServer() as server:`` then point a feed at ``server.url``."""

    def __init__(self, ping_interval: float | None = 20.0, ping_timeout: float | None = 60.0,
                 max_messages_per_s: int = 5, max_streams: int = 1024) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_messages_per_s = max_messages_per_s
        self.max_streams = max_streams
        self.rate_closes = 0  # connections closed for sending more than max_messages_per_s
        self.most_in_a_second = 0  # the most messages any connection sent within a second
        self.pongs_received = 0
        self._closing: set[asyncio.Future[None]] = set()
        self.url = ""
        self.connections: list[Connection] = []
        self.paths: list[str] = []  # of every accepted connection, in order
        self.requests: list[Any] = []  # every control message received (decoded when it was JSON)
        self.frames_sent = 0  # text frames sent: events, answers and garbage
        self.refused = 0  # handshakes answered with ``refuse_status``
        self.close_codes: list[int | None] = []  # what each ended connection's client closed it with
        self.refuse_status: int | None = None
        self.replay = 0
        self.fail_next: tuple[int, str] | None = None  # (code, msg) for the next (UN)SUBSCRIBE
        self.clock_ms = 1_700_000_000_000  # trade time of the next trade (each trade adds 1 ms)
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)  # stream -> frames sent
        self._next_trade_id: dict[str, int] = defaultdict(lambda: 1)
        self._server: Server | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> BinanceServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake,
                                   ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                   create_connection=self._counting_connection())
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # --- waiting on the server's state (bounded in time) --------------------------------------------
    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_subscribed(self, *streams: str, timeout: float = 5.0) -> None:
        """Until a connection is open that receives all of ``streams``."""
        await self.wait(lambda: any(all(s in c.subs for s in streams) for c in self.connections), timeout)

    def _counting_connection(self) -> type[ServerConnection]:
        """Connections that count what the client sends, control frames included, as Binance does."""
        server = self

        class Counting(ServerConnection):
            arrivals: list[float]

            def process_event(self, event: Event) -> None:
                if isinstance(event, Frame) and event.opcode in COUNTED:
                    server._count(self, event.opcode)
                super().process_event(event)

        return Counting

    def _count(self, ws: ServerConnection, opcode: Opcode) -> None:
        now = time.monotonic()
        arrivals = [t for t in getattr(ws, "arrivals", []) if t > now - 1.0] + [now]
        ws.arrivals = arrivals  # type: ignore[attr-defined]
        self.pongs_received += opcode is Opcode.PONG
        self.most_in_a_second = max(self.most_in_a_second, len(arrivals))
        self._bump()
        if len(arrivals) > self.max_messages_per_s and ws.state.name == "OPEN":
            self.rate_closes += 1
            task = asyncio.ensure_future(ws.close(1008, "Too many requests"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # --- protocol ------------------------------------------------------------------------------------
    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is not None:
            self.refused += 1
            self._bump()
            status = HTTPStatus(self.refuse_status)
            return connection.respond(status, f"{status.phrase}\n")
        url = urlsplit(request.path)
        if url.path != "/stream":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        streams = parse_qs(url.query).get("streams", [""])[0]
        if streams and not all(STREAM.match(s) for s in streams.split("/")):
            return connection.respond(HTTPStatus.BAD_REQUEST, "Invalid request\n")
        if len(streams.split("/")) > self.max_streams:
            return connection.respond(HTTPStatus.BAD_REQUEST, "Too many streams\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path
        conn = Connection(ws, path)
        self.connections.append(conn)
        self.paths.append(path)
        streams = parse_qs(urlsplit(path).query).get("streams", [""])[0]
        try:
            await self._add(conn, [s for s in streams.split("/") if s])
            async for message in ws:
                await self._control(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self.connections.remove(conn)
            received = ws.protocol.close_rcvd
            self.close_codes.append(None if received is None else received.code)  # None: no close frame
            self._bump()

    async def _add(self, conn: Connection, streams: list[str]) -> None:
        for stream in streams:
            if stream not in conn.subs:
                conn.subs.append(stream)
        self._bump()
        if self.replay:
            for stream in streams:
                for frame in self.history[stream][-self.replay:]:
                    await self._send(conn, _dump(frame))

    async def _control(self, conn: Connection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            self.requests.append(message)
            self._bump()
            await self._error(conn, 3, "Invalid JSON: expected value at line 1 column 1", None)
            return
        self.requests.append(request)
        self._bump()
        if not isinstance(request, dict) or "method" not in request:
            await self._error(conn, 2, "Invalid request: missing field `method` at line 1 column 1", None)
            return
        rid = request.get("id")
        if not (rid is None or (isinstance(rid, int) and rid >= 0) or isinstance(rid, str)):
            await self._error(conn, 2, "Invalid request: request ID must be an unsigned integer", None)
            return
        method, params = request["method"], request.get("params", [])
        if method not in METHODS:
            await self._error(conn, 2, f"Invalid request: unknown variant `{method}`, expected one of "
                              + ", ".join(f"`{m}`" for m in METHODS), rid)
            return
        if method == "LIST_SUBSCRIPTIONS":
            await self._send(conn, _dump({"result": list(conn.subs), "id": rid}))
            return
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or params[0] != "combined":
                await self._error(conn, 0, "Unknown property", rid)
                return
            result = True if method == "GET_PROPERTY" else None
            await self._send(conn, _dump({"result": result, "id": rid}))
            return
        if not isinstance(params, list) or not all(isinstance(p, str) and STREAM.match(p) for p in params):
            await self._error(conn, 2, "Invalid request: invalid stream", rid)
            return
        if self.fail_next is not None:
            (code, msg), self.fail_next = self.fail_next, None
            await self._error(conn, code, msg, rid)
            return
        if method == "SUBSCRIBE" and len(set(conn.subs) | set(params)) > self.max_streams:
            await self._error(conn, 2, f"Invalid request: a connection serves at most {self.max_streams} "
                              "streams", rid)
            return
        if method == "UNSUBSCRIBE":
            conn.subs = [s for s in conn.subs if s not in params]
            self._bump()
            await self._send(conn, _dump({"result": None, "id": rid}))
        else:
            await self._send(conn, _dump({"result": None, "id": rid}))
            await self._add(conn, params)

    async def _error(self, conn: Connection, code: int, msg: str, rid: Any) -> None:
        await self._send(conn, _dump({"error": {"code": code, "msg": msg}, "id": rid}))

    async def _send(self, conn: Connection, text: str) -> None:
        if conn.stalled:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(text)
            self.frames_sent += 1

    async def _publish(self, stream: str, frame: dict[str, Any]) -> None:
        self.history[stream].append(frame)
        text = _dump(frame)
        for conn in list(self.connections):
            if stream in conn.subs:
                await self._send(conn, text)

    # --- market data -----------------------------------------------------------------------------------
    def _trade_data(self, symbol: str, price: str, qty: str, buyer_maker: bool) -> dict[str, Any]:
        sym = symbol.upper()
        trade_id = self._next_trade_id[sym]
        self._next_trade_id[sym] = trade_id + 1
        self.clock_ms += 1
        return {"e": "trade", "E": self.clock_ms + 2, "s": sym, "t": trade_id, "p": price, "q": qty,
                "T": self.clock_ms, "m": buyer_maker, "M": True}

    async def trade(self, symbol: str, price: str, qty: str, buyer_maker: bool = False) -> dict[str, Any]:
        """Make the next trade of ``symbol`` (ids 1, 2, ... per symbol) and send it to its subscribers."""
        data = self._trade_data(symbol, price, qty, buyer_maker)
        await self._publish(f"{symbol.lower()}@trade", {"stream": f"{symbol.lower()}@trade", "data": data})
        return data

    def skip(self, symbol: str, n: int) -> None:
        """The next ``n`` trade ids of ``symbol`` are never sent: a gap."""
        self._next_trade_id[symbol.upper()] += n

    async def kline(self, symbol: str, interval: str, start_ms: int, close: str, volume: str,
                    event_ms: int, closed: bool = False) -> dict[str, Any]:
        """Send one update of the ``interval`` kline of ``symbol`` that started at ``start_ms``."""
        sym = symbol.upper()
        length = int(interval[:-1]) * UNIT_MS[interval[-1]]
        data = {"e": "kline", "E": event_ms, "s": sym, "k": {
            "t": start_ms, "T": start_ms + length - 1, "s": sym, "i": interval, "f": 100, "L": 200,
            "o": close, "c": close, "h": close, "l": close, "v": volume, "n": 1, "x": closed,
            "q": "0", "V": "0", "Q": "0", "B": "0"}}
        stream = f"{symbol.lower()}@kline_{interval}"
        await self._publish(stream, {"stream": stream, "data": data})
        return data

    # --- misbehaviour ------------------------------------------------------------------------------------
    async def send_raw(self, text: str) -> None:
        """Send one text frame to every connection, subscribed or not."""
        for conn in list(self.connections):
            await self._send(conn, text)

    async def send_garbage(self, kind: str, symbol: str = "BTCUSDT") -> None:
        """One bad frame of ``kind`` (one of ``GARBAGE``). Bad prices use up a trade id, as a real
        (if broken) trade would, so they do not show up as a gap."""
        stream = f"{symbol.lower()}@trade"
        if kind == "malformed json":
            text = '{"stream":"' + stream + '","data":{"e":"trade",,}}'
        elif kind == "truncated frame":
            full = _dump({"stream": stream, "data": self._trade_data(symbol, "1.0", "1.0", False)})
            self._next_trade_id[symbol.upper()] -= 1  # never delivered: no id used
            text = full[: len(full) // 2]
        elif kind == "unknown event type":
            text = _dump({"stream": stream, "data": {"e": "mysteryEvent", "E": self.clock_ms, "s": symbol}})
        elif kind in ("negative price", "nan price"):
            data = self._trade_data(symbol, "-1.50" if kind == "negative price" else "NaN", "1.0", False)
            text = _dump({"stream": stream, "data": data})
        elif kind == "unknown symbol":
            data = {"e": "trade", "E": self.clock_ms, "s": "NOPEUSDT", "t": 1, "p": "1.0", "q": "1.0",
                    "T": self.clock_ms, "m": False, "M": True}
            text = _dump({"stream": "nopeusdt@trade", "data": data})
        else:
            raise ValueError(f"unknown garbage kind {kind!r}; one of {GARBAGE}")
        await self.send_raw(text)

    async def announce_shutdown(self) -> None:
        """Binance's notice that the open connections will close: the event, bare, to each of them."""
        for conn in list(self.connections):
            await self._send(conn, _dump({"e": "serverShutdown", "E": self.clock_ms}))

    def stall(self) -> None:
        """The open connections go silent (new ones are not affected): no events, no answers."""
        for conn in self.connections:
            conn.stalled = True

    def resume(self) -> None:
        for conn in self.connections:
            conn.stalled = False

    async def disconnect(self, code: int = 1000, reason: str = "", abort: bool = False) -> None:
        """Close every connection (``abort``: drop the TCP connection without a close frame)."""
        for conn in list(self.connections):
            if abort:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(code, reason)

    async def cut_short(self, symbol: str, where: str = "frame", reset: bool = False) -> None:
        """End every connection in the middle of a trade of ``symbol`` (which uses up its trade id):
        ``where="frame"``, after the first half of its frame's bytes, then the TCP connection ends (a
        FIN; with ``reset``, an RST); ``where="message"``, after the first of two fragments, then a
        close frame (1000)."""
        text = _dump({"stream": f"{symbol.lower()}@trade", "data": self._trade_data(symbol, "1.0", "1.0",
                                                                                     False)})
        data = text.encode()
        for conn in list(self.connections):
            transport = conn.ws.transport
            if where == "message":  # RFC 6455, 5.4: a first fragment has FIN clear, its opcode set
                raw = Frame(Opcode.TEXT, data[: len(data) // 2], fin=False).serialize(mask=False)
                transport.write(raw)
                await conn.ws.close(1000)
            else:
                raw = Frame(Opcode.TEXT, data).serialize(mask=False)
                transport.write(raw[: len(raw) // 2])
                if reset:  # SO_LINGER with a zero timeout: close() sends an RST instead of a FIN
                    sock = transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.close()

    async def ping(self, payload: bytes = b"binance", timeout: float = 5.0) -> int:
        """Ping every connection; returns how many answered with a pong carrying ``payload``."""
        waiters = [await c.ws.ping(payload) for c in list(self.connections)]
        answered = 0
        for waiter in waiters:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                await asyncio.wait_for(waiter, timeout)
                answered += 1
        return answered
