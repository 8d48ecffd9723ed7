"""A Binance-protocol REST history on 127.0.0.1, computed from a trade tape: what ``tickdeck bench
--history`` and the history tests fetch from, so the bars and trades it serves are exactly those the
same tape's WebSocket stream delivers.

* ``GET /api/v3/klines`` (weight 2) and ``GET /api/v3/aggTrades`` (weight 4), as Binance's spot REST
  docs describe them (rest-api.md, read 2026-07): klines one per interval from the symbol's first trade
  to the one forming now, intervals without a trade included (their ``number of trades`` 0, the
  previous close as every price); aggregate trades group consecutive trades of one taker order at one
  price and time (``order`` on ``Tape.add``), and their ids are not trade ids (a client that pages
  ``aggTrades`` with trade ids gets the wrong rows, as it would from Binance).
* ``GET /api/v3/exchangeInfo`` (weight 20) with ``symbol`` or ``symbols`` (a JSON array): each symbol's
  record with its ``PRICE_FILTER`` (``tickSize`` from ``tick_sizes``, else 0.01); one unknown symbol
  fails the whole request with HTTP 400 and code -1121, as Binance does.
* Limits as Binance enforces them per IP (one client here): ``REQUEST_WEIGHT`` per minute on the wall
  clock (6,000 by default), ``X-MBX-USED-WEIGHT-1M`` on every answer, 429 with ``Retry-After`` (to the
  end of the minute) and code -1003 past the limit, and 418 (a ban of ``ban_s``, ``Retry-After`` until
  it ends) for a client that sends ``ban_after`` more requests while it is being told 429.
* Misbehaviour on demand (``fail``, one fault per request, in order): an error status with Binance's
  error body, HTML, a garbled body, a partial page, an empty page, rows out of order, a bad row; and
  ``gate`` (requests wait until it is set) and ``lag`` (aggregate trades leave out the newest trades on
  their first answers, as a database behind its stream would).

Volumes are summed as decimals, as Binance does; the tests and the bench use sizes that are multiples of
1/8, so a float sum of the trades equals the float of the decimal sum and bars compare exactly.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

WEIGHTS = {"/api/v3/klines": 2, "/api/v3/aggTrades": 4, "/api/v3/exchangeInfo": 20}
EXCHANGE_INFO = "/api/v3/exchangeInfo"
TICK_SIZE = "0.01000000"  # a symbol's PRICE_FILTER tickSize unless ``RestHistory.tick_sizes`` says
INTERVAL_MS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
               "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
               "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000}
AGG_BASE = 5_000_000  # aggregate ids start here, far from trade ids
FAULTS = ("error", "html", "garbage", "partial", "empty", "disorder", "bad row")
TOO_MUCH = ("Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use "
            "WebSocket Streams for live updates to avoid polling the API.")
BANNED = ("Way too much request weight used; IP banned until {}. Please use WebSocket Streams for live "
          "updates to avoid bans.")


@dataclass(slots=True)
class Aggregate:
    a: int
    first: int
    last: int
    ms: int
    price: str
    qty: Decimal
    maker: bool
    order: int | None


@dataclass
class Series:
    """One symbol's trades (parallel lists, in id order) and their aggregates."""

    ids: list[int] = field(default_factory=list)
    ms: list[int] = field(default_factory=list)
    prices: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    qtys: list[Decimal] = field(default_factory=list)
    makers: list[bool] = field(default_factory=list)
    aggs: list[Aggregate] = field(default_factory=list)
    agg_ms: list[int] = field(default_factory=list)


