"""Binance's request weight, honoured: the limiter follows ``X-MBX-USED-WEIGHT-1M``, waits out the minute
when its share is spent, pauses for ``Retry-After`` after a 429 or a 418 and gives up rather than wait
longer than it may; the REST stand-in enforces the same limits (429, then a 418 ban for a client that
keeps going), and the history client never earns a ban from it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bench.servers.history_tape import RestHistory, Tape
from engine.backfill.binance import BinanceHistory
from engine.backfill.limiter import Throttled, WeightLimiter
from engine.feeds.base import FeedCounters


class FakeTime:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds
        await asyncio.sleep(0)


def limiter(t: FakeTime, **kw: object) -> WeightLimiter:
    return WeightLimiter("api.example", clock=t.clock, sleep=t.sleep, **kw)  # type: ignore[arg-type]


async def test_the_used_weight_header_is_followed_and_a_spent_minute_waited_out() -> None:
    t = FakeTime()  # 20 s into a minute
    lim = limiter(t)
    assert lim.budget == 4800  # 80 % of Binance's 6,000 a minute
    await lim.acquire(2)
    lim.release(2, 200, {"X-MBX-USED-WEIGHT-1M": "4797"})  # other clients of this IP used the rest
    assert lim.used == 4797
    await lim.acquire(2)  # 4799 of 4800: goes
    lim.release(2, 200, {"X-MBX-USED-WEIGHT-1M": "4799"})
    await lim.acquire(4)  # would be 4803: waits for the next minute, when Binance's count restarts
    assert t.slept == [40.05] and lim.used == 0
    lim.release(4, 200, {"X-MBX-USED-WEIGHT-1M": "4"})
    assert lim.used == 4 and lim.in_flight == 0


async def test_retry_after_pauses_every_request_and_a_long_ban_gives_up() -> None:
    t = FakeTime()
    lim = limiter(t)
    await lim.acquire(2)
    assert lim.release(2, 429, {"Retry-After": "40", "X-MBX-USED-WEIGHT-1M": "6001"}) == 40.0
    await lim.acquire(2)  # (to the end of the minute, when the weight spent restarts)
    assert t.slept == [40.0] and lim.used == 0
    assert lim.release(2, 418, {"Retry-After": "600"}) == 600.0
    with pytest.raises(Throttled, match=r"api.example banned this IP \(HTTP 418\); next request in 600 s"):
        await lim.acquire(2)
    assert t.slept == [40.0]  # no wait at all: the symbol goes on without history
    t.now += 600
    await lim.acquire(2)  # the ban is over


async def test_requests_in_flight_are_capped() -> None:
    t = FakeTime()
    lim = limiter(t, max_in_flight=2)
    await lim.acquire(2)
    await lim.acquire(2)
    third = asyncio.ensure_future(lim.acquire(2))
    await asyncio.sleep(0.01)
    assert not third.done() and lim.in_flight == 2
    lim.release(2, 200, {})
    await asyncio.wait_for(third, 1)
    assert lim.in_flight == 2 and lim.waits == 1


async def _tape(symbol: str, seconds: int, start_ms: int) -> Tape:
    tape = Tape()
    for i in range(seconds):
        tape.add(symbol, i + 1, start_ms + i * 1000 + 5, f"{10 + (i % 7) / 8:.3f}", "0.125", i % 2 == 0)
    return tape


async def test_the_stand_in_answers_429_past_the_limit_then_bans_a_client_that_keeps_going() -> None:
    tape = await _tape("BTCUSDT", 10, 1_700_000_000_000)
    rest = RestHistory(tape, limit=10, window_s=3600.0, ban_s=120.0, ban_after=3)
    await rest.start()
    try:
        seen = []
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                async with session.get(f"{rest.url}/api/v3/klines",
                                       params={"symbol": "BTCUSDT", "interval": "1s", "limit": "5"}) as resp:
                    seen.append((resp.status, resp.headers.get("X-MBX-USED-WEIGHT-1M"),
                                 resp.headers.get("Retry-After"), (await resp.json())))
        assert [s for s, *_ in seen] == [200] * 5 + [429] * 3 + [418] * 2
        assert [w for _, w, _, _ in seen[:5]] == ["2", "4", "6", "8", "10"]
        assert seen[5][3]["code"] == -1003 and "Too much request weight used" in seen[5][3]["msg"]
        assert int(seen[5][2]) > 0
        assert seen[8][2] == "120" and "IP banned until" in seen[8][3]["msg"]
    finally:
        await rest.stop()


async def test_the_history_client_stays_within_the_limit_and_is_never_banned() -> None:
    start_ms = 1_700_000_000_000
    tape = await _tape("BTCUSDT", 6000, start_ms)
    # 6 pages of 1 s klines at weight 2: twice the client's share of a 10-a-window limit
    rest = RestHistory(tape, now_ms=lambda: start_ms + 6_000_000, limit=10, window_s=1.0)
    await rest.start()
    counters = FeedCounters("binance")
    source = BinanceHistory(rest.url, counters, limiter=WeightLimiter("local", limit=10, window_s=1.0))
    began = time.monotonic()
    try:
        bars = await source.bars("BTCUSDT", start_ms * 1_000_000, (start_ms + 6_000_000) * 1_000_000,
                                 1_000_000_000)
    finally:
        took = time.monotonic() - began
        await source.aclose()
        await rest.stop()
    assert len(bars) == 6000
    assert [s for _, _, s in rest.requests] == [200] * 6
    assert not counters.rest_bad
    # six pages inside one window would be 12 of its 10: the limiter must have held one back, unless the
    # machine was so slow that the pages spread over more than a window by themselves
    assert source.limiter.waits >= 1 or took > 1.0


async def test_a_429_is_honoured_and_the_request_asked_again() -> None:
    start_ms = 1_700_000_000_000
    tape = await _tape("BTCUSDT", 3000, start_ms)
    rest = RestHistory(tape, now_ms=lambda: start_ms + 3_000_000, limit=4, window_s=1.0, ban_after=1)
    await rest.start()
    counters = FeedCounters("binance")  # the client believes Binance's own limit: the stand-in is stricter
    source = BinanceHistory(rest.url, counters, limiter=WeightLimiter("local", limit=6000, window_s=1.0))
    try:
        bars = await source.bars("BTCUSDT", start_ms * 1_000_000, (start_ms + 3_000_000) * 1_000_000,
                                 1_000_000_000)
    finally:
        await source.aclose()
        await rest.stop()
    assert len(bars) == 3000
    statuses = [s for _, _, s in rest.requests]
    assert 429 in statuses and 418 not in statuses
    assert statuses.count(200) == 3 and counters.rest_bad["HTTP 429"] == statuses.count(429)
