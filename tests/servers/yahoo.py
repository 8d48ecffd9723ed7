"""A local stand-in for Yahoo Finance's quote endpoint (``GET /v7/finance/quote?symbols=A,B&crumb=C``)
and the cookie-and-crumb handshake that guards it.

It answers from a scripted market: each symbol has a list of states ``(regularMarketTime, price,
volume)``, and every answer that includes a symbol moves it to its next state (the last one repeats),
so the quotes a feed sees do not depend on timing. Records copy the shape of a real Yahoo answer (the
~80 fields, ``symbol`` last); symbols it does not know are left out of the result, as Yahoo does.

Like Yahoo, it answers quotes only to a client that shows an ``A3`` cookie and the crumb issued for it:
any request to ``cookie_url`` (a second port, standing in for ``fc.yahoo.com``) answers 404 and sets a
new ``A3`` cookie; ``/v1/test/getcrumb`` returns the crumb for a cookie it issued (401 without one); a
quote without a crumb, with another cookie's crumb or with an expired one (``expire_crumbs``) gets 401
and Yahoo's body. The cookie is read from the raw ``Cookie`` header, so a client must send it exactly as
it was set. Every request is logged by endpoint in ``calls``.

It also keeps the rules a client of the real service meets:

- A client that does not look like a browser gets 429 (Yahoo's real test is the TLS fingerprint, which
  plain HTTP cannot show; the headers Chrome sends with it stand in for it: a request without
  ``Sec-CH-UA`` is a script's). ``browser_check=False`` turns it off.
- A quote request without ``formatted=false`` is answered with formatted numbers (``{"raw": 178.1,
  "fmt": "178.10"}``), as Yahoo's finance API formats them unless told not to.
- ``consent="redirect"`` (a visitor from the EU): the cookie request is redirected to the consent form
  and sets no cookie; ``consent="form"``: it answers without a cookie and the form is at ``consent_url``.
  The form (hidden ``csrfToken`` and ``sessionId``, an agree and a reject button) is posted to
  ``/v2/collectConsent``, which redirects to ``/copyConsent``, which sets A3 once the visitor agreed
  (yfinance/data.py, ``_get_cookie_csrf`` and ``_accept_consent_form``). The consent pages are served on
  a third port, standing in for consent.yahoo.com and guce.yahoo.com.

Faults are queued with ``fail``/``stall``/``body``/``oversize``/``partial``/``mutate``: each one replaces
the next answer of its endpoint (``at``: quote, the default; crumb; cookie), in order, so a test scripts
exactly which request misbehaves and how. A quote refused for its credentials takes no fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

State = tuple[int, float, int]  # regularMarketTime (s), regularMarketPrice, regularMarketVolume
Record = dict[str, Any]
Endpoint = Literal["quote", "crumb", "cookie"]

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
INVALID_CRUMB = b'{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid Crumb"}}}'
INVALID_COOKIE = b'{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid Cookie"}}}'
# The consent form's shape (consent.yahoo.com, as yfinance's _get_cookie_csrf reads it): hidden inputs and
# an agree and a reject button, posted back to collectConsent.
CONSENT_PAGE = """<!DOCTYPE html><html><head><title>Yahoo is part of the Yahoo family of brands</title></head>
<body><div class="consent-form"><form method="post" action="/v2/collectConsent?sessionId={session}"
class="consent-form"><input type="hidden" name="csrfToken" value="{token}">
<input type="hidden" name="sessionId" value="{session}"><input type="hidden" name="originalDoneUrl"
value="https://finance.yahoo.com/?guccounter=1"><input type="hidden" name="namespace" value="yahoo">
<button type="submit" class="btn secondary reject-all" name="reject" value="reject">Reject all</button>
<button type="submit" class="btn primary accept-all" name="agree" value="agree">Accept all</button>
</form></div></body></html>"""
# fc.yahoo.com's answer: a 404 page that sets the cookie all the same (real: Domain=.yahoo.com; Secure)
COOKIE_PAGE = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>"


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
    gzip: bool = False  # the body is sent gzip-compressed (Content-Encoding: gzip)
    chunked: bool = False  # the body is sent in chunks, with no Content-Length
    mutate: Callable[[list[Record]], Any] | None = None  # edits the records; may return a new result


class YahooServer:
    """``async with YahooServer(market) as server:`` then point the feed at ``server.url``."""

    def __init__(self, market: dict[str, list[State]] | None = None, consent: str = "",
                 browser_check: bool = True) -> None:
        self.market: dict[str, list[State]] = {k: list(v) for k, v in (market or {}).items()}
        self.consent = consent  # "", "redirect" or "form"
        self.browser_check = browser_check
        self.user_agents: list[str] = []  # of every request to the API, in order
        self.formatted: list[str | None] = []  # the ``formatted`` parameter of every quote request
        self.consent_sessions: dict[str, str] = {}  # sessionId -> csrfToken of every form served
        self.agreed: set[str] = set()  # sessions whose visitor agreed
        self.consent_posts = 0
        self.consent_url = ""
        self.position: dict[str, int] = dict.fromkeys(self.market, 0)
        self.faults: dict[Endpoint, deque[Fault]] = {"quote": deque(), "crumb": deque(), "cookie": deque()}
        self.requests: list[tuple[str, ...]] = []  # the symbols of every quote request, in order
        self.credentials: list[tuple[str | None, str | None]] = []  # (A3, crumb) of every quote request
        self.arrivals: list[float] = []  # time.monotonic() of every quote request
        self.calls: list[Endpoint] = []  # every request, by endpoint, in order
        self.peers: set[tuple[str, int]] = set()  # client sockets seen on url (one pool: few of them)
        self.cookies: list[str] = []  # A3 values issued (all stay valid)
        self.crumbs: dict[str, str] = {}  # A3 value -> the crumb issued for it, until expired
        self.crumbs_issued = 0
        self.price_hints: dict[str, int] = {}  # symbol -> its priceHint (quotes and chart meta; 2 if none)
        self.url = ""
        self.cookie_url = ""
        self._closing = asyncio.Event()
        self._runners: list[web.AppRunner] = []

    # --- scripting ---------------------------------------------------------------------------------
    def ok(self) -> None:
        """The next answer is a normal one (to place faults after it)."""
        self.faults["quote"].append(Fault())

    def fail(self, status: int, retry_after: str | None = None, body: bytes = b"",
             at: Endpoint = "quote") -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults[at].append(Fault(status=status, headers=headers, body=body or _reason(status)))

    def stall(self, seconds: float = 30.0, at: Endpoint = "quote") -> None:
        self.faults[at].append(Fault(stall_s=seconds))

    def body(self, raw: bytes, at: Endpoint = "quote") -> None:
        self.faults[at].append(Fault(body=raw))

    def oversize(self, size: int, *, compress: bool = False, chunked: bool = False,
                 at: Endpoint = "quote") -> None:
        """A well-formed answer of ``size`` bytes (a quote answer with no quotes, padded with spaces),
        with its length announced, compressed (a few kB on the wire) or in chunks of unknown length."""
        head = b'{"quoteResponse":{"result":[],"error":null}}'
        self.faults[at].append(Fault(body=head + b" " * (size - len(head)), gzip=compress, chunked=chunked))

    def partial(self, *omit: str) -> None:
        self.faults["quote"].append(Fault(omit=frozenset(omit)))

    def mutate(self, edit: Callable[[list[Record]], Any]) -> None:
        self.faults["quote"].append(Fault(mutate=edit))

    def expire_crumbs(self) -> None:
        """Every crumb issued so far stops working (the cookies stay good: getcrumb issues new ones)."""
        self.crumbs.clear()

    def requested(self, symbol: str) -> int:
        return sum(symbol in r for r in self.requests)

    # --- serving -----------------------------------------------------------------------------------
    async def start(self) -> str:
        api = web.Application()
        api.router.add_get("/v7/finance/quote", self._quote)
        api.router.add_get("/v1/test/getcrumb", self._crumb)
        self.routes(api)
        cookies = web.Application()  # fc.yahoo.com: whatever the path, a 404 and a cookie
        cookies.router.add_get("/{tail:.*}", self._cookie)
        consent = web.Application()  # guce.yahoo.com and consent.yahoo.com
        consent.router.add_get("/consent", self._consent_start)
        consent.router.add_get("/v2/collectConsent", self._consent_form)
        consent.router.add_post("/v2/collectConsent", self._consent_post)
        consent.router.add_get("/copyConsent", self._copy_consent)
        consent.router.add_get("/done", self._consent_done)
        self.url = await self._serve(api)
        self.cookie_url = await self._serve(cookies)
        self.consent_url = await self._serve(consent)
        return self.url

    def routes(self, api: web.Application) -> None:
        """More endpoints on the API's port (the chart history: tests/servers/yahoo_chart)."""

    def authorized(self, request: web.Request) -> web.Response | None:
        """The answer to a request without a browser's look, the cookie or the crumb issued for it; None
        when it has them (what the quote endpoint checks, for other endpoints)."""
        if (refused := self._browser(request)) is not None:
            return refused
        cookie, crumb = _raw_cookie(request, "A3"), request.query.get("crumb")
        if crumb is None or cookie not in self.cookies or self.crumbs.get(cookie) != crumb:
            body = (UNAUTHORIZED if crumb is None else INVALID_COOKIE if cookie not in self.cookies
                    else INVALID_CRUMB)
            return web.Response(status=401, body=body, content_type="application/json")
        return None

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def close(self) -> None:
        self._closing.set()
        for runner in self._runners:
            await runner.cleanup()

    async def __aenter__(self) -> YahooServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _cookie(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("cookie")
        if (faulty := _answer(await self._fault("cookie"))) is not None:
            return faulty  # no cookie with it
        if self.consent == "redirect":
            raise web.HTTPFound(self.consent_url + "/consent")
        if self.consent == "form":
            return web.Response(status=404, body=COOKIE_PAGE, content_type="text/html")
        response = web.Response(status=404, body=COOKIE_PAGE, content_type="text/html")
        self._set_cookie(response)
        return response

    def _set_cookie(self, response: web.StreamResponse) -> None:
        n = len(self.cookies) + 1
        value = f"d=AQABBN{n:04d}ZmYCEMs2&S=AQAAAtX{n:04d}Lw"  # '=' and '&' in the value, as Yahoo's
        self.cookies.append(value)
        response.headers.add("Set-Cookie", f"A3={value}; Max-Age=31557600; Path=/; SameSite=None; HttpOnly")

    # --- the consent flow (consent.yahoo.com, guce.yahoo.com) --------------------------------------
    async def _consent_start(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("consent")
        session = f"3_cc-session_{len(self.consent_sessions) + 1:04d}"
        self.consent_sessions[session] = f"csrf{len(self.consent_sessions) + 1:04d}Xy"
        raise web.HTTPFound(f"/v2/collectConsent?sessionId={session}")

    async def _consent_form(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("consent")
        session = request.query.get("sessionId", "")
        token = self.consent_sessions.get(session)
        if token is None:
            return web.Response(status=400, text="unknown session")
        page = CONSENT_PAGE.format(session=session, token=token)
        return web.Response(body=page.encode(), content_type="text/html", charset="utf-8")

    async def _consent_post(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("consent")
        self.consent_posts += 1
        form = await request.post()
        session = request.query.get("sessionId", "")
        if (self.consent_sessions.get(session) != form.get("csrfToken") or form.get("sessionId") != session
                or form.get("agree") != "agree"):
            raise web.HTTPFound(f"/v2/collectConsent?sessionId={session}")  # the form again
        self.agreed.add(session)
        raise web.HTTPFound(f"/copyConsent?sessionId={session}")

    async def _copy_consent(self, request: web.Request) -> web.StreamResponse:
        self.calls.append("consent")
        session = request.query.get("sessionId", "")
        if session not in self.agreed:
            raise web.HTTPFound(f"/v2/collectConsent?sessionId={session}")
        response = web.HTTPFound("/done")
        self._set_cookie(response)
        raise response

    async def _consent_done(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"<html><body>Yahoo Finance</body></html>", content_type="text/html")

    def _browser(self, request: web.Request) -> web.Response | None:
        """429 for a client that does not look like a browser (see the module docstring)."""
        self.user_agents.append(request.headers.get("User-Agent", ""))
        if self.browser_check and "Sec-CH-UA" not in request.headers:
            return web.Response(status=429, body=b"Too Many Requests\r\n", content_type="text/plain")
        return None

    async def _crumb(self, request: web.Request) -> web.StreamResponse:
        self._peer(request)
        self.calls.append("crumb")
        if (refused := self._browser(request)) is not None:
            return refused
        if (faulty := _answer(await self._fault("crumb"))) is not None:
            return faulty
        cookie = _raw_cookie(request, "A3")
        if cookie not in self.cookies:
            return web.Response(status=401, body=b"")  # what a client without the cookie gets
        if cookie not in self.crumbs:  # '.' and '/' in it, as in Yahoo's (the client must encode them)
            self.crumbs_issued += 1
            self.crumbs[cookie] = f"zLoP.Fp/{self.crumbs_issued:03d}"
        crumb = self.crumbs[cookie]
        return web.Response(body=crumb.encode(), content_type="text/plain", charset="utf-8")

    async def _quote(self, request: web.Request) -> web.StreamResponse:
        self._peer(request)
        self.calls.append("quote")
        raw = request.query.get("symbols", "")
        symbols = tuple(s for s in raw.split(",") if s)
        cookie, crumb = _raw_cookie(request, "A3"), request.query.get("crumb")
        self.requests.append(symbols)
        self.credentials.append((cookie, crumb))
        self.arrivals.append(time.monotonic())
        self.formatted.append(request.query.get("formatted"))
        if (refused := self._browser(request)) is not None:
            return refused
        if crumb is None or cookie not in self.cookies or self.crumbs.get(cookie) != crumb:
            body = (UNAUTHORIZED if crumb is None else INVALID_COOKIE if cookie not in self.cookies
                    else INVALID_CRUMB)
            return web.Response(status=401, body=body, content_type="application/json")
        fault = await self._fault("quote")
        if (faulty := _answer(fault)) is not None:
            return faulty
        if not symbols:
            return _json({"quoteResponse": {"result": None, "error": {
                "code": "argument-error", "description": "Missing value for the \"symbols\" argument"}}},
                status=400)
        result = [{**record(s, self._advance(s)), "priceHint": self.price_hints.get(s, 2)}
                  for s in symbols if s in self.market and s not in fault.omit]
        if fault.mutate is not None:
            edited = fault.mutate(result)
            result = result if edited is None else edited
        if request.query.get("formatted") != "false":
            result = [_formatted(r) for r in result]
        return _json({"quoteResponse": {"result": result, "error": None}})

    async def _fault(self, at: Endpoint) -> Fault:
        """The next fault queued for ``at`` (a plain answer when none is), after its stall."""
        fault = self.faults[at].popleft() if self.faults[at] else Fault()
        if fault.stall_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.stall_s)
        return fault

    def _peer(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add((peer[0], peer[1]))

    def _advance(self, symbol: str) -> State:
        states = self.market[symbol]
        i = self.position[symbol]
        self.position[symbol] = min(i + 1, len(states) - 1)
        return states[i]


def _formatted(item: Any) -> Any:
    """A record as Yahoo formats it unless asked not to: every number a ``{"raw", "fmt"}`` pair."""
    if not isinstance(item, dict):
        return item
    return {k: {"raw": v, "fmt": f"{v:,.2f}"} if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in item.items()}


def _json(payload: object, status: int = 200) -> web.Response:
    # allow_nan: a NaN price goes out as the bare token NaN, which is what a careless proxy would send
    return web.Response(status=status, body=json.dumps(payload, separators=(",", ":")).encode(),
                        content_type="application/json", charset="utf-8")


def _answer(fault: Fault) -> web.Response | None:
    """The answer a fault replaces the normal one with; None when it only stalls or edits."""
    if fault.status == 200 and fault.body is None:
        return None
    ctype = "application/json" if (fault.body or b"").startswith(b"{") else "text/plain"
    body, headers = fault.body, dict(fault.headers)
    if fault.gzip and body is not None:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = web.Response(status=fault.status, body=body, headers=headers, content_type=ctype)
    if fault.chunked:
        response.enable_chunked_encoding()
    return response


def _raw_cookie(request: web.Request, name: str) -> str | None:
    """A cookie's value exactly as sent (a quoted value stays quoted, and so does not match)."""
    for header in request.headers.getall("Cookie", []):
        for pair in header.split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name:
                return value
    return None


def _reason(status: int) -> bytes:
    if status == 401:
        return UNAUTHORIZED
    if status == 429:
        return b"Too Many Requests\r\n"
    return f"{status} {web.Response(status=status).reason}".encode()
