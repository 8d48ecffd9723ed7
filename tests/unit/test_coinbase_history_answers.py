"""Coinbase's REST history when it misbehaves: errors, HTML, bodies cut short, rows out of order or twice
and 429s are counted per reason and asked again or put right (history stays exact); a refusal or an
empty range costs that history (the product streams live, its note says why); a failure that may pass is
tried again later and the product ends exact; and the client keeps within 10 requests a second."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from engine.feeds.base import Refill
from tests.servers.coinbase_history import CoinbaseHistoryServer
from tests.unit.backfill_support import assert_same
from tests.unit.coinbase_history_support import MINUTE, T0, make_history, reference, running

F = T0 + 250 * MINUTE
MS = 1_000_000
NAMES = ("BTC-USD", "ETH-USD")


async def test_answers_that_can_be_asked_again_or_put_right_leave_history_exact() -> None:
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", T0, 250, seed=41)
        await make_history(server, "ETH-USD", T0, 250, seed=42)
        for product in NAMES:
            await server.trade(product, "99.00", "0.5", at_ns=F + 1_000 * MS)
        for kind in ("html", "error", "cut"):  # its first page: asked again three times
            server.fail(kind, "candles", "BTC-USD")
        server.fail("disorder", "candles", "ETH-USD")  # its first page, then its second
        server.fail("twice", "candles", "ETH-USD")
        server.fail("429", "ticker", "ETH-USD")
        server.fail("twice", "ticker", "ETH-USD")
        async with running(server, NAMES, bars=400) as run:
            await run.applied(server, "BTC-USD")
            await run.applied(server, "ETH-USD")
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            for product in NAMES:
                await server.trade(product, "98.00", "0.25", "SELL", at_ns=F + 20_000 * MS)
                await run.applied(server, product)
            c = run.feed.counters
            assert c.rest_bad == Counter({"html": 1, "HTTP 500": 1, "malformed json": 1, "HTTP 429": 1,
                                          "out-of-order bars": 1, "overlapping bars": 1,
                                          "overlapping trades": 1})
            assert (c.history_failed, c.bad_total, c.gaps) == (0, 0, 0)
            assert not [s for s in run.statuses if s.symbols]  # no notes: every history came whole
            assert_same(run.engine, reference(server, NAMES, F + 20_000 * MS), NAMES)
            assert server.count("candles", "BTC-USD") == 2 + 3  # two pages; HTML, the 500 and the cut again
            assert server.limited == 0


async def test_history_that_cannot_be_had_is_noted_and_the_product_streams_live() -> None:
    names = ("BTC-USD", "ETH-USD", "SOL-USD")
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", T0, 250, seed=43)
        await make_history(server, "ETH-USD", T0, 250, seed=44)
        server.now_ns = F + 500 * MS  # SOL-USD has never traded
        server.fail("error", "candles", "ETH-USD", status=403)
        async with running(server, names) as run:
            await run.until(lambda: run.feed.counters.history_done == 3, "every history tried")
            server.now_ns = None
            for i, name in enumerate(names):
                await server.trade(name, "12.50", "0.5", at_ns=F + (1_000 + i) * MS)
                await run.applied(server, name)  # each streams live
            c = run.feed.counters
            assert c.rest_bad == Counter({"HTTP 403": 1, "empty range": 1})
            assert (c.history_total, c.history_done, c.history_failed) == (3, 3, 2)
            notes = {s.symbols[0]: s.reason for s in run.statuses if s.symbols}
            host = server.rest_url.removeprefix("http://")
            assert notes == {"ETH-USD": f"ETH-USD: no history ({host} refused ETH-USD: internal error "
                                        "(INTERNAL) (HTTP 403))",
                             "SOL-USD": "SOL-USD: no history (coinbase has no bars or trades of it)"}
            assert server.count("candles", "ETH-USD") == 1  # a refusal is not asked again, nor tried later


async def test_history_that_failed_is_tried_again_and_the_product_ends_exact() -> None:
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", T0, 250, seed=45)
        await make_history(server, "ETH-USD", T0, 250, seed=46)
        await server.trade("ETH-USD", "77.00", "0.5", at_ns=F + 1_000 * MS)
        for _ in range(4):  # every answer of the first try
            server.fail("error", "candles", "ETH-USD", status=503)
        server.gate = None
        async with running(server, NAMES) as run:
            await run.until(lambda: any(s.reason == "ETH-USD: history loaded (try 2)" for s in run.statuses),
                            "ETH's second try")
            await server.trade("ETH-USD", "78.00", "0.25", at_ns=F + 30_000 * MS)
            await server.trade("BTC-USD", "78.00", "0.25", at_ns=F + 30_001 * MS)
            await run.applied(server, "ETH-USD")
            await run.applied(server, "BTC-USD")
            first = next(s.reason for s in run.statuses if s.symbols == ("ETH-USD",))
            assert first.startswith("ETH-USD: no history (no usable answer from ")
            assert "; next try in " in first
            eth = run.engine.symbols.get("ETH-USD")
            [retry] = [i for i in run.items if isinstance(i, Refill)]
            assert eth is not None and retry.sym == eth
            assert F - 300 * MINUTE <= retry.since_ns == int(run.engine.history.tail(eth)[0][0])
            c = run.feed.counters
            assert (c.history_failed, c.refills, c.rest_bad["HTTP 503"]) == (0, 0, 4)
            assert_same(run.engine, reference(server, NAMES, F + 30_001 * MS), NAMES)


async def test_twelve_products_load_within_coinbases_ten_requests_a_second() -> None:
    products = {f"P{i:02d}-USD": 10.0 + i for i in range(12)}
    names = tuple(products)
    async with CoinbaseHistoryServer(products=products) as server:
        for i, name in enumerate(names):
            await make_history(server, name, T0 + 200 * MINUTE, 50, seed=50 + i, least=1)
            await server.trade(name, "10.00", "0.5", at_ns=F + (1_000 + i) * MS)
        async with running(server, names, bars=50) as run:
            for name in names:
                await run.applied(server, name)
            c = run.feed.counters
            assert c.history_done == 12 and c.history_failed == 0 and not c.rest_bad
            assert server.limited == 0  # never past 10 in any second
            assert len(server.requests) >= 24 and run.source.limiter.waits > 0  # it had to wait


async def test_the_stand_in_refuses_what_coinbase_refuses() -> None:
    """So the tests above can fail: more than 350 candles, a granularity Coinbase has not, more than 10
    requests a second."""
    async with CoinbaseHistoryServer() as server, aiohttp.ClientSession() as session:
        url = f"{server.rest_url}/api/v3/brokerage/market/products/BTC-USD/candles"
        start = T0 // 1_000_000_000

        async def get(**query: str) -> tuple[int, dict[str, str]]:
            async with session.get(url, params=query) as resp:
                return resp.status, await resp.json()
        assert await get(start=str(start), end=str(start + 350 * 60 - 1), granularity="ONE_MINUTE") == (
            200, {"candles": []})
        status, body = await get(start=str(start), end=str(start + 350 * 60), granularity="ONE_MINUTE")
        assert status == 400 and body["error"] == "INVALID_ARGUMENT"
        assert body["error_details"].endswith("number of candles requested should be less than 350")
        status, body = await get(start=str(start), end=str(start + 60), granularity="TEN_MINUTE")
        assert (status, body["error_details"]) == (400, "granularity argument is invalid")
        burst = await asyncio.gather(*(get(start=str(start), end=str(start + 60), granularity="ONE_MINUTE")
                                       for _ in range(12)))
        assert sorted(s for s, _ in burst).count(429) >= 2 and server.limited >= 2
