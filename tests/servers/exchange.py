"""What the loopback stand-ins of ccxt exchanges share (``kraken``, ``okx``): one aiohttp server on
127.0.0.1 that carries the exchange's public WebSocket and its REST API on one port, a tape of trades
per symbol (ids counting up by one per symbol, as Kraken documents; times from the wall clock, so the
feed's "forming bar" is the stand-in's), and the faults tests steer: disconnects, stalls, garbage
frames, duplicated trades, trades missed while a client was away, and refusals (HTTP 429 at the
WebSocket handshake, rate-limit answers on REST).

History comes from the same tape: ``seed`` writes trades into the past, and the OHLC endpoints
aggregate the tape (missed trades included) into bars, so a refill after a gap can be checked against
what really traded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

MS = 1_000_000


@dataclass
class Trade:
    symbol: str
    id: int
    ts_ns: int
    price: float
    size: float
    side: str  # the taker's: "buy" or "sell"


@dataclass
class Peer:
    ws: web.WebSocketResponse
    subs: set[str] = field(default_factory=set)  # symbols subscribed (the exchange's own names)
    stalled: bool = False


class StandIn:
    """Subclasses give ``ws_path``, ``routes`` and the frames (``on_text``, ``trade_frames``)."""

    ws_path = "/ws"
    compress = True  # permessage-deflate when the client offers it (ccxt does); off for the bench's flood

    def __init__(self, prices: dict[str, float]) -> None:
        self.prices = dict(prices)
        self.tape: dict[str, list[Trade]] = {s: [] for s in prices}
        self.peers: list[Peer] = []
        self.connections = 0
        self.refused_ws: list[int] = []  # statuses still to answer handshakes with
        self.refused_rest: list[str] = []  # rate-limit answers still to give REST requests
        self.rest_requests: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- life ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> StandIn:
        app = web.Application()
        app.router.add_get(self.ws_path, self._ws)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for peer in list(self.peers):
            with contextlib.suppress(Exception):
                await peer.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.ws_path}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # --- the WebSocket ------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refused_ws:
            status = self.refused_ws.pop(0)
            return web.json_response({"error": "Too Many Requests"}, status=status)
        ws = web.WebSocketResponse(autoping=True, compress=self.compress)
        await ws.prepare(request)
        peer = Peer(ws)
        self.peers.append(peer)
        self.connections += 1
        try:
            await self.on_open(peer)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(peer, msg.data)
        finally:
            if peer in self.peers:
                self.peers.remove(peer)
        return ws

    async def on_open(self, peer: Peer) -> None:
        """What a new connection is sent before it asks for anything."""

    async def on_text(self, peer: Peer, text: str) -> None:
        raise NotImplementedError

    def trade_frames(self, symbol: str, trades: list[Trade], snapshot: bool = False) -> list[str]:
        raise NotImplementedError

    async def send(self, peer: Peer, text: str) -> None:
        if peer.stalled or peer.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await peer.ws.send_str(text)

    async def broadcast(self, text: str, symbol: str | None = None) -> None:
        for peer in list(self.peers):
            if symbol is None or symbol in peer.subs:
                await self.send(peer, text)

    # --- the tape -----------------------------------------------------------------------------------
    def _append(self, symbol: str, price: float, size: float, side: str, ts_ns: int | None) -> Trade:
        tape = self.tape[symbol]
        trade = Trade(symbol, (tape[-1].id + 1) if tape else 1, ts_ns or time.time_ns(), price, size, side)
        tape.append(trade)
        self.prices[symbol] = price
        return trade

    def seed(self, symbol: str, minutes: int, every_s: int = 20, now_ns: int | None = None) -> None:
        """Trades in the past ``minutes`` (one every ``every_s`` s, a gentle zigzag), ending before now."""
        now = now_ns or time.time_ns()
        start = now - minutes * 60 * 1_000_000_000
        base = self.prices[symbol]
        for i, ts in enumerate(range(start, now - 1_000_000_000, every_s * 1_000_000_000)):
            self._append(symbol, round(base * (1 + 0.001 * ((i % 7) - 3)), 2), 0.5 + (i % 3) * 0.25,
                         "buy" if i % 2 else "sell", ts)
        self.prices[symbol] = base

    def record(self, symbol: str, price: float, size: float = 0.1, side: str = "buy",
               ts_ns: int | None = None) -> Trade:
        """A trade that happens while nobody is told (a client that is away misses it)."""
        return self._append(symbol, price, size, side, ts_ns)

    async def trade(self, symbol: str, price: float, size: float = 0.1, side: str = "buy",
                    ts_ns: int | None = None) -> Trade:
        """A trade, sent to every client subscribed to ``symbol`` (at ``ts_ns``, default now)."""
        trade = self._append(symbol, price, size, side, ts_ns)
        for frame in self.trade_frames(symbol, [trade]):
            await self.broadcast(frame, symbol)
        return trade

    async def resend(self, trade: Trade) -> None:
        """A trade sent again (a duplicate the client must drop)."""
        for frame in self.trade_frames(trade.symbol, [trade]):
            await self.broadcast(frame, trade.symbol)

    async def raw(self, text: str) -> None:
        await self.broadcast(text)

    def bars(self, symbol: str, step_s: int, since_ns: int = 0) -> list[tuple[int, float, float, float, float,
                                                                              float, int]]:
        """The tape as bars of ``step_s``: (open s, o, h, l, c, volume, count), ascending."""
        step = step_s * 1_000_000_000
        out: dict[int, list[float]] = {}
        for t in self.tape.get(symbol, []):
            if t.ts_ns < since_ns - since_ns % step:
                continue
            key = t.ts_ns - t.ts_ns % step
            bar = out.get(key)
            if bar is None:
                out[key] = [t.price, t.price, t.price, t.price, t.size, 1]
            else:
                bar[1], bar[2], bar[3] = max(bar[1], t.price), min(bar[2], t.price), t.price
                bar[4] += t.size
                bar[5] += 1
        return [(k // 1_000_000_000, b[0], b[1], b[2], b[3], b[4], int(b[5])) for k, b in sorted(out.items())]

    # --- faults -------------------------------------------------------------------------------------
    async def disconnect(self, abort: bool = False) -> None:
        for peer in list(self.peers):
            self.peers.remove(peer)
            if abort:
                transport = peer.ws._req.transport if peer.ws._req is not None else None
                if transport is not None:
                    transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await peer.ws.close(code=1001, message=b"going away")

    def stall(self) -> None:
        for peer in self.peers:
            peer.stalled = True

    def refuse_ws(self, status: int = 429, times: int = 1) -> None:
        self.refused_ws += [status] * times

    def refuse_rest(self, times: int = 1) -> None:
        self.refused_rest += ["rate limit"] * times

    def count(self, path: str) -> None:
        self.rest_requests[path] = self.rest_requests.get(path, 0) + 1

    def subscribed(self, symbol: str) -> bool:
        return any(symbol in p.subs for p in self.peers)

    async def until(self, condition: Callable[[], Any], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
