"""Yahoo Finance quotes: pushed by Yahoo's streamer when it is configured, polled over REST otherwise
and as its fallback.

Yahoo has no trade stream, so successive quotes become ticks: each new ``(time, price)`` is one tick,
sized by the growth of the day's volume since the last tick (0 the first time and when the volume
restarts with a new session); no side, no trade id. Pushes and polls go through the same bookkeeping,
so a quote seen both ways is one tick.

The streamer (``engine.feeds.yahoo_stream``, ``stream_url``) pushes a price as it changes. While it
pushes a symbol, that symbol is not polled: each push moves its next poll ``stream_hold_s`` (60 s) away,
so a symbol the streamer stops carrying (or a streamer that is down) is polled again at ``interval``.
Pushes carry no previous close (a position's day P&L needs ``regularMarketPreviousClose``): a push holds
polling off only once a poll has given the symbol's previous close for the UTC day of the pushed price,
so a streamed symbol is still polled once per trading day, when its first price of the day is pushed.

Polling (``/v7/finance/quote?symbols=A,B,C&formatted=false``, numbers as plain JSON numbers, not
``{"raw", "fmt"}`` pairs): Yahoo throttles by client (unofficially about 2,000 requests an hour, and 429s
beyond bursts), so every request is paid for: symbols go many to a request; a token bucket spaces
requests (per minute) and a sliding budget caps them (per hour, the remainder shown to the user); a
``TTLCache`` keeps the latest quotes so the poller skips what is younger than the poll interval and
``quote()`` callers (views, panels) never refetch what is fresh. A failed request never ends the feed:
its symbols go ``stale`` with the reason and the retry delay (``Retry-After`` when Yahoo gives one, else
exponential backoff), and ``live`` returns when they are fetched again.

Requests go out with a browser's TLS fingerprint (``engine.feeds.yahoo_http``: Yahoo answers 429 to a
Python one), and carry the ``A3`` cookie and the crumb issued for it (``engine.feeds.yahoo_auth``: the
cookie from ``fc.yahoo.com``, else through the EU consent form, then ``/v1/test/getcrumb``). A 401 on a
crumb in use fetches a new pair once and retries; a 401 on a pair just fetched is reported, and the next
attempt (after the backoff) starts a new handshake. Handshake requests pay like quotes.

Answers are read up to a size cap and decoded by ``engine.feeds.yahoo_answer``.

With a history loader (``engine.backfill``; this feed's side is ``engine.feeds.yahoo_history``), each
symbol's past comes from the chart endpoint through this feed's session, its quotes held while it loads
and meeting it by time; a symbol that was stale across a bar's close has the bars it missed refilled
from the chart when its quotes come back.

``stream`` is the poller itself, not a background task: while the consumer holds a batch no request is
made, and cancelling the stream ends all polling (the session and the streamer close with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import urlsplit

import cachetools

from engine.feeds.backoff import Backoff
from engine.feeds.base import Feed, FeedItem, FeedStatus, State
from engine.feeds.batching import TickBatcher
from engine.feeds.pacing import Clock, RequestBudget, Sleep, TokenBucket, retry_after
from engine.feeds.yahoo_answer import (
    MAX_BODY_BYTES,
    MAX_QUOTE_BYTES,
    Quote,
    YahooCounters,
    previous_close,
    quote_of,
    read_quotes,
)
from engine.feeds.yahoo_answer import error_text as _error_text
from engine.feeds.yahoo_auth import Handshake
from engine.feeds.yahoo_history import YahooHistoryHooks
from engine.feeds.yahoo_http import Answer, RequestFailed, YahooSession
from engine.feeds.yahoo_stream import Pricing, YahooStream
from engine.precision import hint_decimals
from engine.ticks import SymbolTable, SymbolTableFull

log = logging.getLogger("tickdeck.feeds")

DEFAULT_URL = "https://query1.finance.yahoo.com"
DEFAULT_COOKIE_URL = "https://fc.yahoo.com"  # answers anything, setting the A3 cookie for .yahoo.com
DEFAULT_CONSENT_URL = "https://guce.yahoo.com/consent"  # the consent form, where consent is required
QUOTE_PATH = "/v7/finance/quote"
CRUMB_PATH = "/v1/test/getcrumb"
ACCEPT_JSON = "application/json"
DAY_NS = 86_400_000_000_000
DAY_MS = 86_400_000
STREAM_HOLD_S = 60.0  # a symbol the streamer pushed is not polled again before this


# --- text for the user -----------------------------------------------------------------------------
def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"


def _names(symbols: list[str], shown: int = 5) -> str:
    extra = len(symbols) - shown
    return ", ".join(symbols[:shown]) + (f" +{extra} more" if extra > 0 else "")


# --- the feed --------------------------------------------------------------------------------------
class YahooFeed(YahooHistoryHooks, Feed):
    name = "yahoo"
    counters: YahooCounters

    def __init__(self, symbols: SymbolTable, wanted: Iterable[str] = (), url: str = DEFAULT_URL, *,
                 interval: float = 5.0, batch_size: int = 50, requests_per_minute: float = 60.0,
                 burst: int = 5, requests_per_hour: int = 2000, timeout: float = 10.0,
                 backoff: Backoff | None = None, limiter: TokenBucket | None = None,
                 budget: RequestBudget | None = None, cookie_url: str = DEFAULT_COOKIE_URL,
                 consent_url: str | None = None, stream_url: str | None = None,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(symbols)
        if not interval > 0 or not timeout > 0 or batch_size < 1:
            raise ValueError(f"yahoo needs interval > 0, timeout > 0, batch_size >= 1: {interval=}, "
                             f"{timeout=}, {batch_size=}")
        self.url = url.rstrip("/")
        self.cookie_url = cookie_url
        self.consent_url = consent_url
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
        self.previous_closes: dict[str, float] = {}  # regularMarketPreviousClose, one per wanted symbol
        self._close_day: dict[str, int] = {}  # the UTC day of the quote that gave a previous close
        self._resume_at = 0.0  # no request before this (backoff, Retry-After, spent budget)
        self._events: deque[FeedStatus] = deque(maxlen=256)
        self._state: State = "connecting"
        self._reason = ""
        self._ever_live = False
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()
        self._session: YahooSession | None = None
        self._crumb: str | None = None  # issued for the A3 cookie in the session's jar
        self.handshake = Handshake(self._get, lambda name: self._open().has_cookie(name), cookie_url,
                                   consent_url, self.url + CRUMB_PATH)
        #: the streamer (None: polling only); its prices go through ``_pushed``
        self.streamer = (YahooStream(symbols, stream_url, self.wanted, self._pushed) if stream_url
                         else None)
        self.stream_state = ""  # the streamer's last state, for the status line
        self.counters.stream = None if self.streamer is None else self.streamer.counters
        self._stream_task: asyncio.Task[None] | None = None
        self._auth_lock = asyncio.Lock()  # concurrent requests share one handshake
        self._affected: list[str] = []  # the symbols a handshake in progress is for
        self._closed = False
        self.history = None

    # --- public --------------------------------------------------------------------------------
    def universe(self) -> tuple[str, ...]:
        return tuple(self.wanted)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        new = [s for s in dict.fromkeys(symbols) if s not in self.wanted]
        self.wanted += new
        if new:
            self._load_history(new)
            self._wake.set()
            if self.streamer is not None:
                await self.streamer.subscribe(new)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        gone = set(symbols)
        self.wanted = [s for s in self.wanted if s not in gone]
        for name in gone:
            for table in (self._next_at, self._last, self._volume, self.stale, self.previous_closes,
                          self._close_day):
                table.pop(name, None)
            if self.history is not None:
                self.history.stop(name)
        if self._state == "stale" and not self.stale:
            self._emit("live", str(self.budget))
        self._wake.set()
        if self.streamer is not None:
            await self.streamer.unsubscribe(gone)

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
        if self._stream_task is not None:
            self._stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream_task
            self._stream_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._crumb = None  # its cookie went with the session

    # --- the poller ----------------------------------------------------------------------------
    async def stream(self) -> AsyncGenerator[FeedItem, None]:
        self._closed = False
        yield FeedStatus(self.name, "connecting")  # state stays: quote() may have made the feed live
        if self.streamer is not None and self._stream_task is None:
            self._stream_task = asyncio.get_running_loop().create_task(self._follow_stream(),
                                                                       name="yahoo-stream")
        self._load_history(self.wanted)
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
            if self.history is not None:
                await self.history.aclose()
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

    def _drain(self) -> Iterable[FeedItem]:
        if self.history is not None:  # what it finished (it took the ticks received before it first)
            for item in self.history.take():
                yield dataclasses.replace(item, state=self._state) if isinstance(item, FeedStatus) else item
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
            # formatted=false: plain numbers, not {"raw": 178.1, "fmt": "178.10"} (yfinance sends it too)
            params = {"symbols": ",".join(batch), "formatted": "false", "crumb": crumb}
            limit = MAX_BODY_BYTES + MAX_QUOTE_BYTES * len(batch)
            if (answer := await self._get("GET", self.url + QUOTE_PATH, params, None, ACCEPT_JSON,
                                          limit, affected)) is None:
                return False
            if (status := answer.status) != 401 or fresh or refused is not None:
                break
            self.counters.http_errors[status] += 1  # expired: a new cookie and crumb, then once more
            refused = crumb
        host, body = urlsplit(self.url).netloc, answer.body or b""
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
        self._affected = affected
        self._open().clear_cookies()  # a refused crumb's cookie goes too: Yahoo issues crumbs per cookie
        why = await self.handshake.cookie()
        if why is None:
            return None  # a request failed: reported already
        if why:
            self._fail(affected, why, self.backoff.next())
            return None
        answer, crumb = await self.handshake.crumb(self.counters.bad_message)
        if answer is None:
            return None
        where = f"no crumb from {urlsplit(self.url).netloc}"
        if answer.status != 200:
            self._http_error(affected, f"{where}: HTTP {answer.status}", answer)
            return None
        if not crumb:
            what = "empty answer" if not (answer.body or b"").strip() else "not a crumb"
            self._fail(affected, f"{where} ({what})", self.backoff.next())
            return None
        return crumb

    async def _get(self, method: str, url: str, params: dict[str, str] | None, data: dict[str, str] | None,
                   accept: str, limit: int, affected: list[str] | None = None) -> Answer | None:
        """One request, paid for (limiter, budget); None when there was no usable answer (a network
        failure, a body over ``limit``, no budget: each reported; or backing off since it queued)."""
        affected = self._affected if affected is None else affected
        if self.budget.left == 0:
            self._fail(affected, str(self.budget), self.budget.resets_in(), next_word="next request")
            return None
        await self.limiter.acquire()
        if self._clock() < self._resume_at:  # another request failed while this one waited
            return None
        self.budget.spend()
        self.counters.requests += 1
        try:
            answer = await self._open().request(method, url, params=params, data=data,
                                                headers={"Accept": accept}, limit=limit, timeout=self.timeout)
        except RequestFailed as exc:
            if exc.timeout:
                self.counters.timeouts += 1
            else:
                self.counters.connection_errors += 1
            self._fail(affected, exc.reason, self.backoff.next())
            return None
        if answer.body is not None:
            return answer
        host = urlsplit(url).netloc
        self.counters.messages += 1
        self.counters.bad_message("answer too large",
                                  f"HTTP {answer.status} from {host}: over {limit:,} bytes")
        self._fail(affected, f"answer from {host} over {limit:,} bytes", self.backoff.next())
        return None

    def _open(self) -> YahooSession:
        if self._session is None:
            self._session = YahooSession()
        return self._session

    def _http_error(self, affected: list[str], what: str, answer: Answer) -> None:
        """An HTTP error: Yahoo's explanation, if any, and Retry-After, if any, else the backoff."""
        self.counters.http_errors[answer.status] += 1
        wait = retry_after(answer.retry_after)
        self._fail(affected, what + _error_text(answer.body or b""),
                   self.backoff.next() if wait is None else wait)

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
            # never closer: a price pushed while this poll was in flight put the symbol's next poll away
            self._next_at[s] = max(next_at, self._next_at.get(s, 0.0))
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
            if (quote := quote_of(name, q, recv_ns, self.counters.bad_message)) is not None:
                if (decimals := hint_decimals(q.price_hint)) is not None:
                    self.decimals[name] = decimals  # the precision Yahoo shows the symbol at
                if (close := previous_close(q)) is not None:
                    self.previous_closes[name] = close  # the day P&L's reference (engine.positions)
                    self._close_day[name] = quote.time_ns // DAY_NS
                self._quote(quote)
        return why

    def _quote(self, quote: Quote) -> None:
        """A good quote, polled or pushed: the cache, and a tick when its time or price is new."""
        name, ts, price, volume = quote.symbol, quote.time_ns, quote.price, quote.volume
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
            self.counters.bad_message("symbol table full", exc)
            return
        base = self._volume.get(name)
        size = 0.0
        if volume is not None:
            size = volume - base if base is not None and volume >= base else 0.0
            self._volume[name] = volume
        tick = (slot, ts, quote.received_ns, price, size, 0, -1)
        history = self.history
        self._last[name] = (ts, price)
        if history is not None:
            # after an outage (the symbol was stale): the bars it missed are refilled first
            if (history.holding(slot) or (name in self.stale and last is not None
                                          and history.resume(slot, last[0], ts))):
                history.hold(slot, -1, ts, tick)  # counted as a tick when it is let go
                return
            history.passing(slot, tick)
        self.batcher.add(*tick)
        self.counters.ticks += 1

    # --- the streamer --------------------------------------------------------------------------
    def _pushed(self, name: str, pricing: Pricing, recv_ns: int) -> None:
        """A price from the streamer: a quote like a polled one; the symbol's next poll moves away."""
        if name not in self.wanted:
            return
        volume = None if pricing.day_volume is None else float(pricing.day_volume)
        self._quote(Quote(name, pricing.price, pricing.time_ms * 1_000_000, volume,
                          pricing.currency or None, recv_ns))
        if self._close_day.get(name) == pricing.time_ms // DAY_MS:  # else a poll brings the day's close
            self._next_at[name] = self._clock() + STREAM_HOLD_S
        if self.stale.pop(name, None) is not None and not self.stale and self._state == "stale":
            self._emit("live", str(self.budget))
        if not self._ever_live or self._state in ("connecting", "reconnecting"):
            self._ever_live = True
            if not self.stale:
                self._emit("live", str(self.budget))
        self._wake.set()

    async def _follow_stream(self) -> None:
        """Run the streamer: its prices arrive through ``_pushed``; its state only changes how much is
        polled (a symbol it pushes is left alone), so it is logged, never the feed's own state."""
        assert self.streamer is not None
        async with contextlib.aclosing(self.streamer.stream()) as items:
            async for item in items:
                if isinstance(item, FeedStatus) and item.state != self.stream_state:
                    self.stream_state = item.state
                    log.info("yahoo: streamer %s%s", item.state, f" ({item.reason})" if item.reason else "")
