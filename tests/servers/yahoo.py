"""A local stand-in for Yahoo Finance's quote endpoint (``GET /v7/finance/quote?symbols=A,B``).

It answers from a scripted market: each symbol has a list of states ``(regularMarketTime, price,
volume)``, and every answer that includes a symbol moves it to its next state (the last one repeats),
so the quotes a feed sees do not depend on timing. Records copy the shape of a real Yahoo answer (the
~80 fields, ``symbol`` last); symbols it does not know are left out of the result, as Yahoo does.

Faults are queued with ``fail``/``stall``/``body``/``partial``/``mutate``: each one replaces the next
answer, in order, so a test scripts exactly which request misbehaves and how.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

State = tuple[int, float, int]  # regularMarketTime (s), regularMarketPrice, regularMarketVolume
Record = dict[str, Any]

# A real record (TSLA, 31 May 2024) from /v7/finance/quote; price, time, volume and names are replaced.
TEMPLATE: Record = json.loads("""{"language":"en-US","region":"US","quoteType":"EQUITY","typeDisp":"Equity",
"quoteSourceName":"Nasdaq Real Time Price","triggerable":true,"customPriceAlertConfidence":"HIGH",
"currency":"USD","marketState":"REGULAR","regularMarketChangePercent":-0.38592046,
"regularMarketPrice":178.1,"exchange":"NMS","shortName":"Tesla, Inc.","longName":"Tesla, Inc.",
"messageBoardId":"finmb_27444752","exchangeTimezoneName":"America/New_York",
"exchangeTimezoneShortName":"EDT","gmtOffSetMilliseconds":-14400000,"market":"us_market",
"esgPopulated":false,"hasPrePostMarketData":true,"firstTradeDateMilliseconds":1277818200000,
"priceHint":2,"postMarketChangePercent":-0.314464,"postMarketTime":1717199998,"postMarketPrice":177.52,
"postMarketChange":-0.559998,"regularMarketChange":-0.6899872,"regularMarketTime":1717185603,
"regularMarketDayHigh":180.32,"regularMarketDayRange":"173.8201 - 180.32","regularMarketDayLow":173.8201,
"regularMarketVolume":67314602,"regularMarketPreviousClose":178.79,"bid":177.95,"ask":178.44,
"bidSize":3,"askSize":4,"fullExchangeName":"NasdaqGS","financialCurrency":"USD","regularMarketOpen":178.42,
"averageDailyVolume3Month":94657485,"averageDailyVolume10Day":73972190,"fiftyTwoWeekLowChange":39.300003,
"fiftyTwoWeekLowChangePercent":0.28314123,"fiftyTwoWeekRange":"138.8 - 299.29",
"fiftyTwoWeekHighChange":-121.19,"fiftyTwoWeekHighChangePercent":-0.404925,"fiftyTwoWeekLow":138.8,
"fiftyTwoWeekHigh":299.29,"fiftyTwoWeekChangePercent":-18.165524,"earningsTimestamp":1713907800,
"earningsTimestampStart":1721213940,"earningsTimestampEnd":1721649600,"isEarningsDateEstimate":true,
"trailingAnnualDividendRate":0.0,"trailingPE":45.433674,"trailingAnnualDividendYield":0.0,
"epsTrailingTwelveMonths":3.92,"epsForward":3.31,"epsCurrentYear":2.53,"priceEpsCurrentYear":70.39526,
"sharesOutstanding":3189199872,"bookValue":20.188,"fiftyDayAverage":171.9572,
"fiftyDayAverageChange":6.142807,"fiftyDayAverageChangePercent":0.035722885,
"twoHundredDayAverage":212.0957,"twoHundredDayAverageChange":-33.995697,
"twoHundredDayAverageChangePercent":-0.1602847,"marketCap":567996514304,"forwardPE":53.80665,
"priceToBook":8.822073,"sourceInterval":15,"exchangeDataDelayedBy":0,"averageAnalystRating":"2.8 - Hold",
"tradeable":false,"cryptoTradeable":false,"displayName":"Tesla","symbol":"TSLA"}""")

# What Yahoo sends with an error status (here the 401 it gives a client without cookie and crumb).
UNAUTHORIZED = (b'{"finance":{"result":null,"error":{"code":"Unauthorized","description":'
                b'"User is unable to access this feature - https://bit.ly/yahoo-finance-api-feedback"}}}')


def record(symbol: str, state: State, currency: str = "USD") -> Record:
    """One ``quoteResponse.result`` entry in Yahoo's shape for ``symbol`` at ``state``."""
    ts, price, volume = state
    out = dict(TEMPLATE)
    del out["symbol"]  # re-added last, where Yahoo puts it
    out.update(regularMarketTime=ts, regularMarketPrice=price, regularMarketVolume=volume,
               currency=currency, financialCurrency=currency, shortName=symbol, longName=symbol,
               displayName=symbol, symbol=symbol)
    return out


