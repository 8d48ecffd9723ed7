"""A local Coinbase Advanced Trade market-data WebSocket, for tests.

It speaks the public protocol as Coinbase documents it: one channel per ``subscribe`` or
``unsubscribe`` frame, a ``subscriptions`` message in answer to each, a ``market_trades`` snapshot of
the most recent trades (newest first) when a product is first subscribed and ``update`` events after,
``ticker`` snapshot and updates, ``heartbeats``, ``{"type": "error"}`` for a request it cannot serve, and
a ``sequence_num`` per connection that grows by one per message across channels.

It enforces Coinbase's documented rules the way the service does, so a client that breaks one fails
here as it would there:

- a connection that has sent no ``subscribe`` within ``subscribe_deadline_s`` (5 s, "Advanced Trade
  WebSocket Overview") is closed;
- a client that sends more than ``frames_per_s`` frames (8, "Advanced Trade WebSocket Rate Limits": 8
  unauthenticated messages a second) in any second gets an error message and is disconnected (code
  1008, policy violation: Coinbase documents the limit, not the close code);
- ``heartbeats`` is a connection-wide channel: subscribed with any ``product_ids`` (``[]`` included);
- aliased products (``aliases``, alias -> canonical, as BTC-USDC -> BTC-USD) are accepted in
  subscriptions, and their trades and tickers are sent under the canonical id; the public product
  endpoint (``rest_url`` + ``/api/v3/brokerage/market/products/{id}``, another port) answers each
  product's ``alias``, ``alias_to`` and ``quote_increment`` (``increments``, "0.01" by default) as
  Coinbase's "Get Public Product" does.

Tests steer it: trades (sent, or only recorded as if the client had missed them), forced disconnects,
stalls, garbage, skipped sequence numbers, error messages and handshakes refused with an HTTP status.
Everything is deterministic: trade times come from a clock that advances 1 ms per trade, and nothing is
sent on a timer unless ``heartbeat_s`` is set (the subscribe deadline excepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

CHANNELS = ("heartbeats", "candles", "status", "ticker", "ticker_batch", "level2", "market_trades")
T0_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
PRODUCTS = {"BTC-USD": 37000.0, "ETH-USD": 2000.0, "SOL-USD": 55.0}


def rfc3339(ns: int, digits: int = 6) -> str:
    """``ns`` as Coinbase writes times: UTC, a fraction of ``digits`` digits, a ``Z``."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    head = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{str(nanos).rjust(9, '0')[:digits]}Z"


@dataclass
class Client:
    ws: ServerConnection
    seq: int = 0
    subs: dict[str, set[str]] = field(default_factory=dict)  # channel -> product ids
    stalled: bool = False
    heartbeat_counter: int = 0
    last_sent: dict[str, str] = field(default_factory=dict)  # channel -> last message sent on it
    heartbeats: bool = False  # subscribed to the connection-wide heartbeats channel
    subscribed_once: bool = False  # has sent a subscribe (the 5 s deadline)
    frame_times: list[float] = field(default_factory=list)  # when frames arrived, the last second


