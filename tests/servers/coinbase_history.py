"""The Coinbase stand-in with a past: ``CoinbaseServer``'s WebSocket and product endpoint, and on the same
REST port the public history, computed from the trades the server made (every one, sent or not), so what
REST says happened is what ``market_trades`` carried.

* ``GET /api/v3/brokerage/market/products/{id}/candles?start&end&granularity``: one candle per bucket with
  a trade, ``[start, end]`` inclusive (UNIX seconds), newest first, every field a string, the forming
  bucket included; a granularity Coinbase does not offer, or a span of more than 350 buckets, is refused
  with HTTP 400 and the service's ``INVALID_ARGUMENT`` body.
* ``GET /api/v3/brokerage/market/products/{id}/ticker?limit&start&end``: the newest trades with a time in
  ``[start, end]`` (seconds; ``end`` through its whole second), at most 100 whatever ``limit`` asks
  (more than 1,000 is a 500), newest first, no cursor; ``lag`` leaves the newest trades out of the first
  answers, as a database behind its stream would.
* An alias (``aliases``) is served the canonical book's history under the alias's id; an unknown product
  is a 404 ``NOT_FOUND``.
* Coinbase's public limit, 10 requests a second per IP (one client here; a sliding second), answered
  past it with HTTP 429 and Coinbase's error body.
* Faults on demand (``fail``, one per request, in order): an error status, HTML, a body cut short, an
  empty page, rows in the wrong order, a bad row, a row twice, a 429; ``gate`` holds every request.

The test owns the clock: ``trade(..., at_ns=...)`` stamps a trade; the REST side's "now" (which bucket is
forming) is the newest trade's time unless ``now_ns`` is set. ``dropping`` holds products whose trades are
made (and served by REST) but not sent on the WebSocket: a gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.servers.coinbase import CoinbaseServer

NS = 1_000_000_000
GRANULARITY = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900, "THIRTY_MINUTE": 1800,
               "ONE_HOUR": 3600, "TWO_HOUR": 7200, "SIX_HOUR": 21600, "ONE_DAY": 86400}
PREFIX = "/api/v3/brokerage/market/products/"
FAULTS = ("error", "html", "cut", "empty", "disorder", "bad row", "twice", "429")
TOO_MANY = "number of candles requested should be less than 350"


@dataclass
class Fault:
    kind: str
    endpoint: str | None = None  # "candles" or "ticker" (None: either) ...
    product: str | None = None  # ... for this product (None: any)
    status: int = 500


class CoinbaseHistoryServer(CoinbaseServer):
    """``async with CoinbaseHistoryServer() as server``: ``server.url`` (WebSocket), ``server.rest_url``."""

    def __init__(self, *, requests_per_s: int = 10, **kw: Any) -> None:
        super().__init__(**kw)
        self.requests_per_s = requests_per_s
        self.now_ns: int | None = None
        self.dropping: set[str] = set()
        self.requests: list[tuple[str, str, dict[str, str], int]] = []  # endpoint, product, query, status
        self.faults: deque[Fault] = deque()
        self.gate: asyncio.Event | None = None
        self.lag = 0  # ticker answers leave out this many newest trades ...
        self.lagged = 0  # ... for this many answers
        self.lag_product = ""  # ... of this product only ("": any; the first answers, whichever product)
        self.limited = 0  # 429s answered for the rate
        self._arrivals: deque[float] = deque()

    # --- the test's side --------------------------------------------------------------------------
    async def trade(self, product: str, price: str, size: str, side: str = "BUY", *,
                    at_ns: int | None = None) -> dict[str, str]:
        """The next trade of ``product`` (at ``at_ns``, else 1 ms after the last), on the record and,
        unless the product is being dropped, on the WebSocket."""
        if at_ns is not None:
            self.clock_ns = at_ns - 1_000_000  # _make_trade adds 1 ms
        if product in self.dropping:
            return self.record(product, [(price, size, side)])[0]
        return (await self.trades(product, [(price, size, side)]))[0]

    def fail(self, kind: str, endpoint: str | None = None, product: str | None = None,
             status: int = 500) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        self.faults.append(Fault(kind, endpoint, product, status))

    def count(self, endpoint: str, product: str | None = None) -> int:
        return sum(1 for e, p, _, _ in self.requests if e == endpoint and product in (None, p))

    def now(self) -> int:
        if self.now_ns is not None:
            return self.now_ns
        newest = [self.trade_ns[(p, int(t[-1]["trade_id"]))] for p, t in self.history.items() if t]
        return max(newest, default=self.clock_ns)

    # --- serving ----------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_get(PREFIX + "{product_id}/candles", self._candles)
        app.router.add_get(PREFIX + "{product_id}/ticker", self._market_trades)

    def _reply(self, endpoint: str, product: str, query: dict[str, str], status: int, body: Any = None, *,
                raw: bytes | None = None, content_type: str = "application/json") -> web.Response:
        self.requests.append((endpoint, product, query, status))
        data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
        return web.Response(status=status, body=data, content_type=content_type)

    def _rest_error(self, endpoint: str, product: str, query: dict[str, str], status: int, error: str,
               details: str) -> web.Response:
        return self._reply(endpoint, product, query, status,
                            {"error": error, "error_details": details, "message": details})

    async def _begin(self, request: web.Request,
                     endpoint: str) -> tuple[str, dict[str, str], web.Response | None, Fault | None]:
        """The product and query of a request, and the answer that replaces the normal one (the rate
        limit, an unknown product, a fault), if any."""
        product, query = request.match_info["product_id"], dict(request.query)
        if self.gate is not None:
            await self.gate.wait()
        now = time.monotonic()
        while self._arrivals and self._arrivals[0] <= now - 1.0:
            self._arrivals.popleft()
        self._arrivals.append(now)
        if len(self._arrivals) > self.requests_per_s:
            self.limited += 1
            return product, query, self._rest_error(endpoint, product, query, 429, "RATE_LIMIT_EXCEEDED",
                                               "Too many requests"), None
        if product not in self.prices and product not in self.aliases:
            return product, query, self._rest_error(endpoint, product, query, 404, "NOT_FOUND",
                                               "ProductID not found"), None
        fault = next((f for f in self.faults
                      if f.endpoint in (None, endpoint) and f.product in (None, product)), None)
        if fault is None:
            return product, query, None, None
        self.faults.remove(fault)
        if fault.kind == "error":
            return product, query, self._rest_error(endpoint, product, query, fault.status, "INTERNAL",
                                               "internal error"), None
        if fault.kind == "429":
            return product, query, self._rest_error(endpoint, product, query, 429, "RATE_LIMIT_EXCEEDED",
                                               "Too many requests"), None
        if fault.kind == "html":
            page = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
            return product, query, self._reply(endpoint, product, query, fault.status if fault.status != 500
                                               else 200, raw=page, content_type="text/html"), None
        return product, query, None, fault

    def _finish(self, endpoint: str, product: str, query: dict[str, str], key: str, rows: list[Any],
                fault: Fault | None, extra: dict[str, Any] | None = None) -> web.Response:
        if fault is not None:
            if fault.kind == "empty":
                rows = []
            elif fault.kind == "disorder" and len(rows) >= 2:
                rows = [rows[1], rows[0], *rows[2:]]
            elif fault.kind == "bad row" and rows:
                rows = [{**rows[0], "high" if key == "candles" else "price": "NaN"}, *rows[1:]]
            elif fault.kind == "twice" and rows:
                rows = [rows[0], *rows]
        body = json.dumps({key: rows, **(extra or {})}, separators=(",", ":")).encode()
        if fault is not None and fault.kind == "cut":
            body = body[: len(body) // 2]
        return self._reply(endpoint, product, query, 200, raw=body)

    async def _candles(self, request: web.Request) -> web.Response:
        product, query, refused, fault = await self._begin(request, "candles")
        if refused is not None:
            return refused
        step = GRANULARITY.get(query.get("granularity", ""))
        if step is None:
            return self._rest_error("candles", product, query, 400, "INVALID_ARGUMENT",
                               "granularity argument is invalid")
        try:
            start, end = int(query["start"]), int(query["end"])
        except (KeyError, ValueError):
            return self._rest_error("candles", product, query, 400, "INVALID_ARGUMENT",
                               "start and end argument is invalid")
        if end < start or (end - start) // step + 1 > 350:
            return self._rest_error("candles", product, query, 400, "INVALID_ARGUMENT",
                               f"start and end argument is invalid - {TOO_MANY}")
        book = self.aliases.get(product, product)
        now = self.now() // NS
        buckets: dict[int, list[tuple[str, Decimal]]] = {}
        for t in self.history[book]:
            ns = self.trade_ns[(book, int(t["trade_id"]))]
            b = ns // NS - ns // NS % step
            if start <= b <= end and b <= now:
                buckets.setdefault(b, []).append((t["price"], Decimal(t["size"])))
        rows = []
        for b in sorted(buckets, reverse=True):
            trades = buckets[b]
            prices = [p for p, _ in trades]
            rows.append({"start": str(b), "low": min(prices, key=float), "high": max(prices, key=float),
                         "open": prices[0], "close": prices[-1],
                         "volume": f"{sum((q for _, q in trades), Decimal(0)):.8f}"})
        return self._finish("candles", product, query, "candles", rows, fault)

    async def _market_trades(self, request: web.Request) -> web.Response:
        product, query, refused, fault = await self._begin(request, "ticker")
        if refused is not None:
            return refused
        try:
            limit = int(query["limit"])
            start = int(query["start"]) * NS if "start" in query else 0
            end = (int(query["end"]) + 1) * NS if "end" in query else 2**63
        except (KeyError, ValueError):
            return self._rest_error("ticker", product, query, 400, "INVALID_ARGUMENT",
                               "limit argument is invalid")
        if limit > 1000:
            return self._rest_error("ticker", product, query, 500, "INTERNAL", "internal error")
        book = self.aliases.get(product, product)
        trades = self.history[book]
        if self.lagged > 0 and self.lag_product in ("", book):
            self.lagged -= 1
            trades = trades[: max(0, len(trades) - self.lag)]
        inside = [t for t in trades if start <= self.trade_ns[(book, int(t["trade_id"]))] < end]
        rows = [{**t, "product_id": product, "bid": "", "ask": "", "exchange": "coinbase"}
                for t in reversed(inside[-min(limit, 100):])] if limit > 0 else []
        price = self.prices[book]
        return self._finish("ticker", product, query, "trades", rows, fault,
                            {"best_bid": f"{price - 0.01:.2f}", "best_ask": f"{price + 0.01:.2f}"})