@dataclass
class Fault:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # sent as is instead of the market's answer
    stall_s: float = 0.0  # wait this long (or until the server closes) before answering
    omit: frozenset[str] = frozenset()  # symbols left out of the result
    mutate: Callable[[list[Record]], Any] | None = None  # edits the records; may return a new result


class YahooServer:
    """``async with YahooServer(market) as server:`` then point the feed at ``server.url``."""

    def __init__(self, market: dict[str, list[State]] | None = None) -> None:
        self.market: dict[str, list[State]] = {k: list(v) for k, v in (market or {}).items()}
        self.position: dict[str, int] = dict.fromkeys(self.market, 0)
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, ...]] = []  # the symbols of every quote request, in order
        self.arrivals: list[float] = []  # time.monotonic() of every quote request
        self.peers: set[tuple[str, int]] = set()  # client sockets seen (one pool: few of them)
        self.url = ""
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- scripting ---------------------------------------------------------------------------------
    def ok(self) -> None:
        """The next answer is a normal one (to place faults after it)."""
        self.faults.append(Fault())

    def fail(self, status: int, retry_after: str | None = None, body: bytes = b"") -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.append(Fault(status=status, headers=headers, body=body or _reason(status)))

    def stall(self, seconds: float = 30.0) -> None:
        self.faults.append(Fault(stall_s=seconds))

    def body(self, raw: bytes) -> None:
        self.faults.append(Fault(body=raw))

    def partial(self, *omit: str) -> None:
        self.faults.append(Fault(omit=frozenset(omit)))

    def mutate(self, edit: Callable[[list[Record]], Any]) -> None:
        self.faults.append(Fault(mutate=edit))

    def requested(self, symbol: str) -> int:
        return sum(symbol in r for r in self.requests)

    # --- serving -----------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v7/finance/quote", self._quote)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> YahooServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _quote(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add((peer[0], peer[1]))
        raw = request.query.get("symbols", "")
        symbols = tuple(s for s in raw.split(",") if s)
        self.requests.append(symbols)
        self.arrivals.append(time.monotonic())
        fault = self.faults.popleft() if self.faults else Fault()
        if fault.stall_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.stall_s)
        if fault.status != 200 or fault.body is not None:
            ctype = "application/json" if (fault.body or b"").startswith(b"{") else "text/plain"
            return web.Response(status=fault.status, body=fault.body, headers=fault.headers,
                                content_type=ctype)
        if not symbols:
            return _json({"quoteResponse": {"result": None, "error": {
                "code": "argument-error", "description": "Missing value for the \"symbols\" argument"}}},
                status=400)
        result = [record(s, self._advance(s)) for s in symbols if s in self.market and s not in fault.omit]
        if fault.mutate is not None:
            edited = fault.mutate(result)
            result = result if edited is None else edited
        return _json({"quoteResponse": {"result": result, "error": None}})

    def _advance(self, symbol: str) -> State:
        states = self.market[symbol]
        i = self.position[symbol]
        self.position[symbol] = min(i + 1, len(states) - 1)
        return states[i]


def _json(payload: object, status: int = 200) -> web.Response:
    # allow_nan: a NaN price goes out as the bare token NaN, which is what a careless proxy would send
    return web.Response(status=status, body=json.dumps(payload, separators=(",", ":")).encode(),
                        content_type="application/json", charset="utf-8")


def _reason(status: int) -> bytes:
    if status == 401:
        return UNAUTHORIZED
    if status == 429:
        return b"Too Many Requests\r\n"
    return f"{status} {web.Response(status=status).reason}".encode()
