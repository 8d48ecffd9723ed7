"""A local stand-in for Yahoo Finance's streamer (``wss://streamer.finance.yahoo.com/?version=2``), speaking
what yfinance's live module speaks (yfinance/live.py, yfinance/pricing.proto): the client sends
``{"subscribe": [...]}`` and ``{"unsubscribe": [...]}``; the server pushes ``{"type": "pricing",
"message": "<base64 protobuf PricingData>"}`` for the symbols a connection subscribed to. The protobuf is
encoded here by hand, field by field as pricing.proto numbers them, independently of the feed's decoder.

Tests push prices (``push``), send raw frames, and close connections; every frame received is kept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _sint64(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def pricing_data(symbol: str, price: float, time_ms: int, currency: str = "USD", exchange: str = "NMS",
                 day_volume: int | None = None, last_size: int | None = None) -> bytes:
    """A ``PricingData`` message: id (1), price (2, float), time (3, sint64), currency (4), exchange (5),
    market_hours (7, int32), day_volume (9, sint64), last_size (22, sint64)."""
    out = bytearray()
    for number, text in ((1, symbol), (4, currency), (5, exchange)):
        raw = text.encode()
        out += _key(number, 2) + _varint(len(raw)) + raw
    out += _key(2, 5) + struct.pack("<f", price)
    out += _key(3, 0) + _sint64(time_ms)
    out += _key(7, 0) + _varint(1)
    if day_volume is not None:
        out += _key(9, 0) + _sint64(day_volume)
    if last_size is not None:
        out += _key(22, 0) + _sint64(last_size)
    return bytes(out)


def push_frame(message: bytes) -> str:
    return json.dumps({"type": "pricing", "message": base64.b64encode(message).decode()})


@dataclass
class Client:
    ws: ServerConnection
    subs: set[str] = field(default_factory=set)


class YahooStreamer:
    """``async with YahooStreamer() as streamer:``, then the feed's ``stream_url`` is ``streamer.url``."""

    def __init__(self) -> None:
        self.url = ""
        self.clients: list[Client] = []
        self.received: list[Any] = []  # every frame clients sent, decoded when it was JSON
        self.connections = 0
        self._server: Server | None = None

    async def __aenter__(self) -> YahooStreamer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/?version=2"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        client = Client(ws)
        self.clients.append(client)
        self.connections += 1
        try:
            async for frame in ws:
                try:
                    message = json.loads(frame)
                except ValueError:
                    self.received.append(frame)
                    continue
                self.received.append(message)
                if isinstance(message, dict):
                    client.subs.update(message.get("subscribe") or [])
                    client.subs.difference_update(message.get("unsubscribe") or [])
        except ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)

    def subscribed(self, symbol: str) -> bool:
        return any(symbol in c.subs for c in self.clients)

    async def push(self, symbol: str, price: float, time_ms: int, day_volume: int | None = None,
                   currency: str = "USD") -> None:
        """One price to every connection subscribed to ``symbol``."""
        frame = push_frame(pricing_data(symbol, price, time_ms, currency, day_volume=day_volume))
        for client in list(self.clients):
            if symbol in client.subs:
                with contextlib.suppress(ConnectionClosed):
                    await client.ws.send(frame)

    async def send_raw(self, frame: str | bytes) -> None:
        for client in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(frame)

    async def disconnect(self) -> None:
        for client in list(self.clients):
            await client.ws.close(1001)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)
