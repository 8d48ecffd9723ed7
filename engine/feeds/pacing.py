"""Pacing for feeds that pay per request (REST polling): a token bucket that spaces requests, a sliding
hourly budget that caps them, the delay a server asks for with ``Retry-After``, a body read up to a
cap, and the one line that tells the user why a request failed (the reason a stale status carries
until the retry).

The bucket and the budget take their clock (and the bucket its sleep) as arguments, so tests drive them
with a fake clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from engine.feeds.ws import describe_error

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
MAX_RETRY_AFTER_S = 3600.0  # a Retry-After longer than this is taken as this


class TokenBucket:
    """Spaces requests: ``per_minute`` on average, at most ``burst`` back to back."""

    def __init__(self, per_minute: float, burst: int = 1, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if not per_minute > 0 or burst < 1:
            raise ValueError(f"rate limit needs per_minute > 0 and burst >= 1, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.tokens = float(burst)
        self.waits = 0  # times a request had to wait for a token
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    def delay(self) -> float:
        """Take a token and return 0, or return how long until one is available (taking nothing)."""
        now = self._clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate

    async def acquire(self) -> None:
        while (wait := self.delay()) > 0:
            self.waits += 1
            await self._sleep(wait)


class RequestBudget:
    """At most ``per_hour`` requests in any sliding window of ``window_s`` (an hour)."""

    def __init__(self, per_hour: int, window_s: float = 3600.0, clock: Clock = time.monotonic) -> None:
        if per_hour < 1 or not window_s > 0:
            raise ValueError(f"request budget needs per_hour >= 1, got {per_hour}")
        self.limit = per_hour
        self.window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()

    def _prune(self) -> float:
        now = self._clock()
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        return now

    @property
    def left(self) -> int:
        self._prune()
        return max(0, self.limit - len(self._sent))

    def spend(self) -> None:
        self._sent.append(self._prune())

    def resets_in(self) -> float:
        """Seconds until a request may be made again (0 while some are left)."""
        now = self._prune()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[len(self._sent) - self.limit] + self.window_s - now

    def __str__(self) -> str:
        return f"{self.left}/{self.limit} requests left this hour"


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


async def read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """A whole body, or None once it is longer than ``limit`` bytes (so at most ``limit`` + 1 are read;
    aiohttp decompresses a compressed body a bounded chunk at a time, so the cap holds for what it
    decompresses to)."""
    body = bytearray()
    while chunk := await content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def describe_failure(exc: BaseException, url: str, timeout: float) -> str:
    """Why a request failed, in one line: DNS, refused, TLS, timeout, dropped connection."""
    host = urlsplit(url).netloc or url
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {host}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        err = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
        why = getattr(err, "verify_message", None) or getattr(err, "reason", None) or err
        return f"TLS error with {host}: {why}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_error(exc.os_error, url)
    if isinstance(exc, TimeoutError):
        return f"no answer from {host} within {timeout:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{host} closed the connection"
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__} from {host}: {exc}"
    return describe_error(exc, url)
