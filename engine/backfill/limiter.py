"""One limiter per REST host, shared by every request to it: request weight per minute (Binance) or
requests per second (Coinbase), requests in flight, and the pauses a server orders with ``Retry-After``.

Binance (spot REST docs, "LIMITS"/"IP Limits", read 2026-07): every route has a weight; an IP may spend
``REQUEST_WEIGHT`` 6,000 a minute (``enums.md``, "Rate limiters"; CHANGELOG 2023-08-25); every answer
carries ``X-MBX-USED-WEIGHT-1M``, the weight the IP has used in the current minute; past the limit the
answer is 429 with ``Retry-After`` (seconds), and an IP that keeps asking after 429s is banned: 418, with
``Retry-After`` until the ban ends (2 minutes to 3 days). The docs do not say whether the minute is a
fixed or a sliding window; clients that watch the header (e.g. the ``x-mbx-used-weight-1m`` gist that
binance-connector-python users share, and the connector's own ``show_weight_usage``) wait for the next
wall-clock minute, and so does this limiter, trusting the next answer's header to correct it.

The limiter spends at most ``share`` of the limit (the IP may have other clients) and keeps at most
``max_in_flight`` requests open; a request that would have to wait longer than ``max_wait_s`` (65 s: a
spent minute, or a 429's pause, is waited out; a ban, two minutes at least, is not) is not made:
``Throttled`` says how long it would have been, and the caller gives up on that history instead of
holding live trades back for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from engine.feeds.pacing import retry_after

log = logging.getLogger("tickdeck.backfill")

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


class Throttled(Exception):
    """The host asked us to wait (or our budget is spent) for longer than the caller will wait."""

    def __init__(self, wait_s: float, why: str) -> None:
        super().__init__(f"{why}; next request in {wait_s:.0f} s")
        self.wait_s = wait_s


class WeightLimiter:
    """Request weight per ``window_s`` (a fixed window on the wall clock), requests in flight, and the
    pause a 429 or 418 orders. ``clock`` is wall time in seconds; ``sleep`` is asyncio's (tests pass
    fakes)."""

    def __init__(self, host: str, limit: int = 6000, *, share: float = 0.8, window_s: float = 60.0,
                 max_in_flight: int = 10, max_wait_s: float = 65.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if limit < 1 or not 0 < share <= 1 or not window_s > 0 or max_in_flight < 1:
            raise ValueError(f"bad limiter settings for {host}: {limit=}, {share=}, {window_s=}, "
                             f"{max_in_flight=}")
        self.host = host
        self.limit = limit
        self.budget = max(1, int(limit * share))
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.used = 0  # weight the host says we used in the current window (or what we counted)
        self.reserved = 0  # weight of the requests in flight
        self.in_flight = 0
        self.paused_until = 0.0  # wall time before which nothing is sent (Retry-After)
        self.banned = False  # the pause is an IP ban (418)
        self.waits = 0  # times a request waited for budget, a slot or a pause
        self._window = -1
        self._clock = clock
        self._sleep = sleep
        self._freed = asyncio.Event()

    def _roll(self, now: float) -> None:
        window = math.floor(now / self.window_s)
        if window != self._window:
            self._window = window
            self.used = 0

    async def acquire(self, weight: int) -> None:
        """Wait until a request of ``weight`` may go; raise ``Throttled`` rather than wait too long."""
        while True:
            now = self._clock()
            self._roll(now)
            # (a first request always goes, however heavy: there is nothing to wait for)
            over = self.used + self.reserved + weight > self.budget and (self.used or self.reserved)
            if now < self.paused_until:
                wait, why = self.paused_until - now, (f"{self.host} banned this IP (HTTP 418)" if self.banned
                                                      else f"{self.host} asked us to slow down (HTTP 429)")
            elif self.in_flight >= self.max_in_flight or (over and self.reserved):
                self.waits += 1
                self._freed.clear()
                await self._freed.wait()  # a request in flight ends within its own timeout
                continue
            elif over:
                wait = (self._window + 1) * self.window_s - now + 0.05
                why = f"request weight for {self.host} spent ({self.used} of {self.limit} this minute)"
            else:
                self.reserved += weight
                self.in_flight += 1
                return
            if wait > self.max_wait_s:
                raise Throttled(wait, why)
            self.waits += 1
            await self._sleep(max(wait, 0.0))

    def release(self, weight: int, status: int | None, headers: Mapping[str, str] | None) -> float:
        """A request of ``weight`` ended with ``status`` (None: no answer); returns the pause it ordered
        (seconds; 0 for none)."""
        self.in_flight -= 1
        self.reserved -= weight
        self._freed.set()
        now = self._clock()
        self._roll(now)
        used = _int(headers.get(WEIGHT_HEADER)) if headers is not None else None
        if used is not None:
            self.used = used
        elif status is not None:
            self.used += weight  # a server that does not say: count it ourselves
        if status not in (418, 429):
            return 0.0
        seconds = retry_after(headers.get("Retry-After")) if headers is not None else None
        if seconds is None:  # not said: to the end of this window (a 429), or a ban's shortest, 2 min
            seconds = (self._window + 1) * self.window_s - now if status == 429 else 120.0
        self.paused_until = max(self.paused_until, now + seconds)
        self.banned = status == 418
        log.warning("%s answered HTTP %d: no requests to it for %.0f s", self.host, status, seconds)
        return seconds

    def describe(self) -> str:
        return f"{self.used}/{self.limit} weight used this minute"


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


class RateLimiter:
    """``share`` of ``limit`` requests per ``window_s``, evenly spaced (Coinbase: 10 a second per IP for
    public endpoints, "Advanced Trade API Rate Limits"; the docs do not say whether the second is fixed
    or sliding, nor how a burst is counted, so requests go one every ``window_s / (limit x share)``: never
    more than the share in any second, even after the network has bunched them up a little), at most
    ``max_in_flight`` open, and the pause a 429 orders (``Retry-After``, else a window). The interface is
    ``WeightLimiter``'s; every request weighs one."""

    def __init__(self, host: str, limit: int, *, share: float = 0.8, window_s: float = 1.0,
                 max_in_flight: int = 8, max_wait_s: float = 65.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if limit < 1 or not 0 < share <= 1 or not window_s > 0 or max_in_flight < 1:
            raise ValueError(f"bad limiter settings for {host}: {limit=}, {share=}, {window_s=}, "
                             f"{max_in_flight=}")
        self.host = host
        self.limit = limit
        self.budget = max(1, int(limit * share))
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.gap = window_s / self.budget
        self.in_flight = 0
        self.paused_until = 0.0
        self.waits = 0
        self.sent = 0
        self._next = 0.0  # when the next request may go
        self._clock = clock
        self._sleep = sleep
        self._freed = asyncio.Event()

    async def acquire(self, weight: int = 1) -> None:
        """Wait until a request may go; raise ``Throttled`` rather than wait too long."""
        while True:
            now = self._clock()
            if now < self.paused_until:
                wait, why = self.paused_until - now, f"{self.host} asked us to slow down (HTTP 429)"
            elif self.in_flight >= self.max_in_flight:
                self.waits += 1
                self._freed.clear()
                await self._freed.wait()  # a request in flight ends within its own timeout
                continue
            elif now < self._next:
                wait, why = self._next - now, f"{self.budget} requests to {self.host} a second"
            else:
                self._next = now + self.gap
                self.sent += 1
                self.in_flight += 1
                return
            if wait > self.max_wait_s:
                raise Throttled(wait, why)
            self.waits += 1
            await self._sleep(wait)

    def release(self, weight: int, status: int | None, headers: Mapping[str, str] | None) -> float:
        """A request ended with ``status`` (None: no answer); returns the pause it ordered (seconds)."""
        self.in_flight -= 1
        self._freed.set()
        if status != 429:
            return 0.0
        seconds = retry_after(headers.get("Retry-After")) if headers is not None else None
        if seconds is None:
            seconds = self.window_s
        self.paused_until = max(self.paused_until, self._clock() + seconds)
        log.warning("%s answered HTTP 429: no requests to it for %.1f s", self.host, seconds)
        return seconds

    def describe(self) -> str:
        return f"{self.budget} of {self.limit} requests a second"