class CoinbaseServer:
    def __init__(self, products: dict[str, float] | None = None, snapshot_size: int = 3,
                 heartbeat_s: float | None = None, aliases: dict[str, str] | None = None,
                 subscribe_deadline_s: float = 5.0, frames_per_s: int = 8) -> None:
        self.prices = dict(products or PRODUCTS)
        self.aliases = dict(aliases or {})  # alias -> canonical product (whose book it trades on)
        self.subscribe_deadline_s = subscribe_deadline_s
        self.frames_per_s = frames_per_s
        self.deadline_checks = 0  # connections whose subscribe deadline has passed (closed or not)
        self.deadline_closes = 0  # ... and were closed for it
        self.rate_limited = 0  # connections closed for sending too fast
        self.product_requests: list[str] = []  # product ids asked of the REST endpoint, in order
        self.increments: dict[str, str] = {}  # product -> its quote_increment (tick size), "0.01" if none
        self.rest_url = ""
        self._runner: web.AppRunner | None = None
        self.snapshot_size = snapshot_size
        self.heartbeat_s = heartbeat_s
        self.history: dict[str, list[dict[str, str]]] = {p: [] for p in self.prices}
        self.trade_ns: dict[tuple[str, int], int] = {}  # (product, trade id) -> its exact time
        self.volume: dict[str, float] = {p: 0.0 for p in self.prices}
        self._next_id = {p: 1000 * (i + 1) for i, p in enumerate(self.prices)}
        self.clock_ns = T0_NS
        self.received: list[Any] = []  # every frame clients sent, decoded when it was JSON
        self.clients: list[Client] = []
        self.handshakes = 0
        self.heartbeats_sent = 0
        self.close_codes: list[int | None] = []  # what each ended connection's client closed it with
        self._refuse: list[int] = []
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> CoinbaseServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        app = web.Application()
        app.router.add_get("/api/v3/brokerage/market/products/{product_id}", self._product)
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.rest_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    def routes(self, app: web.Application) -> None:
        """More REST endpoints on the product endpoint's port (history: tests/servers/coinbase_history)."""

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _product(self, request: web.Request) -> web.Response:
        """Coinbase's "Get Public Product", the fields that matter here (and a few that do not)."""
        product = request.match_info["product_id"]
        self.product_requests.append(product)
        if product not in self.prices and product not in self.aliases:
            return web.json_response({"error": "NOT_FOUND", "error_details": "ProductID not found",
                                      "message": "ProductID not found"}, status=404)
        canonical = self.aliases.get(product, "")
        base, _, quote = product.partition("-")
        return web.json_response({
            "product_id": product, "price": f"{self.prices[self.aliases.get(product, product)]:.2f}",
            "base_currency_id": base, "quote_currency_id": quote, "status": "online",
            "product_type": "SPOT", "alias": canonical,
            "quote_increment": self.increments.get(product, "0.01"),
            "alias_to": sorted(a for a, c in self.aliases.items() if c == product)})

    # --- protocol -----------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self._refuse:
            status = HTTPStatus(self._refuse.pop(0))
            return connection.respond(status, f"{status.value} {status.phrase}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        client = Client(ws)
        self.clients.append(client)
        tasks = [asyncio.create_task(self._deadline(client))]
        if self.heartbeat_s:
            tasks.append(asyncio.create_task(self._beat(client)))
        self._tasks.update(tasks)
        try:
            async for frame in ws:
                if not self._within_rate(client):
                    self.rate_limited += 1
                    await self._error(client, "rate limit exceeded")
                    await ws.close(1008, "rate limit exceeded")
                    break
                await self._on_frame(client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)
            received = ws.protocol.close_rcvd
            self.close_codes.append(None if received is None else received.code)  # None: no close frame
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)

    def _within_rate(self, client: Client) -> bool:
        now = time.monotonic()
        client.frame_times = [t for t in client.frame_times if t > now - 1.0] + [now]
        return len(client.frame_times) <= self.frames_per_s

    async def _deadline(self, client: Client) -> None:
        await asyncio.sleep(self.subscribe_deadline_s)
        if not client.subscribed_once:
            self.deadline_closes += 1
            with contextlib.suppress(ConnectionClosed):
                await client.ws.close(1008, "subscribe timeout")
        self.deadline_checks += 1

    async def _beat(self, client: Client) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s or 1.0)
            with contextlib.suppress(ConnectionClosed):
                await self._heartbeat(client)

    async def _on_frame(self, client: Client, frame: str | bytes) -> None:
        try:
            request = json.loads(frame)
        except ValueError:
            self.received.append(frame)
            await self._raw(client, json.dumps({"type": "error", "message": "malformed request"}))
            return
        self.received.append(request)
        kind = request.get("type") if isinstance(request, dict) else None
        channel = request.get("channel") if isinstance(request, dict) else None
        if kind not in ("subscribe", "unsubscribe") or channel not in CHANNELS:
            await self._error(client, "Failed to subscribe")
            return
        products = list(request.get("product_ids") or [])
        if kind == "subscribe":
            client.subscribed_once = True
        if channel == "heartbeats":  # connection-wide: whatever products it names
            client.heartbeats = kind == "subscribe"
            await self._subscriptions(client)
            return
        unknown = [p for p in products if p not in self.prices and p not in self.aliases]
        if unknown:
            await self._error(client, f"Failed to subscribe: unknown product id {unknown[0]}")
            return
        held = client.subs.setdefault(channel, set())
        if kind == "unsubscribe":
            held.difference_update(products or held)
            await self._subscriptions(client)
            return
        new = [p for p in dict.fromkeys(products) if p not in held]
        held.update(products)
        await self._subscriptions(client)
        new = [self.aliases.get(p, p) for p in new]  # the book each trades on, named as Coinbase sends it
        if channel == "market_trades" and new:
            trades = [t for p in new for t in reversed(self.history[p][-self.snapshot_size:])]
            await self._send(client, "market_trades", [{"type": "snapshot", "trades": trades}])
        elif channel == "ticker" and new:
            await self._send(client, "ticker", [{"type": "snapshot",
                                                 "tickers": [self._ticker(p) for p in new]}])

    def _ticker(self, product: str) -> dict[str, str]:
        price = self.prices[product]
        return {"type": "ticker", "product_id": product, "price": f"{price:.2f}",
                "volume_24_h": f"{self.volume[product]:.8f}", "low_24_h": f"{price * 0.98:.2f}",
                "high_24_h": f"{price * 1.02:.2f}", "low_52_w": f"{price * 0.5:.2f}",
                "high_52_w": f"{price * 1.5:.2f}", "price_percent_chg_24_h": "1.25",
                "best_bid": f"{price - 0.01:.2f}", "best_bid_quantity": "1.50000000",
                "best_ask": f"{price + 0.01:.2f}", "best_ask_quantity": "0.75000000"}

    async def _subscriptions(self, client: Client) -> None:
        held: dict[str, list[str]] = {c: sorted(p) for c, p in client.subs.items() if p}
        if client.heartbeats:
            held["heartbeats"] = []
        await self._send(client, "subscriptions", [{"subscriptions": held}])

    def _envelope(self, client: Client, channel: str, events: list[Any]) -> str:
        message = {"channel": channel, "client_id": "", "timestamp": rfc3339(time.time_ns(), 9),
                   "sequence_num": client.seq, "events": events}
        client.seq += 1
        return json.dumps(message)

    async def _send(self, client: Client, channel: str, events: list[Any]) -> None:
        if not client.stalled:
            text = self._envelope(client, channel, events)
            client.last_sent[channel] = text
            await self._raw(client, text)

    async def _raw(self, client: Client, text: str) -> None:
        if not client.stalled:
            await client.ws.send(text)

    async def _error(self, client: Client, message: str) -> None:
        await self._raw(client, json.dumps({"type": "error", "message": message}))

    async def _heartbeat(self, client: Client) -> None:
        if client.heartbeats and not client.stalled:
            client.heartbeat_counter += 1
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC m=+91717.525857105")
            await self._send(client, "heartbeats", [{"current_time": now,
                                                     "heartbeat_counter": client.heartbeat_counter}])
            self.heartbeats_sent += 1

    def _subscribed(self, channel: str, product: str) -> list[Client]:
        """Clients that receive ``channel`` events of ``product`` (subscribed to it or to an alias of it)."""
        names = {product} | {a for a, c in self.aliases.items() if c == product}
        return [c for c in self.clients if names & c.subs.get(channel, set())]

    # --- trades -------------------------------------------------------------------------------------
    def _make_trade(self, product: str, price: str, size: str, side: str) -> dict[str, str]:
        trade_id = self._next_id[product]
        self._next_id[product] += 1
        self.clock_ns += 1_000_000
        self.trade_ns[(product, trade_id)] = self.clock_ns
        return {"trade_id": str(trade_id), "product_id": product, "price": price, "size": size,
                "side": side, "time": rfc3339(self.clock_ns)}

    def record(self, product: str, rows: list[tuple[str, str, str]]) -> list[dict[str, str]]:
        """Trades that happen with nobody told (as during a client's outage): history only."""
        trades = [self._make_trade(product, *row) for row in rows]
        self.history[product] += trades
        for t in trades:
            self.prices[product] = float(t["price"])
            self.volume[product] += float(t["size"])
        return trades

    async def trades(self, product: str, rows: list[tuple[str, str, str]],
                     newest_first: bool = False) -> list[dict[str, str]]:
        """Trades (price, size, side) in one market_trades update, then a ticker update."""
        trades = self.record(product, rows)
        listed = list(reversed(trades)) if newest_first else trades
        for client in self._subscribed("market_trades", product):
            await self._send(client, "market_trades", [{"type": "update", "trades": listed}])
        for client in self._subscribed("ticker", product):
            await self._send(client, "ticker", [{"type": "update", "tickers": [self._ticker(product)]}])
        return trades

    async def trade(self, product: str, price: str, size: str, side: str = "BUY") -> dict[str, str]:
        return (await self.trades(product, [(price, size, side)]))[0]

    # --- misbehaviour -------------------------------------------------------------------------------
    async def heartbeat(self) -> None:
        for client in list(self.clients):
            await self._heartbeat(client)

    async def garbage(self, kind: str, product: str = "BTC-USD") -> None:
        """Send one bad message to every client. ``truncated`` cuts a real trade message (its trade and
        sequence number are lost, as they would be); the bad trades take a trade id but are not kept."""
        for client in list(self.clients):
            if kind == "malformed":
                await self._raw(client, "this is not json {")
            elif kind == "truncated":
                [trade] = self.record(product, [("123.45", "0.5", "BUY")])
                text = self._envelope(client, "market_trades", [{"type": "update", "trades": [trade]}])
                await self._raw(client, text[: len(text) // 2])
            elif kind == "bad_shape":  # valid JSON, but trades without the fields Coinbase documents
                await self._send(client, "market_trades", [{"type": "update", "trades": [{"id": 1}]}])
            elif kind == "unknown_channel":
                await self._send(client, "level3", [{"type": "update", "orders": []}])
            elif kind in ("negative_price", "nan_price", "unknown_product"):
                name = "DOGE-EUR" if kind == "unknown_product" else product
                price = {"negative_price": "-5.00", "nan_price": "NaN"}.get(kind, "0.08")
                trade = {"trade_id": str(self._next_id.setdefault(name, 1)), "product_id": name,
                         "price": price, "size": "1.0", "side": "SELL", "time": rfc3339(self.clock_ns)}
                self._next_id[name] += 1
                await self._send(client, "market_trades", [{"type": "update", "trades": [trade]}])
            else:
                raise ValueError(f"unknown garbage {kind!r}")

    def skip(self, n: int) -> None:
        """The next message of every client jumps ``n`` sequence numbers (as if ``n`` were lost)."""
        for client in self.clients:
            client.seq += n

    async def replay(self, channel: str) -> None:
        """Send every client its last message on ``channel`` again, sequence number and all."""
        for client in list(self.clients):
            await self._raw(client, client.last_sent[channel])

    async def error(self, message: str) -> None:
        for client in list(self.clients):
            await self._error(client, message)

    async def disconnect(self, code: int = 1011, reason: str = "", abort: bool = False) -> None:
        """Close every connection (``abort``: drop the TCP connection with no close frame)."""
        for client in list(self.clients):
            if abort:
                client.ws.transport.abort()
            else:
                await client.ws.close(code, reason)

    def stall(self) -> None:
        """The current connections go silent (new ones are served normally)."""
        for client in self.clients:
            client.stalled = True

    def resume(self) -> None:
        for client in self.clients:
            client.stalled = False

    def refuse(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` handshakes with an HTTP ``status`` instead of a WebSocket."""
        self._refuse += [status] * times

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)

    def subscribed(self, channel: str, product: str) -> bool:
        return bool(self._subscribed(channel, product))
