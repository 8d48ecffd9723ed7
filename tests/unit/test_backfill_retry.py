"""History that fails at start is tried again (Binance here; Coinbase and Yahoo have theirs in their own
files): the symbol streams live meanwhile, its note says when the next try is, and the try that works
comes as a refill that leaves the symbol exactly as if its history had come at once. A failure that
cannot pass (a refusal) is not tried again, and the tries are bounded."""

from __future__ import annotations

import asyncio

from engine.backfill.loader import RETRIES
from engine.feeds.backoff import Backoff
from engine.feeds.base import Refill
from tests.servers.binance_rest import BinanceHistoryServer
from tests.unit.backfill_support import (
    M0,
    MINUTE,
    MS,
    assert_same,
    engine,
    make_history,
    running,
    tape_ticks,
    trade,
)

NAMES = ("BTCUSDT", "ETHUSDT")
F = M0 + 250 * MINUTE
KLINES = "/api/v3/klines"


async def test_history_that_failed_at_start_is_tried_again_and_ends_exact() -> None:
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=61)
        await make_history(server, "ETHUSDT", M0, 250, seed=62)
        await trade(server, "ETHUSDT", F + 1_000)
        for _ in range(4):  # every answer of ETH's first try
            server.rest.fail("error", KLINES, symbol="ETHUSDT", status=503)
        async with running(server, NAMES, retry_at_once=True) as run:
            await run.until(lambda: any(s.reason == "ETHUSDT: history loaded (try 2)" for s in run.statuses),
                            "ETH's second try", timeout=20)
            await trade(server, "ETHUSDT", F + 40_000, "88.00")
            await trade(server, "BTCUSDT", F + 40_001, "89.00")
            await run.applied(server, "ETHUSDT")
            await run.applied(server, "BTCUSDT")
            [first] = [s.reason for s in run.statuses if s.symbols == ("ETHUSDT",)][:1]
            assert first.startswith("ETHUSDT: no history (no usable answer from 127.0.0.1:")
            assert "; next try in " in first
            [refill] = [i for i in run.items if isinstance(i, Refill)]
            assert refill.sym == run.engine.symbols.get("ETHUSDT")
            c = run.feed.counters
            assert (c.history_done, c.history_failed, c.refills, c.rest_bad["HTTP 503"]) == (2, 0, 0, 4)
            want = engine(NAMES)
            want.ingest(tape_ticks(server, want))
            now = F + 40_001
            want.close_due((now - now % MINUTE) * MS)
            assert_same(run.engine, want, NAMES)


async def test_a_refusal_is_not_tried_again_and_the_tries_are_bounded() -> None:
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=63)
        await make_history(server, "ETHUSDT", M0, 250, seed=64)
        server.rest.fail("error", KLINES, symbol="BTCUSDT", status=403, code=-1003, msg="WAF")
        for _ in range(4 * (RETRIES + 1)):  # every try of ETH fails
            server.rest.fail("error", KLINES, symbol="ETHUSDT", status=503)
        async with running(server, NAMES, retry_at_once=True, retry_backoff=Backoff(0.01, 0.02)) as run:
            await run.until(lambda: any("gave up" in s.reason for s in run.statuses), "ETH given up")
            notes = [s.reason for s in run.statuses if s.symbols == ("ETHUSDT",)]
            assert len(notes) == RETRIES + 1 and all("next try in" in n for n in notes[:-1])
            assert notes[-1].endswith(f"; gave up after {RETRIES + 1} tries)")
            btc = [s.reason for s in run.statuses if s.symbols == ("BTCUSDT",)]
            assert len(btc) == 1 and "next try" not in btc[0]
            assert [q["symbol"] for p, q, _ in server.rest.requests if p == KLINES].count("BTCUSDT") == 1
            assert run.feed.counters.history_failed == 2
            await trade(server, "ETHUSDT", F + 5_000)
            await run.applied(server, "ETHUSDT")  # it streams live all the same


async def test_a_kline_streams_retry_keeps_the_forming_bars_updates_passed_on_meanwhile() -> None:
    """A kline stream has no ids: its later try brings the closed klines, and hands back the updates of
    the forming bar that went on to the engine while it waited, so the bar it rebuilds loses nothing."""
    release = asyncio.Event()

    async def wait_for_the_test(_: float) -> None:
        await release.wait()

    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=65)
        server.now_ms = F + 5_000
        for _ in range(4):
            server.rest.fail("error", KLINES, symbol="BTCUSDT", status=503)
        async with running(server, ("BTCUSDT",), stream="kline_1m", retry_at_once=True,
                           retry_sleep=wait_for_the_test) as run:
            await run.until(lambda: any("next try in" in s.reason for s in run.statuses),
                            "the first try failed")
            await server.wait_subscribed("btcusdt@kline_1m")
            await server.kline("BTCUSDT", "1m", F, "120.00", "1.500", F + 1_000)
            await server.kline("BTCUSDT", "1m", F, "121.00", "2.000", F + 2_000)
            await run.until(lambda: run.engine.forming_bar(0) is not None
                            and run.engine.forming_bar(0)[1][4] == 2.0, "the updates live")  # type: ignore[index]
            release.set()
            await run.until(lambda: any(s.reason == "BTCUSDT: history loaded (try 2)" for s in run.statuses),
                            "the second try")
            await run.until(lambda: len(run.engine.history.tail(0)[0]) > 200, "the history in the engine")
            _, bar = run.engine.forming_bar(0)  # type: ignore[misc]
            assert bar.tolist() == [120.0, 121.0, 120.0, 121.0, 2.0]
            want = engine(("BTCUSDT",))
            want.ingest(tape_ticks(server, want))
            want.close_due(F * MS)
            times, bars = run.engine.history.tail(0)
            want_t, want_bars = want.history.tail(0)
            assert (times == want_t[-len(times):]).all() and (bars == want_bars[-len(times):]).all()
