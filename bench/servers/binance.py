"""A local stand-in for Binance's public market-data WebSocket, speaking the protocol as "WebSocket
Streams for Binance" documents it, with knobs for every way the real one misbehaves. It is the one
Binance stand-in: the feed tests drive it directly, ``tickdeck bench --faults`` drives it on a fault
schedule (``bench.faults``), ``tickdeck bench --feeds`` floods it in its own process (``python -m
bench.servers.binance --flood N``) and ``bench.servers.history`` streams its tape through it.

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
may), ``duplicate`` (resend a trade a connection already carried), ``skip`` (a gap in trade ids),
``refuse_status`` (answer every handshake with an HTTP status) and ``refuse_next`` (answer the next
handshakes with 503, as a server that is restarting).

Bounds: ``history`` keeps the last ``HISTORY`` frames of each stream, each connection the last
``RECENT`` it carried; ``requests``, ``paths`` and ``close_codes`` keep the last ``KEEP`` entries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import socket
import struct
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
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
PRICE_GARBAGE = ("negative price", "nan price")  # these use up a trade id
HISTORY = 1_000  # frames kept per stream, for ``replay`` and the tests
RECENT = 32  # frames kept per connection, for ``duplicate``
KEEP = 10_000  # requests, paths and close codes kept (the oldest go first)


@dataclass
class Connection:
    ws: ServerConnection
    path: str
    subs: list[str] = field(default_factory=list)
    stalled: bool = False  # sends nothing at all, answers included
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))  # events it carried


def _trim(items: list[Any]) -> None:
    """Keep the last ``KEEP`` of ``items`` (trimmed in one go past twice that, so appends stay cheap)."""
    if len(items) > 2 * KEEP:
        del items[:-KEEP]


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class BinanceServer:
    """``async with BinanceServer() as server:`` then point a feed at ``server.url``."""

    def __init__(self, ping_interval: float | None = 20.0, ping_timeout: float | None = 60.0,
                 max_messages_per_s: int = 5, max_streams: int = 1024,
                 compression: str | None = "deflate") -> None:
        self.ping_interval = ping_interval
        self.compression = compression  # None: frames as they are (the benches, for speed)
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
        self.refused = 0  # handshakes answered with ``refuse_status`` or ``refuse_next``
        self.accepted = 0  # handshakes accepted
        self.close_codes: list[int | None] = []  # what each ended connection's client closed it with
        self.refuse_status: int | None = None
        self.refuse_next = 0  # the next handshakes answered 503 Service Unavailable
        self.replay = 0
        self.fail_next: tuple[int, str] | None = None  # (code, msg) for the next (UN)SUBSCRIBE
        self.clock_ms = 1_700_000_000_000  # trade time of the next trade (each trade adds 1 ms)
        self.history: dict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self._next_trade_id: dict[str, int] = defaultdict(lambda: 1)
        self._server: Server | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> BinanceServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake,
                                   ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                   compression=self.compression,
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
        if self.refuse_status is not None or self.refuse_next:
            if self.refuse_next:
                self.refuse_next -= 1
            self.refused += 1
            self._bump()
            status = HTTPStatus(self.refuse_status or HTTPStatus.SERVICE_UNAVAILABLE)
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
        self.accepted += 1
        self.paths.append(path)
        _trim(self.paths)
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
            _trim(self.close_codes)
            self._bump()

    async def _add(self, conn: Connection, streams: list[str]) -> None:
        for stream in streams:
            if stream not in conn.subs:
                conn.subs.append(stream)
        self._bump()
        if self.replay:
            for stream in streams:
                for frame in list(self.history[stream])[-self.replay:]:
                    await self._send(conn, _dump(frame))

    async def _control(self, conn: Connection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except ValueError:
            self.requests.append(message)
            _trim(self.requests)
            self._bump()
            await self._error(conn, 3, "Invalid JSON: expected value at line 1 column 1", None)
            return
        self.requests.append(request)
        _trim(self.requests)
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

    async def _send(self, conn: Connection, text: str) -> bool:
        """Whether ``text`` went out (not to a stalled or closed connection)."""
        if conn.stalled:
            return False
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            return False
        self.frames_sent += 1
        return True

    async def publish(self, stream: str, frame: dict[str, Any]) -> int:
        """Send an event (a ``{"stream", "data"}`` frame) to the connections subscribed to ``stream``; how
        many it reached."""
        self.history[stream].append(frame)
        text = _dump(frame)
        reached = 0
        for conn in list(self.connections):
            if stream in conn.subs and await self._send(conn, text):
                conn.recent.append(text)
                reached += 1
        return reached

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
        await self.publish(f"{symbol.lower()}@trade", {"stream": f"{symbol.lower()}@trade", "data": data})
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
        await self.publish(stream, {"stream": stream, "data": data})
        return data

    # --- misbehaviour ------------------------------------------------------------------------------------
    async def send_raw(self, text: str) -> int:
        """Send one text frame to every connection, subscribed or not; how many it reached."""
        return sum([await self._send(conn, text) for conn in list(self.connections)])

    async def send_garbage(self, kind: str, symbol: str = "BTCUSDT") -> int:
        """One bad frame of ``kind`` (one of ``GARBAGE``) to every connection; how many it reached. Bad
        prices use up a trade id, as a real (if broken) trade would, so they do not show up as a gap."""
        stream = f"{symbol.lower()}@trade"
        if kind == "malformed json":
            text = '{"stream":"' + stream + '","data":{"e":"trade",,}}'
        elif kind == "truncated frame":
            full = _dump({"stream": stream, "data": self._trade_data(symbol, "1.0", "1.0", False)})
            self._next_trade_id[symbol.upper()] -= 1  # never delivered: no id used
            text = full[: len(full) // 2]
        elif kind == "unknown event type":
            text = _dump({"stream": stream, "data": {"e": "mysteryEvent", "E": self.clock_ms, "s": symbol}})
        elif kind in PRICE_GARBAGE:
            data = self._trade_data(symbol, "-1.50" if kind == "negative price" else "NaN", "1.0", False)
            text = _dump({"stream": stream, "data": data})
        elif kind == "unknown symbol":
            data = {"e": "trade", "E": self.clock_ms, "s": "NOPEUSDT", "t": 1, "p": "1.0", "q": "1.0",
                    "T": self.clock_ms, "m": False, "M": True}
            text = _dump({"stream": "nopeusdt@trade", "data": data})
        else:
            raise ValueError(f"unknown garbage kind {kind!r}; one of {GARBAGE}")
        return await self.send_raw(text)

    async def duplicate(self, rng: random.Random) -> int:
        """Resend to each connection one of the last events it carried (picked with ``rng``), as a server
        that replays on a hiccup does; how many connections got one."""
        sent = 0
        for conn in list(self.connections):
            if conn.recent and await self._send(conn, rng.choice(conn.recent)):
                sent += 1
        return sent

    async def announce_shutdown(self) -> None:
        """Binance's notice that the open connections will close: the event, bare, to each of them."""
        for conn in list(self.connections):
            await self._send(conn, _dump({"e": "serverShutdown", "E": self.clock_ms}))

    def stall(self, only: Sequence[Connection] | None = None) -> None:
        """The open connections (or ``only`` these) go silent, new ones are not affected: no events, no
        answers."""
        for conn in self.connections if only is None else only:
            conn.stalled = True

    def resume(self) -> None:
        for conn in self.connections:
            conn.stalled = False

    async def disconnect(self, code: int = 1000, reason: str = "", abort: bool = False,
                         only: Sequence[Connection] | None = None) -> None:
        """Close every connection, or ``only`` these (``abort``: drop the TCP connection without a close
        frame)."""
        for conn in list(self.connections if only is None else only):
            if abort:
                conn.ws.transport.abort()
            else:
                with contextlib.suppress(ConnectionClosed):
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

    # --- flood (``tickdeck bench --feeds``) ----------------------------------------------------------
    async def flood(self, symbols: Sequence[str], n: int) -> int:
        """Send ``n`` trades round robin over ``symbols`` to their subscribers as fast as the connections
        take them; the frames sent. The frames are written by hand and kept out of ``history``: at
        100,000 a second, ``json.dumps`` and the books would make this process, not the client under
        test, the bottleneck."""
        names = [s.upper() for s in symbols]
        targets = {s: [c for c in self.connections if f"{s.lower()}@trade" in c.subs] for s in names}
        now_ms = time.time_ns() // 1_000_000
        sent = 0
        for i in range(n):
            sym = names[i % len(names)]
            tid = self._next_trade_id[sym]
            self._next_trade_id[sym] = tid + 1
            ms = now_ms + i // 1000
            text = (f'{{"stream":"{sym.lower()}@trade","data":{{"e":"trade","E":{ms},"s":"{sym}","t":{tid},'
                    f'"p":"{100.0 + (i % 97) * 0.01:.2f}","q":"0.010","T":{ms},"m":false,"M":true}}}}')
            for conn in targets[sym]:
                sent += await self._send(conn, text)
        return sent


async def _flood(symbols: list[str], n: int) -> None:
    async with BinanceServer(compression=None) as server:
        print(server.url, flush=True)
        await server.wait_subscribed(*(f"{s.lower()}@trade" for s in symbols), timeout=60.0)
        await server.flood(symbols, n)
        await server.wait(lambda: not server.connections, timeout=600.0)  # the client hangs up


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.binance",
                                     description="Binance's WebSocket streams on 127.0.0.1: prints its URL, "
                                     "waits for a client subscribed to every symbol's trades, sends N "
                                     "trades.")
    parser.add_argument("--flood", type=int, required=True, metavar="N", help="trades to send")
    parser.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    args = parser.parse_args(argv)
    asyncio.run(_flood([s for s in args.symbols.split(",") if s], args.flood))


if __name__ == "__main__":
    main(sys.argv[1:])
