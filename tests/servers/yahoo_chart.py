"""The Yahoo stand-in with a past: ``YahooServer``'s quotes and handshake, its quotes now read from a
tape of prices (``tick``), and on the same port the chart endpoint, ``GET /v8/finance/chart/{symbol}``,
computing its bars from that tape, so the chart says what the quotes (and, pushed by a test from the
same tape, the streamer) showed.

* A quote is the tape's latest point at the server's "now" (``now_s``): ``regularMarketTime`` (s), price,
  and the day's volume so far; a bar is the points in its interval (open, high, low, close; its volume the
  day volume added in it). Rows come ascending, an interval with no point in a session a row of nulls,
  the latest point appended after ``period2`` when it lies there (as Yahoo does); ``meta`` carries the
  exchange's time zone and the regular sessions (``sessions``; None: around the clock). A 1d row's time
  is its session's open. ``leak`` sends the points outside the sessions too, as Yahoo sometimes does.
* Yahoo's range limits, with its 422 answer and words: 1m at most 7 days a request and within the last
  30 days; 2m to 90m within 60 days; 60m and 1h within 730 days; an unknown interval is a 400; an unknown
  symbol a 404 "No data found, symbol may be delisted".
* Like the quotes: 429 to a client that does not look like a browser, 401 without the cookie and crumb.
* Faults on demand (``fail_chart``, in order): an error status with Yahoo's body, HTML, a body cut short, an
  empty range, two rows swapped, a row twice, a bad row; ``gate`` holds every chart request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.servers.yahoo import State, YahooServer

DAY = 86_400
STEP = {"1m": 60, "2m": 120, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600, "90m": 5400, "1h": 3600,
        "1d": DAY}
VALID = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "1d", "5d", "1wk", "1mo", "3mo")
MAX_AGE = {"1m": 30, "2m": 60, "5m": 60, "15m": 60, "30m": 60, "90m": 60, "60m": 730, "1h": 730}
FAULTS = ("error", "html", "cut", "empty", "disorder", "twice", "bad row")


@dataclass
class Fault:
    kind: str
    symbol: str | None = None
    status: int = 500


def chart_error(code: str, description: str) -> dict[str, Any]:
    return {"chart": {"result": None, "error": {"code": code, "description": description}}}


class YahooHistoryServer(YahooServer):
    """``async with YahooHistoryServer(now_s=...) as server``; ``server.url`` serves quotes and charts."""

    def __init__(self, *, now_s: Callable[[], float] = time.time,
                 sessions: list[tuple[int, int]] | None = None, **kw: Any) -> None:
        super().__init__(market={}, **kw)
        self.now_s = now_s
        self.sessions = sessions
        self.tape: dict[str, list[tuple[int, float, int]]] = {}  # symbol -> (time ms, price, day volume)
        self.charts: list[dict[str, str]] = []  # the query of every chart request (symbol added)
        self.chart_faults: deque[Fault] = deque()
        self.gate: asyncio.Event | None = None
        self.leak = False

    def tick(self, symbol: str, t_ms: int, price: float, volume: int = 0) -> None:
        """A price at ``t_ms`` with ``volume`` traded since the last one."""
        points = self.tape.setdefault(symbol, [])
        if points and t_ms < points[-1][0]:
            raise ValueError(f"{symbol}: a tick at {t_ms} after one at {points[-1][0]}")
        points.append((t_ms, price, (points[-1][2] if points else 0) + volume))
        self.market.setdefault(symbol, [(0, price, 0)])
        self.position.setdefault(symbol, 0)

    def fail_chart(self, kind: str, symbol: str | None = None, status: int = 500) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        self.chart_faults.append(Fault(kind, symbol, status))

    def latest(self, symbol: str) -> tuple[int, float, int] | None:
        now_ms = int(self.now_s() * 1000)
        return next((p for p in reversed(self.tape.get(symbol, [])) if p[0] <= now_ms), None)

    def _advance(self, symbol: str) -> State:  # the quote: the tape's latest point at "now"
        point = self.latest(symbol)
        if point is None:
            return super()._advance(symbol)
        return point[0] // 1000, point[1], point[2]

    # --- the chart --------------------------------------------------------------------------------
    def routes(self, api: web.Application) -> None:
        api.router.add_get("/v8/finance/chart/{symbol}", self._chart)

    async def _chart(self, request: web.Request) -> web.Response:
        symbol, query = request.match_info["symbol"], dict(request.query)
        self.charts.append({**query, "symbol": symbol})
        if (refused := self.authorized(request)) is not None:
            return refused
        if self.gate is not None:
            await self.gate.wait()
        if symbol not in self.tape:
            return _json(chart_error("Not Found", "No data found, symbol may be delisted"), 404)
        interval = query.get("interval", "1d")
        if interval not in VALID:
            return _json(chart_error("Bad Request", f"Invalid input - interval={interval} is not supported. "
                                     f"Valid intervals: [{', '.join(VALID)}]"), 400)
        try:
            lo, hi = int(query["period1"]), int(query["period2"])
        except (KeyError, ValueError):
            return _json(chart_error("Bad Request", "period1 and period2 are needed here"), 400)
        now = int(self.now_s())
        where = f"{interval} data not available for startTime={lo} and endTime={hi}."
        if interval == "1m" and hi - lo > 7 * DAY:
            return _json(chart_error("Unprocessable Entity", f"{where} Only 7 days worth of 1m granularity "
                                     "data are allowed to be fetched per request."), 422)
        if (age := MAX_AGE.get(interval)) is not None and lo < now - age * DAY:
            return _json(chart_error("Unprocessable Entity", f"{where} The requested range must be within "
                                     f"the last {age} days."), 422)
        fault = next((f for f in self.chart_faults if f.symbol in (None, symbol)), None)
        if fault is not None:
            self.chart_faults.remove(fault)
            if fault.kind == "error":
                return _json(chart_error("Internal Server Error", "internal error"), fault.status)
            if fault.kind == "html":
                return web.Response(status=200, content_type="text/html",
                                    body=b"<!DOCTYPE html><html><body>Will be right back...</body></html>")
        chart = self._bars(symbol, STEP.get(interval, DAY), lo, hi, now, fault)
        body = json.dumps(chart, separators=(",", ":")).encode()
        if fault is not None and fault.kind == "cut":
            body = body[: len(body) // 2]
        return web.Response(status=200, body=body, content_type="application/json")

    def _in_session(self, t: int) -> bool:
        return self.sessions is None or any(s <= t < e for s, e in self.sessions)

    def _bars(self, symbol: str, step: int, lo: int, hi: int, now: int,
              fault: Fault | None) -> dict[str, Any]:
        points = [p for p in self.tape[symbol] if p[0] // 1000 <= now]
        before = [p for p in points if p[0] // 1000 < lo]
        volume = before[-1][2] if before else 0
        rows: dict[int, list[Any]] = {}
        for t_ms, price, day in points:
            t = t_ms // 1000
            if not lo <= t < hi or not (self.leak or self._in_session(t)):
                continue
            if step >= DAY:
                start = next((s for s, e in self.sessions or [] if s <= t < e), t - t % DAY)
            else:
                start = t - t % step
            row = rows.get(start)
            if row is None:
                rows[start] = [price, price, price, price, day - volume]
            else:
                row[1], row[2], row[3] = max(row[1], price), min(row[2], price), price
                row[4] += day - volume
            volume = day
        times = sorted(rows)
        if step < DAY and times:  # the intervals in between, with no point but in a session: nulls
            times = [t for t in range(times[0], times[-1] + step, step)
                     if t in rows or self._in_session(t)]
        table = [[t, *rows[t]] if t in rows else [t, None, None, None, None, None] for t in times]
        last = points[-1] if points else None
        if last is not None and last[0] // 1000 >= hi and step < DAY:  # the latest price, past the range
            table.append([last[0] // 1000, last[1], last[1], last[1], last[1], 0])
        if fault is not None:
            if fault.kind == "empty":
                table = []
            elif fault.kind == "disorder" and len(table) >= 2:
                table[0], table[1] = table[1], table[0]
            elif fault.kind == "twice" and table:
                table.insert(1, table[0])
            elif fault.kind == "bad row" and table:
                table[0] = [table[0][0], -1.0, *table[0][2:]]
        result: dict[str, Any] = {"meta": self._meta(symbol, step, lo, hi, now)}
        if table:  # (Yahoo leaves the columns out of a range without a bar)
            result["timestamp"] = [r[0] for r in table]
            result["indicators"] = {"quote": [{k: [r[i] for r in table] for i, k in
                                               ((3, "low"), (1, "open"), (5, "volume"), (2, "high"),
                                                (4, "close"))}]}
        return {"chart": {"result": [result], "error": None}}

    def _meta(self, symbol: str, step: int, lo: int, hi: int, now: int) -> dict[str, Any]:
        latest = self.latest(symbol)
        regular = [{"timezone": "EST", "start": s, "end": e, "gmtoffset": -18000}
                   for s, e in self.sessions or [] if e > lo and s < hi]
        meta: dict[str, Any] = {
            "currency": "USD", "symbol": symbol, "exchangeName": "NMS", "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY", "regularMarketTime": latest[0] // 1000 if latest else now,
            "gmtoffset": -18000, "timezone": "EST", "exchangeTimezoneName": "America/New_York",
            "regularMarketPrice": latest[1] if latest else None, "priceHint": self.price_hints.get(symbol, 2),
            "dataGranularity": next((k for k, v in STEP.items() if v == step), "1d"), "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]}
        if step < DAY and regular:
            meta["tradingPeriods"] = [[p] for p in regular]
        return meta


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload, separators=(",", ":")).encode(),
                        content_type="application/json")