class Tape:
    """Every trade of every symbol, as made; the REST history is computed from it on each request."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self._next_agg = AGG_BASE

    def add(self, symbol: str, trade_id: int, ms: int, price: str, qty: str, maker: bool,
            order: int | None = None) -> None:
        """One trade (ids increase, times never go back); ``order``: trades of one taker order at one
        price and time share an aggregate."""
        s = self.series.setdefault(symbol.upper(), Series())
        if s.ids and (trade_id <= s.ids[-1] or ms < s.ms[-1]):
            raise ValueError(f"{symbol}: trade {trade_id} at {ms} after {s.ids[-1]} at {s.ms[-1]}")
        s.ids.append(trade_id)
        s.ms.append(ms)
        s.prices.append(price)
        s.values.append(float(price))
        s.qtys.append(Decimal(qty))
        s.makers.append(maker)
        last = s.aggs[-1] if s.aggs else None
        if (last is not None and order is not None and last.order == order and last.price == price
                and last.ms == ms and last.maker == maker and last.last == trade_id - 1):
            last.last = trade_id
            last.qty += Decimal(qty)
            return
        self._next_agg += 1
        s.aggs.append(Aggregate(self._next_agg, trade_id, trade_id, ms, price, Decimal(qty), maker, order))
        s.agg_ms.append(ms)

    def klines(self, symbol: str, step: int, start: int | None, end: int | None, limit: int,
               now_ms: int) -> list[list[Any]]:
        s = self.series.get(symbol)
        if s is None or not s.ms:
            return []
        first, current = s.ms[0] - s.ms[0] % step, now_ms - now_ms % step
        lo = first if start is None else max(first, -(-start // step) * step)
        hi = current if end is None else min(current, end - end % step)
        if hi < lo:
            return []
        count = (hi - lo) // step + 1
        opens = range(lo, hi + 1, step)
        opens = opens[:limit] if start is not None else opens[max(0, count - limit):]
        rows = []
        for t in opens:
            i0, i1 = bisect.bisect_left(s.ms, t), bisect.bisect_left(s.ms, t + step)
            if i1 > i0:
                hi_i = max(range(i0, i1), key=s.values.__getitem__)
                lo_i = min(range(i0, i1), key=s.values.__getitem__)
                o, h, lw, c = s.prices[i0], s.prices[hi_i], s.prices[lo_i], s.prices[i1 - 1]
                vol = sum(s.qtys[i0:i1], Decimal(0))
                quote = sum((Decimal(s.prices[i]) * s.qtys[i] for i in range(i0, i1)), Decimal(0))
                taker = sum((s.qtys[i] for i in range(i0, i1) if not s.makers[i]), Decimal(0))
            else:  # nothing traded: the previous close, no volume
                o = h = lw = c = s.prices[i0 - 1]
                vol = quote = taker = Decimal(0)
            rows.append([t, o, h, lw, c, f"{vol:.8f}", t + step - 1, f"{quote:.8f}", i1 - i0, f"{taker:.8f}",
                         "0", "0"])
        return rows

    def agg_trades(self, symbol: str, from_id: int | None, start: int | None, end: int | None,
                   limit: int, hide: int = 0) -> list[dict[str, Any]]:
        s = self.series.get(symbol)
        if s is None:
            return []
        aggs = s.aggs
        if hide:  # the newest ``hide`` trades not in the database yet
            cut = s.ids[-hide] if hide <= len(s.ids) else -1
            aggs = [a for a in aggs if a.last < cut] if cut >= 0 else []
        if from_id is not None:
            i = bisect.bisect_left([a.a for a in aggs], from_id)
            chosen = [a for a in aggs[i:] if end is None or a.ms <= end][:limit]
        elif start is not None:
            i = bisect.bisect_left(s.agg_ms, start)
            chosen = [a for a in aggs[i:] if end is None or a.ms <= end][:limit]
        else:
            upto = aggs if end is None else [a for a in aggs if a.ms <= end]
            chosen = upto[-limit:]
        return [{"a": a.a, "p": a.price, "q": f"{a.qty:.8f}", "f": a.first, "l": a.last, "T": a.ms,
                 "m": a.maker, "M": True} for a in chosen]


@dataclass
class Fault:
    kind: str  # one of FAULTS
    path: str | None = None  # only requests to this path (None: any) ...
    symbol: str | None = None  # ... for this symbol (None: any)
    status: int = 500
    code: int = -1000
    msg: str = "An unknown error occurred while processing the request."


class RestHistory:
    """The REST side (``start`` it on 127.0.0.1, then point ``feeds.binance.rest_url`` at ``url``)."""

    def __init__(self, tape: Tape, *, now_ms: Callable[[], int] | None = None, limit: int = 6000,
                 window_s: float = 60.0, ban_s: float = 120.0, ban_after: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        self.tape = tape
        self.now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.limit = limit
        self.window_s = window_s
        self.ban_s = ban_s
        self.ban_after = ban_after
        self.clock = clock
        self.url = ""
        self.requests: list[tuple[str, dict[str, str], int]] = []  # path, query, status answered
        self.faults: deque[Fault] = deque()
        self.gate: asyncio.Event | None = None
        self.lag = 0  # aggTrades answers leave out this many newest trades per symbol ...
        self.lagged = 0  # ... for this many answers
        self.lag_symbol = ""  # ... of this symbol only ("": any; the first answers, whichever symbol)
        self.tick_sizes: dict[str, str] = {}  # symbol -> its tickSize; these and the traded ones exist
        self.used = 0
        self.limited = 0  # 429s answered in this window
        self.banned_until = 0.0
        self._window = -1
        self._runner: web.AppRunner | None = None

    def fail(self, kind: str, path: str | None = None, **kw: Any) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        self.faults.append(Fault(kind, path, **kw))

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v3/klines", self._handle)
        app.router.add_get("/api/v3/aggTrades", self._handle)
        app.router.add_get(EXCHANGE_INFO, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _answer(self, path: str, query: dict[str, str], status: int, body: Any, *,
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                content_type: str = "application/json") -> web.Response:
        self.requests.append((path, query, status))
        used = str(self.used)
        head = {"X-MBX-USED-WEIGHT-1M": used, "X-MBX-USED-WEIGHT": used, **(headers or {})}
        data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
        return web.Response(status=status, body=data, headers=head, content_type=content_type)

    async def _handle(self, request: web.Request) -> web.Response:
        path, query = request.path, dict(request.query)
        if self.gate is not None:
            await self.gate.wait()
        now = self.clock()
        if now < self.banned_until:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.banned_until))
            return self._answer(path, query, 418, {"code": -1003, "msg": BANNED.format(until)},
                                headers={"Retry-After": str(math.ceil(self.banned_until - now))})
        window = math.floor(now / self.window_s)
        if window != self._window:
            self._window, self.used, self.limited = window, 0, 0
        weight = WEIGHTS[path]
        if self.used + weight > self.limit:
            self.limited += 1
            if self.limited > self.ban_after:  # kept asking after being told to stop
                self.banned_until = now + self.ban_s
                until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.banned_until))
                return self._answer(path, query, 418, {"code": -1003, "msg": BANNED.format(until)},
                                    headers={"Retry-After": str(math.ceil(self.ban_s))})
            left = (window + 1) * self.window_s - now
            return self._answer(path, query, 429, {"code": -1003, "msg": TOO_MUCH.format(self.limit)},
                                headers={"Retry-After": str(max(1, math.ceil(left)))})
        self.used += weight
        fault = next((f for f in self.faults if f.path in (None, path)
                      and f.symbol in (None, query.get("symbol"))), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.kind == "error":
                return self._answer(path, query, fault.status, {"code": fault.code, "msg": fault.msg})
            if fault.kind == "html":
                page = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
                return self._answer(path, query, fault.status if fault.status != 500 else 200, None, raw=page,
                                    content_type="text/html")
            if fault.kind == "garbage":
                return self._answer(path, query, 200, None, raw=b'[{"a":1,"p":')
        try:
            rows = self._rows(path, query)
        except ValueError as exc:
            code, msg = exc.args
            return self._answer(path, query, 400, {"code": code, "msg": msg})
        if fault is not None:
            rows = _spoil(fault.kind, rows)
        return self._answer(path, query, 200, rows)

    def _rows(self, path: str, q: dict[str, str]) -> Any:
        if path == EXCHANGE_INFO:
            return self._exchange_info(q)
        symbol = q.get("symbol", "")
        if not symbol:
            raise ValueError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or "
                                    "malformed.")
        if symbol not in self.tape.series:
            raise ValueError(-1121, "Invalid symbol.")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
            from_id = int(q["fromId"]) if "fromId" in q else None
        except ValueError:
            raise ValueError(-1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= 1000:
            raise ValueError(-1130, "Data sent for parameter 'limit' is not valid.")
        if path == "/api/v3/klines":
            step = INTERVAL_MS.get(q.get("interval", ""))
            if step is None:
                raise ValueError(-1120, "Invalid interval.")
            return self.tape.klines(symbol, step, start, end, limit, self.now_ms())
        hide = 0
        if self.lagged > 0 and self.lag_symbol in ("", symbol):
            self.lagged -= 1
            hide = self.lag
        return self.tape.agg_trades(symbol, from_id, start, end, limit, hide)

    def _exchange_info(self, q: dict[str, str]) -> dict[str, Any]:
        """``symbol=X`` or ``symbols=["X","Y"]`` (a JSON array); one unknown symbol fails the request."""
        if "symbol" in q and "symbols" in q:
            raise ValueError(-1128, "Combination of optional parameters invalid.")
        try:
            names = [q["symbol"]] if "symbol" in q else json.loads(q["symbols"]) if "symbols" in q else None
        except ValueError:
            raise ValueError(-1100, "Illegal characters found in parameter 'symbols'.") from None
        known = {**dict.fromkeys(self.tape.series, TICK_SIZE), **self.tick_sizes}
        if names is None:
            names = list(known)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(-1100, "Illegal characters found in parameter 'symbols'.")
        if any(n not in known for n in names):
            raise ValueError(-1121, "Invalid symbol.")
        return {"timezone": "UTC", "serverTime": self.now_ms(),
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": self.limit}],
                "exchangeFilters": [], "symbols": [_symbol_info(n, known[n]) for n in dict.fromkeys(names)]}


def _symbol_info(symbol: str, tick: str) -> dict[str, Any]:
    """A symbol's record in exchangeInfo, the fields Binance documents (rest-api.md, "Exchange
    information"), trimmed to those a market-data client reads plus a few it skips."""
    return {"symbol": symbol, "status": "TRADING", "baseAsset": symbol[:-4] or symbol, "quoteAsset": "USDT",
            "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "permissionSets": [["SPOT"]],
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
                 "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                 "stepSize": "0.00001000"},
            ]}


def _spoil(kind: str, rows: list[Any]) -> list[Any]:
    """The page ``rows`` as a faulty server would send it."""
    if kind == "partial":
        return rows[: len(rows) // 2]
    if kind == "empty":
        return []
    if kind == "disorder" and len(rows) >= 2:
        return [rows[1], rows[0], *rows[2:]]
    if kind == "bad row" and rows:
        row = rows[0]
        bad = [row[0], "NaN", *row[2:]] if isinstance(row, list) else {**row, "p": "-1"}
        return [bad, *rows[1:]]
    return rows
