"""A loopback OKX: the v5 public WebSocket (``trades`` channel) and the public REST endpoints ccxt uses.

Followed (okx.com/docs-v5/en, "WebSocket: Connect, Subscribe", "Trades channel", "Get instruments",
"Get candlesticks", "Get candlesticks history", "Rate limits", "Error codes"; and ccxt's ``okx`` and
``pro/okx`` 4.5, which read them):

- WebSocket ``/ws/v5/public``: ``{"op": "subscribe", "args": [{"channel": "trades", "instId":
  "BTC-USDT"}]}`` is answered ``{"event": "subscribe", "arg": {...}, "connId": ...}``, an instrument OKX
  does not list with ``{"event": "error", "code": "60018", "msg": "... doesn't exist", "connId": ...}``.
  Pushes are ``{"arg": {...}, "data": [{instId, tradeId, px, sz, side, ts, count}]}``, numbers as
  strings, ``ts`` in ms. No snapshot is sent on subscribing. Keepalive is text: the client sends
  ``ping`` and gets ``pong``; the docs say a connection is closed when nothing has passed for 30 s
  ("If there's no message within 30 seconds, the connection will be closed"): ``idle_close_s``.
  Connecting too often is answered at the handshake with HTTP 429 ("Connection limit: 3 requests per
  second").
- REST: answers are ``{"code": "0", "msg": "", "data": [...]}``; ``/api/v5/public/instruments?instType=``
  lists the spot instruments (the other types are empty here). ``/api/v5/market/candles`` (at most 300 rows,
  ``limit`` default 100) and ``/api/v5/market/history-candles`` (at most 100) take ``instId``, ``bar``
  (``1s``, ``1m``, ``1H``, ...: the docs list ``1s``, which ccxt's table lacks; a test adds it through the
  constructor's ``timeframes``), ``after`` (rows older than it, ms) and ``before`` (newer than it); rows are
  ``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`` as strings, newest first, ``confirm`` "0" for the
  forming bar. A rate limit is HTTP 429 with ``{"code": "50011", "msg": "Too Many Requests"}`` (ccxt:
  ``RateLimitExceeded``); an unknown instrument is ``{"code": "51001", "msg": "Instrument ID does not
  exist"}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.servers.exchange import Peer, StandIn, Trade

PRICES = {"BTC/USDT": 37000.0, "ETH/USDT": 2000.0}
BARS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1H": 3600, "2H": 7200, "4H": 14400}


def inst_id(symbol: str) -> str:
    return symbol.replace("/", "-")


class OkxServer(StandIn):
    ws_path = "/ws/v5/public"

    def __init__(self, prices: dict[str, float] | None = None, idle_close_s: float = 30.0) -> None:
        super().__init__(prices or PRICES)
        self.idle_close_s = idle_close_s
        self.pings = 0

    def options(self) -> dict[str, Any]:
        """What ``feeds.ccxt.options`` points ccxt's okx at this server with (ccxt appends ``/public``)."""
        return {"urls": {"api": {"rest": self.http_url, "ws": self.ws_url.removesuffix("/public")}},
                "options": {"fetchMarkets": {"types": ["spot"]}}}

    # --- WebSocket ----------------------------------------------------------------------------------
    async def on_open(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        peer_state: dict[str, float] = {"last": loop.time()}
        peer.idle = peer_state  # type: ignore[attr-defined]

        async def watchdog() -> None:
            while not peer.ws.closed:
                await asyncio.sleep(min(1.0, self.idle_close_s / 4))
                if loop.time() - peer_state["last"] > self.idle_close_s:
                    await peer.ws.close(code=4004, message=b"No data received in 30s.")
                    return

        task = loop.create_task(watchdog())
        peer.ws._okx_watchdog = task  # type: ignore[attr-defined]  # kept alive with the connection

    async def on_text(self, peer: Peer, text: str) -> None:
        peer.idle["last"] = asyncio.get_running_loop().time()  # type: ignore[attr-defined]
        if text == "ping":
            self.pings += 1
            await self.send(peer, "pong")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            await self.send(peer, json.dumps({"event": "error", "code": "60012",
                                              "msg": f"Illegal request: {text[:100]}", "connId": "c1"}))
            return
        op = msg.get("op")
        for arg in msg.get("args") or []:
            channel, inst = arg.get("channel"), arg.get("instId", "")
            symbol = inst.replace("-", "/")
            if op not in ("subscribe", "unsubscribe") or channel != "trades" or symbol not in self.tape:
                await self.send(peer, json.dumps({
                    "event": "error", "code": "60018",
                    "msg": f"Wrong URL or channel:{channel},instId:{inst} doesn't exist.", "connId": "c1"}))
                continue
            if op == "subscribe":
                peer.subs.add(symbol)
            else:
                peer.subs.discard(symbol)
            await self.send(peer, json.dumps({"event": op, "arg": {"channel": "trades", "instId": inst},
                                              "connId": "c1"}))

    def trade_frames(self, symbol: str, trades: list[Trade], snapshot: bool = False) -> list[str]:
        inst = inst_id(symbol)
        data = [{"instId": inst, "tradeId": str(t.id), "px": f"{t.price}", "sz": f"{t.size}", "side": t.side,
                 "ts": str(t.ts_ns // 1_000_000), "count": "1"} for t in trades]
        return [json.dumps({"arg": {"channel": "trades", "instId": inst}, "data": data})]

    # --- REST -------------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v5/public/instruments", self._instruments)
        app.router.add_get("/api/v5/market/candles", self._candles)
        app.router.add_get("/api/v5/market/history-candles", self._history_candles)

    def _limited(self, path: str) -> web.Response | None:
        self.count(path)
        if self.refused_rest:
            self.refused_rest.pop(0)
            return web.json_response({"code": "50011", "msg": "Too Many Requests", "data": []}, status=429)
        return None

    async def _instruments(self, request: web.Request) -> web.Response:
        if (limited := self._limited("instruments")) is not None:
            return limited
        if request.query.get("instType") != "SPOT":
            return web.json_response({"code": "0", "msg": "", "data": []})
        data = [{"instType": "SPOT", "instId": inst_id(s), "uly": "", "instFamily": "",
                 "baseCcy": s.split("/")[0], "quoteCcy": s.split("/")[1], "settleCcy": "", "ctValCcy": "",
                 "optType": "", "stk": "", "listTime": "1606468572000", "expTime": "", "lever": "10",
                 "tickSz": "0.1", "lotSz": "0.00000001", "minSz": "0.00001", "ctType": "", "alias": "",
                 "state": "live", "ctVal": "", "ctMult": "", "maxLmtSz": "9999999999", "maxMktSz": "1000000",
                 "ruleType": "normal"} for s in self.tape]
        return web.json_response({"code": "0", "msg": "", "data": data})

    async def _candles(self, request: web.Request) -> web.Response:
        return self._bars(request, "candles", 300)

    async def _history_candles(self, request: web.Request) -> web.Response:
        return self._bars(request, "history-candles", 100)

    def _bars(self, request: web.Request, path: str, most: int) -> web.Response:
        if (limited := self._limited(path)) is not None:
            return limited
        q = request.query
        symbol = q.get("instId", "").replace("-", "/")
        if symbol not in self.tape:
            return web.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        seconds = BARS.get(q.get("bar", "1m"))
        try:
            limit = min(int(q.get("limit", "100")), most)
            after = int(q["after"]) if "after" in q else None
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            return web.json_response({"code": "51000", "msg": "Parameter error", "data": []}, status=400)
        if seconds is None:
            return web.json_response({"code": "51000", "msg": "Parameter bar error", "data": []}, status=400)
        step_ms = seconds * 1000
        now_ms = time.time_ns() // 1_000_000
        rows = []
        for t, o, h, lo, c, v, _ in reversed(self.bars(symbol, seconds)):
            ms = t * 1000
            if (after is not None and ms >= after) or (before is not None and ms <= before):
                continue
            confirm = "0" if ms + step_ms > now_ms else "1"
            rows.append([str(ms), f"{o}", f"{h}", f"{lo}", f"{c}", f"{v}", f"{v * c}", f"{v * c}", confirm])
            if len(rows) >= limit:
                break
        return web.json_response({"code": "0", "msg": "", "data": rows})
