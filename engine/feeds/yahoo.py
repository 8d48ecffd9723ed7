"""Yahoo Finance quotes, polled over REST (``/v7/finance/quote?symbols=A,B,C``).

Yahoo has no trade stream, so successive quotes become ticks: each new ``(regularMarketTime,
regularMarketPrice)`` is one tick, sized by the growth of ``regularMarketVolume`` since the last tick (0
the first time and when the volume restarts with a new session); no side, no trade id.

Yahoo throttles by client (unofficially about 2,000 requests an hour, and 429s beyond bursts), so every
request is paid for: symbols go many to a request; a token bucket spaces requests (per minute) and a
sliding budget caps them (per hour, the remainder shown to the user); a ``TTLCache`` keeps the latest
quotes so the poller skips what is younger than the poll interval and ``quote()`` callers (views,
panels) never refetch what is fresh. A failed request never ends the feed: its symbols go ``stale``
with the reason and the retry delay (``Retry-After`` when Yahoo gives one, else exponential backoff),
and ``live`` returns when they are fetched again.

Yahoo answers 401 to a client without its ``A3`` cookie and the crumb issued for it, so the first request
makes the handshake its public clients (yfinance) make: any answer from ``https://fc.yahoo.com`` (a 404)
sets the cookie, ``/v1/test/getcrumb`` with it returns the crumb, and quotes carry both. A 401 on a crumb
in use fetches a new pair once and retries; a 401 on a pair just fetched is reported, and the next attempt
(after the backoff) starts a new handshake. Handshake requests pay like quotes (limiter, budget).

Answers are read up to a size cap and decoded by ``engine.feeds.yahoo_answer``.

``stream`` is the poller itself, not a background task: while the consumer holds a batch no request is
made, and cancelling the stream ends all polling (the session closes with it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import cachetools
import msgspec
import numpy as np
from yarl import URL

from engine.feeds.backoff import Backoff
from engine.feeds.base import Feed, FeedCounters, FeedStatus, State
from engine.feeds.batching import TickBatcher
from engine.feeds.pacing import (
    Clock,
    RequestBudget,
    Sleep,
    TokenBucket,
    describe_failure,
    read_at_most,
    retry_after,
)
from engine.feeds.yahoo_answer import MAX_BODY_BYTES, MAX_QUOTE_BYTES, YahooQuote, read_quotes
from engine.feeds.yahoo_answer import error_text as _error_text
from engine.ticks import SymbolTable, SymbolTableFull

DEFAULT_URL = "https://query1.finance.yahoo.com"
DEFAULT_COOKIE_URL = "https://fc.yahoo.com"  # answers anything, setting the A3 cookie for .yahoo.com
QUOTE_PATH = "/v7/finance/quote"
CRUMB_PATH = "/v1/test/getcrumb"
HEADERS = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) tickdeck/0.1"}
ACCEPT_JSON = "application/json"
ACCEPT_PAGE = "text/html,application/xhtml+xml,*/*;q=0.8"  # what a browser's first visit accepts
MAX_CRUMB_LEN = 64  # crumbs are ~11 characters; anything long is a page, not a crumb
_MAX_TIME_S = (2**63 - 1) // 1_000_000_000  # a later regularMarketTime does not fit a tick's int64 ns


# --- what the feed hands out ---------------------------------------------------------------------
class Quote(msgspec.Struct, frozen=True):
    """The latest good quote of a symbol, as ``YahooFeed.quote`` hands it out."""

    symbol: str
    price: float
    time_ns: int  # regularMarketTime
    volume: float | None
    currency: str | None
    received_ns: int


class YahooCounters(FeedCounters):
    """The base counters plus what polling costs and saves."""

    def __init__(self, feed: str, budget: RequestBudget, limiter: TokenBucket) -> None:
        super().__init__(feed)
        self.budget = budget
        self.limiter = limiter
        self.requests = 0  # sent, handshakes included (each one spends budget, whatever its outcome)
        self.handshakes = 0  # cookie-and-crumb fetches begun (the first, then one per refused crumb)
        self.http_errors: Counter[int] = Counter()  # by status
        self.timeouts = 0
        self.connection_errors = 0
        self.cache_hits = 0  # quote() calls answered from the cache
        self.fresh_skips = 0  # symbols a poll left out because their cached quote was fresh
        self.unchanged = 0  # quotes with the same time and price as the last tick

    def as_dict(self) -> dict[str, object]:
        out = super().as_dict()
        out.update(requests=self.requests, handshakes=self.handshakes, http_errors=dict(self.http_errors),
                   timeouts=self.timeouts, connection_errors=self.connection_errors,
                   cache_hits=self.cache_hits, fresh_skips=self.fresh_skips, unchanged=self.unchanged,
                   rate_waits=self.limiter.waits,
                   budget_left=self.budget.left, budget_limit=self.budget.limit)
        return out


# --- text for the user -----------------------------------------------------------------------------
def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"


def _names(symbols: list[str], shown: int = 5) -> str:
    extra = len(symbols) - shown
    return ", ".join(symbols[:shown]) + (f" +{extra} more" if extra > 0 else "")


# --- the feed --------------------------------------------------------------------------------------
class YahooFeed(Feed):
    name = "yahoo"
    counters: YahooCounters

    def __init__(self, symbols: SymbolTable, wanted: Iterable[str] = (), url: str = DEFAULT_URL, *,
                 interval: float = 5.0, batch_size: int = 50, requests_per_minute: float = 60.0,
                 burst: int = 5, requests_per_hour: int = 2000, timeout: float = 10.0,
                 backoff: Backoff | None = None, limiter: TokenBucket | None = None,
                 budget: RequestBudget | None = None, cookie_url: str = DEFAULT_COOKIE_URL,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(symbols)
        if not interval > 0 or not timeout > 0 or batch_size < 1:
            raise ValueError(f"yahoo needs interval > 0, timeout > 0, batch_size >= 1: {interval=}, "
                             f"{timeout=}, {batch_size=}")
        self.url = url.rstrip("/")
        self.cookie_url = cookie_url
        self.wanted: list[str] = list(dict.fromkeys(wanted))
        self.interval = interval
        self.batch_size = batch_size
        self.timeout = timeout
        self.gather_s = interval / 2  # a poll may wait this long for other symbols to come due with it
        self._clock = clock  # every wait of the poller is on this clock, so tests need not wait
        self._sleep = sleep
        self.backoff = backoff or Backoff(base=1.0, cap=60.0)
        self.limiter = limiter or TokenBucket(requests_per_minute, burst, clock=clock, sleep=sleep)
        self.budget = budget or RequestBudget(requests_per_hour, clock=clock)
        self.counters = YahooCounters(self.name, self.budget, self.limiter)
        self.cache: cachetools.TTLCache[str, Quote] = cachetools.TTLCache(maxsize=100_000, ttl=interval,
                                                                  timer=clock)
        self.latest: dict[str, Quote] = {}  # the last good quote, however old
        self.stale: dict[str, str] = {}  # symbol -> why its quote is not current
        self.batcher = TickBatcher()
        self._next_at: dict[str, float] = {}  # when a symbol is next due (monotonic)
        self._last: dict[str, tuple[int, float]] = {}  # (time, price) of the last tick
        self._volume: dict[str, float] = {}  # regularMarketVolume at the last tick
        self._resume_at = 0.0  # no request before this (backoff, Retry-After, spent budget)
        self._events: deque[FeedStatus] = deque(maxlen=256)
        self._state: State = "connecting"
        self._reason = ""
        self._ever_live = False
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._crumb: str | None = None  # issued for the A3 cookie in the session's jar
        self._auth_lock = asyncio.Lock()  # concurrent requests share one handshake
        self._closed = False

    # --- public --------------------------------------------------------------------------------
    def universe(self) -> tuple[str, ...]:
        return tuple(self.wanted)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        new = [s for s in dict.fromkeys(symbols) if s not in self.wanted]
        self.wanted += new
        if new:
            self._wake.set()

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        gone = set(symbols)
        self.wanted = [s for s in self.wanted if s not in gone]
        for name in gone:
            for table in (self._next_at, self._last, self._volume, self.stale):
                table.pop(name, None)
        if self._state == "stale" and not self.stale:
            self._emit("live", str(self.budget))
        self._wake.set()

    async def quote(self, symbol: str) -> Quote | None:
        """The latest quote of ``symbol``: from the cache while it is fresh, else fetched (sharing a
        request already in flight). While backing off or out of budget, the last known quote."""
        cached = self.cache.get(symbol)
        if cached is not None:
            self.counters.cache_hits += 1
            return cached
        if self._closed or self._clock() < self._resume_at or self.budget.left == 0:
            return self.latest.get(symbol)
        pending = self._inflight.get(symbol)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch([symbol], [symbol]))
            self._inflight[symbol] = pending
            pending.add_done_callback(lambda f: self._forget_inflight([symbol], f))
        await asyncio.shield(pending)
        self._wake.set()  # the stream hands on the ticks this fetch produced
        return self.latest.get(symbol)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._crumb = None  # its cookie went with the session

    # --- the poller ----------------------------------------------------------------------------
    async def stream(self) -> AsyncGenerator[np.ndarray | FeedStatus, None]:
        self._closed = False
        yield FeedStatus(self.name, "connecting")  # state stays: quote() may have made the feed live
        try:
            while True:
                self._wake.clear()
                for item in self._drain():
                    yield item
                wait = self._wait_s()
                if wait > 0:
                    await self._idle(wait)
                    continue
                now = self._clock()
                due = [s for s in self.wanted if s not in self.cache and self._next_at.get(s, 0.0) <= now]
                self.counters.fresh_skips += sum(s in self.cache for s in self.wanted)
                batches = [due[i:i + self.batch_size] for i in range(0, len(due), self.batch_size)]
                for i, batch in enumerate(batches):
                    ok = await self._fetch(batch, due[i * self.batch_size:])
                    for item in self._drain():
                        yield item
                    if not ok:
                        break
                else:
                    if batches and self._state == "live" and self._reason != str(self.budget):
                        self._emit("live", str(self.budget))  # the budget left, after this poll
        finally:
            await self.close()

    def _wait_s(self) -> float:
        """Seconds until the next poll: the first symbol due, held up to ``gather_s`` so that symbols
        coming due soon after go in the same request (ad-hoc fetches fall into step this way)."""
        if not self.wanted:
            return math.inf
        now = self._clock()
        if now < self._resume_at:
            return self._resume_at - now
        times = sorted(self._next_at.get(s, 0.0) for s in self.wanted)
        due_at = max(t for t in times if t <= times[0] + self.gather_s)
        return max(0.0, due_at - now)

    async def _idle(self, seconds: float) -> None:
        """Until ``seconds`` have passed on the feed's clock, or something wakes the poller (a new
        symbol, a fetch that ``quote()`` made)."""
        if math.isinf(seconds):
            await self._wake.wait()
            return
        waiters = {asyncio.ensure_future(self._sleep(seconds)), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _drain(self) -> Iterable[np.ndarray | FeedStatus]:
        while self._events:
            yield self._events.popleft()
        if (batch := self.batcher.flush()) is not None:
            yield batch

    def _emit(self, state: State, reason: str, retry_in: float = 0.0, symbols: Iterable[str] = ()) -> None:
        self._state, self._reason = state, reason
        self._events.append(FeedStatus(self.name, state, reason, retry_in=retry_in, symbols=tuple(symbols)))

    def _forget_inflight(self, batch: list[str], marker: asyncio.Future[Any]) -> None:
        for s in batch:
            if self._inflight.get(s) is marker:
                del self._inflight[s]

    # --- one request ---------------------------------------------------------------------------
    async def _fetch(self, batch: list[str], affected: list[str]) -> bool:
        """Request ``batch``; when that fails, ``affected`` (the batch and the rest of its poll) go
        stale. True when quotes came back."""
        marker = asyncio.get_running_loop().create_future()
        for s in batch:
            self._inflight.setdefault(s, marker)
        try:
            return await self._request(batch, affected)
        finally:
            marker.set_result(None)
            self._forget_inflight(batch, marker)

    async def _request(self, batch: list[str], affected: list[str]) -> bool:
        refused: str | None = None  # the crumb Yahoo refused in this request (a second refusal is reported)
        while True:
            if (credentials := await self._credentials(affected, refused)) is None:
                return False
            crumb, fresh = credentials
            params = {"symbols": ",".join(batch), "crumb": crumb}
            limit = MAX_BODY_BYTES + MAX_QUOTE_BYTES * len(batch)
            if (answer := await self._get(self.url + QUOTE_PATH, params, affected, ACCEPT_JSON,
                                          limit)) is None:
                return False
            if (status := answer[0]) != 401 or fresh or refused is not None:
                break
            self.counters.http_errors[status] += 1  # expired: a new cookie and crumb, then once more
            refused = crumb
        host, body = urlsplit(self.url).netloc, answer[1]
        if status == 401 and self._crumb == crumb:
            self._crumb = None  # refused as soon as issued: the next attempt starts a new handshake
        if status != 200:
            self._http_error(affected, f"HTTP {status} from {host}", answer)
            return False
        self.counters.messages += 1
        why = self._decode(body, batch, time.time_ns())
        if why:
            self._fail(affected, f"unusable answer from {host} ({why})", self.backoff.next())
            return False
        self.backoff.reset()
        self._succeed(batch)
        return True

    async def _credentials(self, affected: list[str], refused: str | None) -> tuple[str, bool] | None:
        """The crumb to send, and whether it was fetched just now: the one in use unless Yahoo has just
        refused it, else a new handshake. None when the handshake failed (already reported)."""
        async with self._auth_lock:
            if self._crumb is not None and self._crumb != refused:
                return self._crumb, False
            self._crumb = await self._handshake(affected)
            return None if self._crumb is None else (self._crumb, True)

    async def _handshake(self, affected: list[str]) -> str | None:
        self.counters.handshakes += 1
        jar = self._open().cookie_jar
        jar.clear()  # a refused crumb's cookie goes too: Yahoo issues crumbs per cookie
        # only its Set-Cookie header matters: the page itself is not read
        if (answer := await self._get(self.cookie_url, None, affected, ACCEPT_PAGE, None)) is None:
            return None
        if not jar.filter_cookies(URL(self.url)):  # any status will do (fc.yahoo.com's is a 404)
            self._fail(affected, f"no cookie from {urlsplit(self.cookie_url).netloc} (HTTP {answer[0]})",
                       self.backoff.next())
            return None
        answer = await self._get(self.url + CRUMB_PATH, None, affected, "*/*", MAX_BODY_BYTES)
        if answer is None:
            return None
        where = f"no crumb from {urlsplit(self.url).netloc}"
        if answer[0] != 200:
            self._http_error(affected, f"{where}: HTTP {answer[0]}", answer)
            return None
        crumb = answer[1].decode("utf-8", "replace").strip()
        if not crumb or len(crumb) > MAX_CRUMB_LEN or any(c.isspace() or c in '<{"' for c in crumb):
            self.counters.bad_message("empty crumb" if not crumb else "not a crumb", answer[1])
            self._fail(affected, f"{where} ({'empty answer' if not crumb else 'not a crumb'})",
                       self.backoff.next())
            return None
        return crumb

    async def _get(self, url: str, params: dict[str, str] | None, affected: list[str], accept: str,
                   limit: int | None) -> tuple[int, bytes, str | None] | None:
        """One request, paid for (limiter, budget): status, body (at most ``limit`` bytes; None: not read)
        and Retry-After; None when there was no usable answer (a network failure, a body over the limit,
        no budget: each reported; or backing off since it queued)."""
        if self.budget.left == 0:
            self._fail(affected, str(self.budget), self.budget.resets_in(), next_word="next request")
            return None
        await self.limiter.acquire()
        if self._clock() < self._resume_at:  # another request failed while this one waited
            return None
        self.budget.spend()
        self.counters.requests += 1
        try:
            async with self._open().get(url, params=params, headers={"Accept": accept},
                                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                body = b"" if limit is None else await read_at_most(resp.content, limit)
                if body is not None:
                    return resp.status, body, resp.headers.get("Retry-After")
                status = resp.status  # (unread, the rest goes with the connection, which is closed)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                self.counters.timeouts += 1
            else:
                self.counters.connection_errors += 1
            self._fail(affected, describe_failure(exc, url, self.timeout), self.backoff.next())
            return None
        host = urlsplit(url).netloc
        self.counters.messages += 1
        self.counters.bad_message("answer too large", f"HTTP {status} from {host}: over {limit:,} bytes")
        self._fail(affected, f"answer from {host} over {limit:,} bytes", self.backoff.next())
        return None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            # unsafe: keep cookies set by an IP host (a local server); no quoting: send A3 (d=...&S=...)
            # exactly as Yahoo set it, not in the double quotes SimpleCookie would add around '=' and '&'
            jar = aiohttp.CookieJar(unsafe=True, quote_cookie=False)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4, ttl_dns_cache=300),
                                                  headers=HEADERS, cookie_jar=jar)
        return self._session

    def _http_error(self, affected: list[str], what: str, answer: tuple[int, bytes, str | None]) -> None:
        """An HTTP error: Yahoo's explanation, if any, and Retry-After, if any, else the backoff."""
        status, body, header = answer
        self.counters.http_errors[status] += 1
        wait = retry_after(header)
        self._fail(affected, what + _error_text(body), self.backoff.next() if wait is None else wait)

    def _fail(self, affected: list[str], why: str, delay: float, next_word: str = "retrying") -> None:
        if next_word == "retrying":
            self.counters.reconnects += 1
        self._resume_at = max(self._resume_at, self._clock() + delay)
        for s in affected:
            self.stale[s] = why
        if self._ever_live:
            self._emit("stale", f"{_names(affected)}: {why}, {next_word} in {_seconds(delay)}", delay,
                       affected)
        else:
            self._emit("reconnecting", why, delay)

    def _succeed(self, batch: list[str]) -> None:
        next_at = self._clock() + self.interval  # after the cache insertions: never before expiry
        for s in batch:
            self._next_at[s] = next_at
            self.stale.pop(s, None)
        self._ever_live = True
        if not self.stale and self._state != "live":
            self._emit("live", str(self.budget))
        elif self.stale and self._state in ("connecting", "reconnecting"):  # data flows, but not for all
            names = list(self.stale)
            self._emit("stale", f"{_names(names)}: {self.stale[names[0]]}", symbols=names)

    # --- decoding ------------------------------------------------------------------------------
    def _decode(self, body: bytes, batch: list[str], recv_ns: int) -> str:
        """Turn one answer into ticks; '' when usable, else why not (already counted)."""
        why, quotes = read_quotes(body, batch, self.counters.bad_message)
        for name, q in quotes:
            self._take(name, q, recv_ns)
        return why

    def _take(self, name: str, q: YahooQuote, recv_ns: int) -> None:
        bad = self.counters.bad_message
        price, t, volume = q.regular_market_price, q.regular_market_time, q.regular_market_volume
        if price is None or not 0.0 < price < math.inf:
            bad("bad price", q)
            return
        if t is None or not 0 < t < _MAX_TIME_S:
            bad("bad time", q)
            return
        if volume is not None and not 0.0 <= volume < math.inf:
            bad("bad volume", q)
            return
        ts = t * 1_000_000_000 if isinstance(t, int) else round(t * 1e9)
        quote = Quote(name, price, ts, volume, q.currency, recv_ns)
        last = self._last.get(name)
        if last is not None and ts < last[0]:  # an older quote (another Yahoo server lagging behind)
            self.counters.out_of_order += 1
            self.cache[name] = self.latest.get(name, quote)  # fetched all the same: fresh, not newer
            return
        self.cache[name] = quote
        self.latest[name] = quote
        if last == (ts, price):
            self.counters.unchanged += 1
            return
        try:
            slot = self.symbols.slot(name)
        except SymbolTableFull as exc:
            bad("symbol table full", exc)
            return
        base = self._volume.get(name)
        size = 0.0
        if volume is not None:
            size = volume - base if base is not None and volume >= base else 0.0
            self._volume[name] = volume
        self.batcher.add(slot, ts, recv_ns, price, size)
        self._last[name] = (ts, price)
        self.counters.ticks += 1
