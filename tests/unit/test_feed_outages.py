"""Long outages: every retry loop survives forever.

A backoff is driven through millions of attempts; then the feeds that reconnect with one (a WebSocket
feed, ``tickdeck attach``, the Yahoo poller) are driven through thousands of refused attempts, far past
the 1,024th that used to end them with an OverflowError. The waits between attempts are on a fake clock
(the feed's own sleep, replaced), so what the refusals would cost in real time is only added up: the
connections and requests themselves are real, against 127.0.0.1. ``pytest -s`` prints what each feed
went through (the README's figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections.abc import Iterator

import pytest

from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.binance import BinanceFeed
from engine.feeds.pacing import RequestBudget, TokenBucket
from engine.feeds.yahoo import YahooFeed
from engine.remote import RemoteRuntime
from engine.ticks import SymbolTable
from tests.fakes import FakeClock
from tests.servers.yahoo import YahooServer

ATTEMPTS = 2_000  # refused attempts a feed is driven through: the 1,024th used to end it
SEED = 7  # the backoffs below are the feeds' own (0.5 s to 30 s; Yahoo's 1 s to 60 s), seeded
HOUR = 3600.0


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so no one else takes it), not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def check_countdowns(feed: str, statuses: list[FeedStatus], clock: FakeClock, cap: float, base: float,
                     reason: str) -> None:
    """Every retry is announced with its reason and a countdown within [base/2, cap]; once the backoff
    has grown to the cap, the countdowns spread over that whole range (full jitter), none above it."""
    waits = [s.retry_in for s in statuses if s.state == "reconnecting"]
    late = waits[len(waits) // 2:]
    print(f"\nlong outage: {feed}: {len(waits):,} refused attempts over {clock.now / HOUR:.1f} simulated "
          f"hours; retry delays {min(waits):.2f} to {max(waits):.2f} s (cap {cap:g} s; mean of the last "
          f"half {sum(late) / len(late):.1f} s); last state: {statuses[-1].state}")
    assert all(s.reason == reason for s in statuses if s.state == "reconnecting")
    assert all(math.isfinite(w) and base / 2 <= w <= cap for w in waits)
    assert max(late) > 0.95 * cap and min(late) < 0.1 * cap
    assert "failed" not in {s.state for s in statuses}


def test_a_backoff_driven_through_millions_of_attempts_stays_finite_capped_and_jittered() -> None:
    b = Backoff(base=0.5, cap=30.0, rng=random.Random(5))
    assert b.max_attempt == 6  # 0.5 * 2**6 = 32 >= 30: from the 7th attempt on, the ceiling is the cap
    first = [b.next() for _ in range(7)]
    assert all(0.25 <= d <= c for d, c in zip(first, [0.5, 1, 2, 4, 8, 16, 30], strict=True))
    n, total, low, high = 2_000_000, 0.0, math.inf, 0.0
    for _ in range(n):
        d = b.next()
        total += d
        low = min(low, d)
        high = max(high, d)
    assert b.attempt == b.max_attempt == 6  # the exponent is bounded, not only the delay
    assert 0.25 <= low < 0.26 and 29.99 < high <= 30.0  # uniform over [base/2, cap]...
    assert total / n == pytest.approx((0.25 + 30.0) / 2, rel=0.01)  # ...with its mean
    b.reset()
    assert b.attempt == 0 and b.next() <= 0.5


@pytest.mark.parametrize(("base", "cap"), [(5e-324, 1.7e308), (1e-300, 1e300), (1.0, 1.0), (2.0, 3.0)])
def test_a_backoff_over_any_finite_range_never_raises(base: float, cap: float) -> None:
    b = Backoff(base=base, cap=cap, rng=random.Random(1))
    delays = [b.next() for _ in range(b.max_attempt + 3000)]
    assert all(math.isfinite(d) and min(base / 2, cap) <= d <= cap for d in delays)
    assert b.attempt == b.max_attempt <= 2098


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (2.0, 1.0), (1.0, math.inf), (math.nan, 1.0)])
def test_a_backoff_needs_a_finite_range(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap < inf"):
        Backoff(base=base, cap=cap)


async def test_a_websocket_feed_keeps_reconnecting_through_thousands_of_refusals() -> None:
    clock = FakeClock()
    with refusing_port() as port:
        feed = BinanceFeed(SymbolTable(4), f"ws://127.0.0.1:{port}", ["BTCUSDT"],
                           backoff=Backoff(rng=random.Random(SEED)))
        feed._sleep = clock.sleep  # type: ignore[assignment]
        statuses: list[FeedStatus] = []
        async with asyncio.timeout(120), contextlib.aclosing(feed.stream()) as stream:
            async for item in stream:
                assert isinstance(item, FeedStatus)
                statuses.append(item)
                if item.state == "reconnecting" and len(clock.sleeps) == ATTEMPTS - 1:
                    break
    assert [s.state for s in statuses] == ["connecting", "reconnecting"] * ATTEMPTS
    check_countdowns("binance", statuses, clock, cap=30.0, base=0.5,
                     reason=f"connection refused by 127.0.0.1:{port}")
    assert clock.sleeps == [s.retry_in for s in statuses if s.state == "reconnecting"][:-1]
    assert feed.counters.reconnects == ATTEMPTS - 1 and feed.counters.bad_total == 0
    assert feed.backoff.attempt == feed.backoff.max_attempt
    assert clock.now > 8 * HOUR  # about 15 s a retry: the 4.4 hours that used to end it are long past


async def test_attach_keeps_reconnecting_through_thousands_of_refusals() -> None:
    clock = FakeClock()
    statuses: list[FeedStatus] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the last wait lasts until the test stops the client
        await clock.sleep(seconds)
        if len(clock.sleeps) == ATTEMPTS:
            enough.set()
            await asyncio.Event().wait()

    with refusing_port() as port:
        remote = RemoteRuntime(f"ws://127.0.0.1:{port}", backoff=Backoff(rng=random.Random(SEED)))
        remote._sleep = sleep  # type: ignore[assignment]
        run = asyncio.create_task(remote.run(lambda update: None, statuses.append))
        waited = asyncio.create_task(enough.wait())
        try:
            async with asyncio.timeout(120):
                await asyncio.wait({run, waited}, return_when=asyncio.FIRST_COMPLETED)
            assert not run.done(), run.exception()
        finally:
            for task in (run, waited):
                task.cancel()
            await asyncio.wait({run, waited})
    assert [s.state for s in statuses] == ["connecting", "reconnecting"] * ATTEMPTS
    check_countdowns("attach", statuses, clock, cap=30.0, base=0.5,
                     reason=f"connection refused by 127.0.0.1:{port}")
    assert clock.sleeps == [s.retry_in for s in statuses if s.state == "reconnecting"]
    assert remote.feed.counters.reconnects == ATTEMPTS - 1 and remote.feed.counters.bad_total == 0
    assert remote.backoff.attempt == remote.backoff.max_attempt
    assert clock.now > 8 * HOUR


async def test_yahoo_keeps_retrying_through_thousands_of_refused_requests() -> None:
    clock = FakeClock()
    async with YahooServer({"AAPL": [(1_700_000_000, 190.0, 1000)]}) as server:
        for _ in range(ATTEMPTS):
            server.fail(503)
        # the production backoff, rate limit and hourly budget, on the fake clock
        feed = YahooFeed(SymbolTable(4), ["AAPL"], server.url, cookie_url=server.cookie_url,
                         clock=clock, sleep=clock.sleep, backoff=Backoff(1.0, 60.0, random.Random(SEED)),
                         limiter=TokenBucket(60.0, 5, clock=clock, sleep=clock.sleep),
                         budget=RequestBudget(2000, clock=clock))
        statuses: list[FeedStatus] = []
        async with asyncio.timeout(120), contextlib.aclosing(feed.stream()) as stream:
            async for item in stream:
                assert isinstance(item, FeedStatus)
                statuses.append(item)
                if feed.counters.http_errors[503] == ATTEMPTS:
                    break
    assert [s.state for s in statuses] == ["connecting"] + ["reconnecting"] * ATTEMPTS
    host = server.url.removeprefix("http://")
    check_countdowns("yahoo", statuses, clock, cap=60.0, base=1.0, reason=f"HTTP 503 from {host}")
    c = feed.counters
    assert (c.reconnects, c.requests, c.handshakes, c.bad_total) == (ATTEMPTS, ATTEMPTS + 2, 1, 0)
    assert c.budget.left > 0 and feed.stale == {"AAPL": f"HTTP 503 from {host}"}
    assert feed.backoff.attempt == feed.backoff.max_attempt
    assert clock.now > 16 * HOUR  # about 30 s a retry: the 8.3 hours that used to end it are long past
