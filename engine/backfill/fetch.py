"""One GET of a history service's JSON, asked again after an answer worth asking again.

Shared by the Binance and Coinbase sources (Yahoo's history goes through its feed's own browser-like
session and its own answer checks). Worth asking again, up to ``ATTEMPTS`` tries with a short growing
pause: no answer, a throttling status (after the limiter's own wait), an answer over ``BODY_CAP``, a
5xx, HTML or garbled JSON, or an answer of the wrong shape. A refusal (any other non-200, an error
object) says the same the next time: the service's ``take`` raises ``HistoryUnavailable(final=True)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import aiohttp
import msgspec

from engine.backfill.limiter import Throttled
from engine.backfill.source import HistoryUnavailable
from engine.feeds.base import FeedCounters
from engine.feeds.pacing import describe_failure, read_at_most

ATTEMPTS = 4
BODY_CAP = 4 << 20  # bytes; a full page of klines is about 150 kB, of candles about 45 kB
HTML = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")

T = TypeVar("T")


def not_json(body: bytes, host: str, counters: FeedCounters) -> str:
    """Why ``body`` is no JSON answer (HTML: a proxy's, a consent or error page; else garbled), counted."""
    html = body.lstrip()[:16].lower().startswith(HTML)
    counters.bad_answer("html" if html else "malformed json", body)
    return f"{'HTML' if html else 'a garbled answer'} instead of JSON from {host}"


class Limiter(Protocol):
    async def acquire(self, weight: int) -> None: ...
    def release(self, weight: int, status: int | None, headers: Mapping[str, str] | None) -> float: ...


class JsonGetter:
    """The retry loop of one service's GETs; ``take(status, decoded, body)`` turns a decoded answer into
    the result, or returns a string (why the answer's shape is wrong: asked again), or raises."""

    def __init__(self, host: str, limiter: Limiter, counters: FeedCounters, timeout: float,
                 session: Callable[[], aiohttp.ClientSession], sleep: Callable[[float], Awaitable[None]],
                 throttled: frozenset[int] = frozenset({429})) -> None:
        self.host = host
        self.limiter = limiter
        self.counters = counters
        self.timeout = timeout
        self.session = session
        self.sleep = sleep
        self.throttled = throttled
        self.requests: Counter[str] = Counter()  # requests sent, per endpoint (the benches report them)

    async def get(self, url: str, params: Mapping[str, Any], weight: int, endpoint: str,
                  take: Callable[[int, Any, bytes], T | str]) -> T:
        why = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await self.sleep(min(0.25 * 2 ** attempt, 4.0))
            try:
                await self.limiter.acquire(weight)
            except Throttled as exc:
                raise HistoryUnavailable(str(exc)) from None
            status: int | None = None
            headers: Any = None
            body: bytes | None = b""
            self.requests[endpoint] += 1
            try:
                async with self.session().get(url, params=params,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    status, headers = resp.status, resp.headers
                    body = await read_at_most(resp.content, BODY_CAP)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = describe_failure(exc, url, self.timeout)
                self.counters.bad_answer("no answer", why)
                continue
            finally:
                pause = self.limiter.release(weight, status, headers)
            assert status is not None
            if status in self.throttled:
                why = f"{self.host} answered HTTP {status}; asked to wait {pause:.1f} s"
                self.counters.bad_answer(f"HTTP {status}", body or b"")
                continue
            if body is None:
                why = f"an answer from {self.host} over {BODY_CAP >> 20} MiB"
                self.counters.bad_answer("answer too large", why)
                continue
            if status >= 500:
                why = f"HTTP {status} from {self.host}"
                self.counters.bad_answer(f"HTTP {status}", body)
                continue
            try:
                decoded = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                why = not_json(body, self.host, self.counters)
                continue
            result = take(status, decoded, body)
            if isinstance(result, str):
                why = result
                self.counters.bad_answer("unexpected answer", body)
                continue
            return result
        raise HistoryUnavailable(f"no usable answer from {self.host} after {ATTEMPTS} tries: {why}")
