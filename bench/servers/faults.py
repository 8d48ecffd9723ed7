"""A Binance-protocol trade server on 127.0.0.1 that misbehaves on a schedule, and keeps the books.

It speaks the combined-stream protocol as "WebSocket Streams for Binance" documents it (``/stream?
streams=a@trade/b@trade``, events wrapped as ``{"stream", "data"}``, ``SUBSCRIBE`` / ``UNSUBSCRIBE`` /
``LIST_SUBSCRIPTIONS`` answered by id), so the client under test is the real ``BinanceFeed``, pointed at
it through ``feeds.binance.url``. It lives here, not in ``tests/``, because ``tickdeck bench --faults``
runs it too.

A tape makes trades at a steady rate (ids 1, 2, ... per symbol) whether or not anyone is connected, as an
exchange does, so trades made while the client is away are gaps it must report. Every ``every`` seconds
of healthy streaming ends in a fault, in turn: ``close`` (a clean close, as Binance's 24-hour cut),
``abort`` (the TCP connection dropped without a close frame), ``stall`` (the connection stays open and
silent, answers included, until the client gives up on it) and ``refuse`` (a clean close, then the next
handshake answered with HTTP 503). Between faults it sends garbage frames and duplicates of trades the
connection already carried.

The books (``FaultBook``) count only what certainly reached the client: garbage and duplicates go out
on a healthy connection, and before an ``abort`` the connection is kept quiet for ``quiet_s`` so nothing
is in flight when it drops. That is what makes exact accounting possible:
``trade ids made == ticks processed + gaps reported + bad-price trades`` (a trade with a bad price
uses an id, as a real broken trade would), ``duplicates dropped == duplicates sent`` and ``bad messages
== garbage sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

FAULTS = ("close", "abort", "stall", "refuse")
GARBAGE = ("malformed json", "truncated frame", "unknown event type", "negative price", "nan price",
           "unknown symbol")
PRICE_GARBAGE = ("negative price", "nan price")  # these use up a trade id
# what the feed may report after each state; anything else is a wrong transition
TRANSITIONS: dict[str, frozenset[str]] = {
    "connecting": frozenset({"live", "reconnecting"}),
    "live": frozenset({"stale", "reconnecting"}),
    "stale": frozenset({"live", "reconnecting"}),
    "reconnecting": frozenset({"connecting"}),
}


def wrong_transitions(states: Sequence[str]) -> list[str]:
    """Every step of ``states`` that a feed must never take (the first must be ``connecting``)."""
    wrong = [] if not states or states[0] == "connecting" else [f"starts with {states[0]}"]
    for i, (a, b) in enumerate(itertools.pairwise(states), start=1):
        if b not in TRANSITIONS.get(a, frozenset()):
            wrong.append(f"#{i}: {a} -> {b}")
    return wrong


@dataclass
class FaultBook:
    """What the server did, counting only what certainly reached the client (see the module docstring)."""

    trade_ids: int = 0  # ids given to trades, valid or with a bad price
    trades_sent: int = 0  # valid trades written to a healthy connection
    trades_unsent: int = 0  # made while no healthy connection was there: the client's gaps
    price_garbage: int = 0  # trades with a bad price (sent, with an id)
    duplicates: int = 0
    garbage: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    connections: int = 0  # handshakes accepted
    refused: int = 0  # handshakes answered 503

    @property
    def garbage_total(self) -> int:
        return sum(self.garbage.values())

    def expected_statuses(self) -> Counter[str]:
        """The feed statuses the faults must have caused (one client, the final connection still live)."""
        f = self.faults
        return Counter({"connecting": self.connections + self.refused, "live": self.connections,
                        "stale": f["stall"],
                        "reconnecting": f["close"] + f["abort"] + f["stall"] + f["refuse"] + self.refused})


@dataclass
class _Conn:
    ws: ServerConnection
    subs: set[str]
    healthy: bool = True  # False once stalled or being closed: it carries nothing more
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=32))  # trade frames it carried


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class FaultServer:
    """``async with FaultServer(("BTCUSDT", "ETHUSDT")) as server:`` then point the feed at ``server.url``.

    ``rate`` trades a second over all symbols; a fault every ``every`` seconds of healthy streaming, with
    ``garbage`` garbage frames and ``duplicates`` duplicates sent at random moments in between.
    """

    def __init__(self, symbols: Sequence[str], *, rate: float = 500.0, every: float = 4.0,
                 faults: Sequence[str] = FAULTS, garbage: int = 3, duplicates: int = 3,
                 quiet_s: float = 0.5, seed: int = 7) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown or not faults:
            raise ValueError(f"faults must be some of {', '.join(FAULTS)}; got {list(faults)}")
        self.symbols = tuple(s.upper() for s in symbols)
        self.rate = rate
        self.every = every
        self.fault_cycle = tuple(faults)
        self.garbage_per_cycle = garbage
        self.duplicates_per_cycle = duplicates
        self.quiet_s = quiet_s
        self.book = FaultBook()
        self.url = ""
        self.faulting = False  # the schedule is running
        self._rng = random.Random(seed)
        self._conns: list[_Conn] = []
        self._next_id = dict.fromkeys(self.symbols, 1)
        self._price = {s: 100.0 + 10.0 * i for i, s in enumerate(self.symbols)}
        self._clock_ms = 1_700_000_000_000
        self._refuse_next = 0
        self._stopping = False  # the tape stops
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> FaultServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake,
                                   compression=None, ping_interval=20, ping_timeout=60)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # --- the run ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the tape (at the first subscription, so the client's first trade is id 1) and the
        fault schedule."""
        self.faulting = True
        self._tasks = [asyncio.create_task(self._tape(), name="fault-server-tape"),
                       asyncio.create_task(self._schedule(), name="fault-server-faults")]

    async def finish(self, timeout: float = 30.0) -> None:
        """End the faults (a fault under way completes; none starts), stop the tape once a healthy
        connection is back, send one more trade of every symbol (so the client sees every earlier gap),
        and wait until the client has read it all."""
        self.faulting = False
        tape, schedule = self._tasks
        async with asyncio.timeout(timeout):
            await schedule  # it ends at its next step
            await self._wait(lambda: bool(self._healthy()), timeout)
            self._stopping = True
            self._bump()
            await tape  # it ends after the trade it is sending
        self._tasks = []
        for symbol in self.symbols:
            await self._trade(symbol)
        for conn in self._healthy():  # a pong comes back after every frame before the ping was read
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(await conn.ws.ping(), timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _healthy(self) -> list[_Conn]:
        return [c for c in self._conns if c.healthy and c.subs]

    async def _tape(self) -> None:
        await self._wait(lambda: bool(self._healthy()) or self._stopping, 3600.0)
        loop = asyncio.get_running_loop()
        last, carry, k = loop.time(), 0.0, 0
        while not self._stopping:
            await asyncio.sleep(0.01)
            now = loop.time()
            carry += (now - last) * self.rate
            last = now
            while carry >= 1.0 and not self._stopping:
                carry -= 1.0
                await self._trade(self.symbols[k % len(self.symbols)])
                k += 1

    async def _schedule(self) -> None:
        n = 0
        while self.faulting:
            await self._wait(lambda: bool(self._healthy()), 3600.0)
            loop = asyncio.get_running_loop()
            start = loop.time()
            moments = sorted([(self._rng.uniform(0.1, 0.9) * self.every, "garbage")
                              for _ in range(self.garbage_per_cycle)]
                             + [(self._rng.uniform(0.1, 0.9) * self.every, "duplicate")
                                for _ in range(self.duplicates_per_cycle)])
            for at, what in moments:
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                if not self.faulting:
                    return
                if what == "garbage":
                    await self._garbage(GARBAGE[self.book.garbage_total % len(GARBAGE)])
                else:
                    await self._duplicate()
            await asyncio.sleep(max(0.0, start + self.every - loop.time()))
            if not self.faulting:
                return
            await self._fault(self.fault_cycle[n % len(self.fault_cycle)])
            n += 1

    # --- faults -------------------------------------------------------------------------------------
    async def _fault(self, kind: str) -> None:
        conns = self._healthy()
        if not conns:
            return
        self.book.faults[kind] += 1
        for conn in conns:
            conn.healthy = False
        self._bump()
        if kind == "stall":
            return  # open and silent: the client notices, goes stale, and gives up on it
        if kind == "refuse":
            self._refuse_next += 1
        if kind == "abort":
            await asyncio.sleep(self.quiet_s)  # nothing in flight when the connection drops
            for conn in conns:
                conn.ws.transport.abort()
            return
        for conn in conns:
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.close(1001, f"fault: {kind}")

    # --- protocol -----------------------------------------------------------------------------------
    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._refuse_next:
            self._refuse_next -= 1
            self.book.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        if urlsplit(request.path).path != "/stream":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        streams = parse_qs(urlsplit(ws.request.path).query).get("streams", [""])[0]
        conn = _Conn(ws, {s for s in streams.split("/") if s})
        self.book.connections += 1
        self._conns.append(conn)
        self._bump()
        try:
            async for message in ws:
                if conn.healthy:
                    await self._control(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._conns.remove(conn)
            self._bump()

    async def _control(self, conn: _Conn, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            method, rid = request["method"], request.get("id")
        except (ValueError, KeyError, TypeError):
            await self._send(conn, _dump({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        params = [p for p in request.get("params") or [] if isinstance(p, str)]
        if method == "SUBSCRIBE":
            conn.subs.update(params)
            self._bump()
        elif method == "UNSUBSCRIBE":
            conn.subs.difference_update(params)
        result = sorted(conn.subs) if method == "LIST_SUBSCRIPTIONS" else None
        await self._send(conn, _dump({"result": result, "id": rid}))

    async def _send(self, conn: _Conn, text: str) -> bool:
        if not conn.healthy:
            return False
        try:
            await conn.ws.send(text)
        except ConnectionClosed:
            return False
        return True

    def _trade_data(self, symbol: str, price: str) -> dict[str, Any]:
        trade_id = self._next_id[symbol]
        self._next_id[symbol] = trade_id + 1
        self.book.trade_ids += 1
        self._clock_ms += 1
        return {"e": "trade", "E": self._clock_ms + 1, "s": symbol, "t": trade_id, "p": price, "q": "0.010",
                "T": self._clock_ms, "m": self._rng.random() < 0.5, "M": True}

    async def _trade(self, symbol: str) -> None:
        self._price[symbol] *= 1.0 + self._rng.gauss(0.0, 5e-4)
        stream = f"{symbol.lower()}@trade"
        text = _dump({"stream": stream, "data": self._trade_data(symbol, f"{self._price[symbol]:.2f}")})
        sent = False
        for conn in self._healthy():
            if stream in conn.subs and await self._send(conn, text):
                conn.recent.append(text)
                sent = True
        if sent:
            self.book.trades_sent += 1
        else:
            self.book.trades_unsent += 1

    async def _duplicate(self) -> None:
        for conn in self._healthy():
            if conn.recent and await self._send(conn, self._rng.choice(conn.recent)):
                self.book.duplicates += 1

    async def _garbage(self, kind: str) -> None:
        conns = self._healthy()
        if not conns:
            return
        symbol = self.symbols[self.book.garbage_total % len(self.symbols)]
        stream = f"{symbol.lower()}@trade"
        if kind == "malformed json":
            text = '{"stream":"' + stream + '","data":{"e":"trade",,}}'
        elif kind == "truncated frame":
            full = _dump({"stream": stream, "data": {"e": "trade", "E": self._clock_ms, "s": symbol,
                                                     "t": 0, "p": "1.0", "q": "1.0", "T": self._clock_ms,
                                                     "m": False, "M": True}})
            text = full[: len(full) // 2]
        elif kind == "unknown event type":
            text = _dump({"stream": stream, "data": {"e": "mysteryEvent", "E": self._clock_ms, "s": symbol}})
        elif kind in PRICE_GARBAGE:
            price = "-1.50" if kind == "negative price" else "NaN"
            text = _dump({"stream": stream, "data": self._trade_data(symbol, price)})
        else:  # unknown symbol
            text = _dump({"stream": "nopeusdt@trade", "data": {
                "e": "trade", "E": self._clock_ms, "s": "NOPEUSDT", "t": 1, "p": "1.0", "q": "1.0",
                "T": self._clock_ms, "m": False, "M": True}})
        sent = [await self._send(conn, text) for conn in conns]
        if kind in PRICE_GARBAGE:
            self.book.price_garbage += 1
        if all(sent):
            self.book.garbage[kind] += 1
