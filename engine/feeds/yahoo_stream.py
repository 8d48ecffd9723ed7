"""Yahoo Finance's streaming prices: ``wss://streamer.finance.yahoo.com/?version=2``, as yfinance's live
module speaks it (yfinance/live.py, ``AsyncWebSocket``; the message is yfinance/pricing.proto).

* The client sends ``{"subscribe": [symbols]}`` (and ``{"unsubscribe": [symbols]}``); yfinance sends the
  whole subscription again every 15 s (``_periodic_subscribe``, "heartbeat subscription"), and so does
  this client, so a server that forgot it (a restart behind the load balancer) is reminded.
* The server pushes ``{"type": "pricing", "message": "<base64>"}``; the base64 is a protobuf
  ``PricingData``: ``id`` (1, the symbol), ``price`` (2, float32), ``time`` (3, sint64 ms), ``currency``
  (4), ``day_volume`` (9, sint64), ``last_size`` (22, sint64), and others not used here.

The protobuf is decoded by hand (``decode_pricing``: varints, zigzag, fixed 32/64-bit, length-delimited;
unknown fields skipped by wire type), which keeps Google's protobuf runtime out of the dependencies for
one flat message. Anything that is not a well-formed message of this shape is a counted bad message.

Prices are float32 on the wire: 94745.08 arrives as 94745.078125. They are read back as the shortest
decimal that float32 round-trips to (numpy's repr, as yfinance shows them), so a streamed price equals the
same price polled from the quote endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec
import numpy as np

from engine.feeds.backoff import Backoff
from engine.feeds.ws import Connection, WsFeed
from engine.ticks import SymbolTable

DEFAULT_STREAM_URL = "wss://streamer.finance.yahoo.com/?version=2"
RESUBSCRIBE_S = 15.0  # yfinance/live.py, ``_subscription_interval``
MAX_MESSAGE_BYTES = 4096  # a PricingData is ~100-200 bytes
_MAX_TIME_MS = (2**63 - 1) // 1_000_000


class BadPricing(ValueError):
    """Not a PricingData this feed can use; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Pricing:
    symbol: str
    price: float
    time_ms: int
    currency: str
    day_volume: int | None  # None: not in the message


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise BadPricing("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift >= 70:
            raise BadPricing("varint longer than 10 bytes")


def _zigzag(n: int) -> int:
    n &= (1 << 64) - 1
    return (n >> 1) ^ -(n & 1)


def decode_pricing(data: bytes) -> Pricing:
    """One protobuf ``PricingData`` (pricing.proto), the fields a tick needs; ``BadPricing`` otherwise."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadPricing(f"message over {MAX_MESSAGE_BYTES} bytes")
    symbol = currency = ""
    price: float | None = None
    time_ms: int | None = None
    volume: int | None = None
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise BadPricing("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
            if number == 3:
                time_ms = _zigzag(value)
            elif number == 9:
                volume = _zigzag(value)
        elif wire == 1:
            if i + 8 > len(data):
                raise BadPricing("truncated 64-bit field")
            i += 8
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise BadPricing("truncated length-delimited field")
            raw, i = data[i:i + length], i + length
            if number in (1, 4):
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    raise BadPricing("a string that is not UTF-8") from None
                if number == 1:
                    symbol = text
                else:
                    currency = text
        elif wire == 5:
            if i + 4 > len(data):
                raise BadPricing("truncated 32-bit field")
            if number == 2:
                price = float(str(np.float32(struct.unpack_from("<f", data, i)[0])))
            i += 4
        else:
            raise BadPricing(f"wire type {wire}")
    if not symbol:
        raise BadPricing("no symbol")
    if price is None or not 0.0 < price < float("inf"):
        raise BadPricing("no price" if price is None else "bad price")
    if time_ms is None or not 0 < time_ms <= _MAX_TIME_MS:
        raise BadPricing("no time" if time_ms is None else "bad time")
    if volume is not None and volume < 0:
        raise BadPricing("bad volume")
    return Pricing(symbol, price, time_ms, currency, volume)


class _Push(msgspec.Struct):
    message: str
    type: str = "pricing"


_PUSH = msgspec.json.Decoder(_Push)
OnPrice = Callable[[str, Pricing, int], None]  # (the name subscribed, the price, receive time)


class YahooStream(WsFeed):
    """The streamer connection; each price goes to ``on_price(name, pricing, recv_ns)`` (the Yahoo feed)."""

    name = "yahoo-stream"
    #: a quiet market (a weekend, the night) pushes nothing for hours, so silence is not a dead connection
    #: here; the keepalive pings (every 20 s, answered within 20 s) find a dead one
    stall_s = 300.0

    def __init__(self, symbols: SymbolTable, url: str, wanted: Iterable[str], on_price: OnPrice,
                 backoff: Backoff | None = None, stale_after: float | None = None) -> None:
        super().__init__(symbols, url, wanted, backoff or Backoff(base=1.0, cap=60.0), stale_after)
        self.url = url  # as given: the query string (?version=2) is part of it
        self.on_price = on_price
        self.pushes = 0
        self.resubscribe_s = RESUBSCRIBE_S
        self._names = {w.upper(): w for w in self.wanted}  # Yahoo answers in upper case
        self._resubscriber: asyncio.Task[None] | None = None

    async def subscribe(self, symbols: Iterable[str]) -> None:
        await super().subscribe(symbols)
        self._names = {w.upper(): w for w in self.wanted}

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await super().unsubscribe(symbols)
        self._names = {w.upper(): w for w in self.wanted}

    def url_for(self, symbols: list[str]) -> str:
        return self.url

    async def send_subscription(self, ws: Connection, symbols: list[str], subscribe: bool) -> None:
        key = "subscribe" if subscribe else "unsubscribe"
        await self.send(ws, msgspec.json.encode({key: symbols}).decode())

    def on_connected(self) -> None:
        if self._resubscriber is not None:
            self._resubscriber.cancel()
        if self._ws is not None:
            self._resubscriber = asyncio.get_running_loop().create_task(self._resubscribe(self._ws))

    async def _resubscribe(self, ws: Connection) -> None:
        while True:
            await self._sleep(self.resubscribe_s)
            if self.wanted and ws is self._ws:
                with contextlib.suppress(Exception):  # a closed connection: the reconnect subscribes
                    await self.send_subscription(ws, self.wanted, True)

    async def on_stream_end(self) -> None:
        if self._resubscriber is not None:
            self._resubscriber.cancel()
            self._resubscriber = None

    def decode(self, raw: str | bytes, recv_ns: int) -> None:
        try:
            push = _PUSH.decode(raw)
        except msgspec.ValidationError:
            self.counters.bad_message("unknown message", raw)
            return
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            self.counters.bad_message("malformed json", raw)
            return
        if push.type != "pricing":
            self.counters.bad_message("unknown message", raw)
            return
        try:
            data = base64.b64decode(push.message, validate=True)
        except (binascii.Error, ValueError):
            self.counters.bad_message("bad base64", raw)
            return
        try:
            pricing = decode_pricing(data)
        except BadPricing as exc:
            self.counters.bad_message(f"bad pricing: {exc}", raw)
            return
        name = self._names.get(pricing.symbol.upper())
        if name is None:
            self.counters.bad_message("unknown symbol", pricing)
            return
        self.pushes += 1
        self.counters.ticks += 1
        self.on_price(name, pricing, recv_ns)
