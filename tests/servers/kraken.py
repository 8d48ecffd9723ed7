"""A loopback Kraken: Spot WebSocket v2 (``trade`` channel) and the public REST endpoints ccxt uses.

Followed (docs.kraken.com, "Spot WebSocket v2": connection, ``trade``, ``heartbeat``, ``ping``; "Spot
REST": ``Assets``, ``AssetPairs``, ``OHLC``; and ccxt's ``kraken`` and ``pro/kraken`` 4.5, which read them):

- WebSocket ``/v2``: a ``status`` update on connect; ``{"method": "subscribe", "params": {"channel":
  "trade", "symbol": [...], "snapshot": true}, "req_id": n}`` is acknowledged per symbol (``success``,
  ``result``, ``time_in``, ``time_out``), then a ``snapshot`` of the symbol's last 50 trades and
  ``update`` messages, each trade ``{symbol, side, price, qty, ord_type, trade_id, timestamp}`` with
  numbers as JSON numbers and RFC 3339 times. ``trade_id`` counts the trades of a book one by one (v2's
  "sequential int"). A symbol Kraken does not list is refused: ``success: false`` and ``error: "Currency
  pair not supported ..."``. ``{"method": "ping"}`` is answered with ``{"method": "pong"}`` (with its
  ``req_id``); once subscribed, ``{"channel": "heartbeat"}`` about every second (``heartbeat_s``).
- REST ``/0/public/...``: every answer is ``{"error": [...], "result": ...}`` with HTTP 200. ``OHLC``
  takes ``pair`` (the pair's key, ``XXBTZUSD``), ``interval`` in minutes and ``since`` in seconds; rows are
  ``[time, open, high, low, close, vwap, volume, count]`` with prices as strings, at most 720 of them,
  the newest last and the forming interval always included ("the last entry ... is for the current,
  not-yet-committed frame"). The docs do not say whether ``since`` is inclusive: bars opening after it
  are answered, as ccxt asks from one interval before the one it wants. A rate limit is answered as
  Kraken does, HTTP 200 with ``{"error": ["EAPI:Rate limit exceeded"]}`` (ccxt: ``DDoSProtection``).

``python -m tests.servers.kraken --port 8765`` runs it as a process with a seeded history and a steady
tape of trades, for trying ``tickdeck --feed ccxt:kraken`` by hand (it prints the config to use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.servers.exchange import Peer, StandIn, Trade

# unified symbol -> (Kraken's pair key, base asset, quote asset, wsname)
PAIRS = {"BTC/USD": ("XXBTZUSD", "XXBT", "ZUSD", "XBT/USD"),
         "ETH/USD": ("XETHZUSD", "XETH", "ZUSD", "ETH/USD"),
         "SOL/USD": ("SOLUSD", "SOL", "ZUSD", "SOL/USD")}
PRICES = {"BTC/USD": 37000.0, "ETH/USD": 2000.0, "SOL/USD": 55.0}
ASSETS = {"XXBT": "XBT", "XETH": "ETH", "SOL": "SOL", "ZUSD": "USD"}


def rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


class KrakenServer(StandIn):
    ws_path = "/v2"

    def __init__(self, prices: dict[str, float] | None = None, heartbeat_s: float | None = 1.0) -> None:
        super().__init__(prices or PRICES)
        self.heartbeat_s = heartbeat_s
        self._beats: set[asyncio.Task[None]] = set()

    def options(self) -> dict[str, Any]:
        """What ``feeds.ccxt.options`` points ccxt's kraken at this server with."""
        return {"urls": {"api": {"public": self.http_url, "ws": {"publicV2": self.ws_url}}}}

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._beats):
            task.cancel()
        await super().__aexit__(*exc)

    # --- WebSocket v2 -----------------------------------------------------------------------------
    async def on_open(self, peer: Peer) -> None:
        status = {"version": "2.0.0", "system": "online", "api_version": "v2",
                  "connection_id": self.connections}
        await self.send(peer, json.dumps({"channel": "status", "type": "update", "data": [status]}))

    async def on_text(self, peer: Peer, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            await self.send(peer, json.dumps({"error": "Malformed request", "success": False}))
            return
        method, req_id = msg.get("method"), msg.get("req_id")
        now = rfc3339(self._now())
        if method == "ping":
            await self.send(peer, json.dumps({"method": "pong", "req_id": req_id, "time_in": now,
                                              "time_out": now}))
            return
        params = msg.get("params") or {}
        if method not in ("subscribe", "unsubscribe") or params.get("channel") != "trade":
            await self.send(peer, json.dumps({"error": "Unsupported request", "method": method,
                                              "success": False, "req_id": req_id}))
            return
        for symbol in params.get("symbol") or []:
            if symbol not in self.tape:
                await self.send(peer, json.dumps({
                    "error": f"Currency pair not supported {symbol}", "method": method, "req_id": req_id,
                    "success": False, "symbol": symbol, "time_in": now, "time_out": now}))
                continue
            await self.send(peer, json.dumps({
                "method": method, "req_id": req_id, "success": True, "time_in": now, "time_out": now,
                "result": {"channel": "trade", "snapshot": params.get("snapshot", True), "symbol": symbol}}))
            if method == "unsubscribe":
                peer.subs.discard(symbol)
                continue
            peer.subs.add(symbol)
            if params.get("snapshot", True) and self.tape[symbol]:
                for frame in self.trade_frames(symbol, self.tape[symbol][-50:], snapshot=True):
                    await self.send(peer, frame)
            if self.heartbeat_s and len(peer.subs) == 1:
                task = asyncio.get_running_loop().create_task(self._beat(peer))
                self._beats.add(task)
                task.add_done_callback(self._beats.discard)

    async def _beat(self, peer: Peer) -> None:
        assert self.heartbeat_s
        while not peer.ws.closed and peer in self.peers:
            await asyncio.sleep(self.heartbeat_s)
            await self.send(peer, '{"channel":"heartbeat"}')

    def _now(self) -> int:
        import time

        return time.time_ns()

    def trade_frames(self, symbol: str, trades: list[Trade], snapshot: bool = False) -> list[str]:
        data = [{"symbol": symbol, "side": t.side, "price": t.price, "qty": t.size, "ord_type": "market",
                 "trade_id": t.id, "timestamp": rfc3339(t.ts_ns)} for t in trades]
        return [json.dumps({"channel": "trade", "type": "snapshot" if snapshot else "update", "data": data})]

    # --- REST -------------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_get("/0/public/Assets", self._assets)
        app.router.add_get("/0/public/AssetPairs", self._asset_pairs)
        app.router.add_get("/0/public/OHLC", self._ohlc)

    def _limited(self, path: str) -> web.Response | None:
        self.count(path)
        if self.refused_rest:
            self.refused_rest.pop(0)
            return web.json_response({"error": ["EAPI:Rate limit exceeded"]})
        return None

    async def _assets(self, request: web.Request) -> web.Response:
        if (limited := self._limited("Assets")) is not None:
            return limited
        return web.json_response({"error": [], "result": {
            key: {"aclass": "currency", "altname": alt, "decimals": 10, "display_decimals": 5,
                  "collateral_value": 1.0, "status": "enabled"} for key, alt in ASSETS.items()}})

    async def _asset_pairs(self, request: web.Request) -> web.Response:
        if (limited := self._limited("AssetPairs")) is not None:
            return limited
        result = {}
        for symbol, (key, base, quote, wsname) in PAIRS.items():
            if symbol not in self.tape:
                continue
            result[key] = {"altname": key.replace("X", "", 1) if key.startswith("XX") else key,
                           "wsname": wsname, "aclass_base": "currency", "base": base,
                           "aclass_quote": "currency", "quote": quote, "lot": "unit", "cost_decimals": 5,
                           "pair_decimals": 2, "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [],
                           "leverage_sell": [], "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]],
                           "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
                           "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.01", "status": "online"}
        return web.json_response({"error": [], "result": result})

    async def _ohlc(self, request: web.Request) -> web.Response:
        if (limited := self._limited("OHLC")) is not None:
            return limited
        key = request.query.get("pair", "")
        symbol = next((s for s, p in PAIRS.items() if p[0] == key and s in self.tape), None)
        if symbol is None:
            return web.json_response({"error": ["EQuery:Unknown asset pair"]})
        try:
            minutes = int(request.query.get("interval", "1"))
            since = int(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": ["EGeneral:Invalid arguments"]})
        rows = [[t, f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{c:.2f}", f"{v:.8f}", n]
                for t, o, h, lo, c, v, n in self.bars(symbol, minutes * 60) if t > since][-720:]
        last = rows[-1][0] if rows else since
        return web.json_response({"error": [], "result": {key: rows, "last": last}})


    async def flood(self, symbols: list[str], n: int) -> int:
        """Send ``n`` trades round robin over ``symbols``, one a frame, to their subscribers as fast as the
        connections take them (``tickdeck bench --feeds``); the frames sent. Written by hand and kept
        off the tape, so this process is not the bottleneck."""
        sent = 0
        stamp = rfc3339(self._now())
        next_id = {s: 1 for s in symbols}
        for i in range(n):
            symbol = symbols[i % len(symbols)]
            tid = next_id[symbol]
            next_id[symbol] = tid + 1
            text = (f'{{"channel":"trade","type":"update","data":[{{"symbol":"{symbol}","side":"buy",'
                    f'"price":{100.0 + (i % 97) * 0.01:.2f},"qty":0.01,"ord_type":"market","trade_id":{tid},'
                    f'"timestamp":"{stamp}"}}]}}')
            for peer in list(self.peers):
                if symbol in peer.subs and not peer.ws.closed:
                    await peer.ws.send_str(text)
                    sent += 1
        return sent


async def _flood(symbols: list[str], n: int) -> None:
    server = KrakenServer(prices={s: 100.0 for s in symbols}, heartbeat_s=None)
    server.compress = False  # as the Binance flood: the client's decoding is measured, not zlib
    async with server:
        print(server.http_url, flush=True)
        await server.until(lambda: all(server.subscribed(s) for s in symbols), timeout=60.0)
        await server.flood(symbols, n)
        await server.until(lambda: not server.peers, timeout=600.0)  # the client hangs up


async def _serve(port: int, rate: float) -> None:
    server = KrakenServer()
    server.port = port
    for symbol in server.tape:
        server.seed(symbol, minutes=600, every_s=30)
    async with server:
        options = server.options()
        print("Kraken stand-in on", server.http_url, flush=True)
        print("save this as kraken-standin.toml, then: "
              "tickdeck --feed ccxt:kraken --config kraken-standin.toml", flush=True)
        toml = ("[feeds.ccxt]\nsymbols = [\"BTC/USD\", \"ETH/USD\", \"SOL/USD\"]\n"
                f"[feeds.ccxt.options.urls.api]\npublic = \"{options['urls']['api']['public']}\"\n"
                f"[feeds.ccxt.options.urls.api.ws]\npublicV2 = \"{server.ws_url}\"\n")
        print(toml, flush=True)
        rng = random.Random(5)
        while True:
            await asyncio.sleep(1.0 / rate)
            symbol = rng.choice(list(server.tape))
            price = round(server.prices[symbol] * (1 + rng.gauss(0, 0.0005)), 2)
            await server.trade(symbol, price, round(rng.uniform(0.01, 1.0), 4), rng.choice(("buy", "sell")))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.kraken")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=5.0, help="trades a second across the pairs")
    parser.add_argument("--flood", type=int, metavar="N", help="print the URL, wait for a client subscribed "
                        "to every --symbols, send N trades as fast as it takes them (tickdeck bench --feeds)")
    parser.add_argument("--symbols", default="BTC/USD,ETH/USD,SOL/USD")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.flood:
            asyncio.run(_flood([s for s in args.symbols.split(",") if s], args.flood))
        else:
            asyncio.run(_serve(args.port, args.rate))


if __name__ == "__main__":
    main()
