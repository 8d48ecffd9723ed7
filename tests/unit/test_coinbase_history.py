"""Coinbase history at start meets the live tape exactly, by trade id: a Coinbase feed with its history
loader against the stand-in whose candles and market trades are computed from the same trades its
WebSocket sends, and an engine fed what the feed yields equals, bit for bit, an engine fed every trade
tick by tick (closed bars, the forming bar, every committed and provisional value). Gaps in one product's
trade ids are refilled the same way; an engine interval Coinbase has no candles for is built from finer
ones; an aliased product is fetched under its book's id and handed back under its own name."""

from __future__ import annotations

import asyncio

from engine.backfill.coinbase import CANDLES
from engine.feeds.base import Refill
from tests.servers.coinbase_history import CoinbaseHistoryServer
from tests.unit.backfill_support import assert_same
from tests.unit.coinbase_history_support import MINUTE, NS, T0, make_history, reference, running

NAMES = ("BTC-USD", "ETH-USD")
F = T0 + 250 * MINUTE  # the bar forming when the feed starts
MS = 1_000_000


async def test_history_and_live_trades_meet_by_trade_id_exactly() -> None:
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", T0, 250, seed=1, quiet=(17, 18, 19, 120))
        await make_history(server, "ETH-USD", T0, 247, seed=2)  # quiet for the last 3 minutes
        for off in (1_000, 2_000, 3_000):  # made before anyone listens: history must have them
            await server.trade("BTC-USD", f"{110 + off / 1000:.2f}", "0.5", "SELL", at_ns=F + off * MS)
        server.gate = asyncio.Event()  # the history waits while live trades come and are held
        # and its first trades answer for BTC-USD lacks the newest 4 trades (named: the two products'
        # first answers come in either order)
        server.lag, server.lagged, server.lag_product = 4, 1, "BTC-USD"
        async with running(server, NAMES) as run:
            await server.until(lambda: server.subscribed("market_trades", "BTC-USD")
                               and server.subscribed("market_trades", "ETH-USD"))
            for i, off in enumerate((4_000, 5_000, 6_000, 7_000)):
                if i == 0:  # one the WebSocket does not carry: the seam must fetch past the lagging answer
                    server.dropping.add("BTC-USD")
                await server.trade("BTC-USD", f"{111 - i:.2f}", "1.5", "BUY" if i % 2 else "SELL",
                                   at_ns=F + off * MS)
                server.dropping.clear()
            loader = run.feed.history
            assert loader is not None
            slot = run.engine.symbols.get("BTC-USD")
            assert slot is not None
            # the snapshot (3 trades) and the 3 live ones the WebSocket carried, held
            await run.until(lambda: loader.holding(slot) and len(loader._symbols[slot].held) == 6,
                            "six BTC trades held")
            assert run.engine.forming_bar(slot) is None  # nothing of BTC reached the engine yet
            server.gate.set()
            await run.applied(server, "BTC-USD")
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            for m in range(1, 4):  # the live tape goes on, over bar boundaries
                for off in (500, 20_000, 41_000):
                    await server.trade("BTC-USD", f"{112 + m:.2f}", "0.375", "SELL",
                                       at_ns=F + m * MINUTE + off * MS)
                    await server.trade("ETH-USD", f"{99 - m:.2f}", "2.000", "BUY",
                                       at_ns=F + m * MINUTE + (off + 1) * MS)
            await run.applied(server, "BTC-USD")
            await run.applied(server, "ETH-USD")

            now = F + 4 * MINUTE
            want = reference(server, NAMES, now)
            run.engine.close_due(now)
            assert_same(run.engine, want, NAMES)
            for e in (run.engine, want):  # and once every bar has closed
                e.close_due(2**62)
            assert_same(run.engine, want, NAMES)

            c = run.feed.counters
            assert (c.history_total, c.history_done, c.history_failed) == (2, 2, 0)
            assert (c.gaps, c.refills, c.bad_total) == (0, 0, 0)
            assert not c.rest_bad
            # candles once per symbol; market trades: BTC from the forming bar, then again past the
            # lagging answer; ETH from the forming bar (none) and its last trade before it
            assert server.count("candles") == 2
            assert server.count("ticker") == 4
            assert run.engine.stats.history_bars == want.stats.bars - 4 - 3
            assert server.limited == 0


async def test_a_90_second_gap_in_one_product_is_refilled_exactly() -> None:
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", T0, 250, seed=3)
        await make_history(server, "ETH-USD", T0, 250, seed=4)
        await server.trade("BTC-USD", "120.00", "0.5", at_ns=F + 1_000 * MS)
        async with running(server, NAMES) as run:
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            for off in (5_000, 30_000):
                await server.trade("BTC-USD", "120.25", "0.5", "SELL", at_ns=F + off * MS)
                await server.trade("ETH-USD", "50.50", "1.5", at_ns=F + (off + 1) * MS)
            await run.applied(server, "BTC-USD")
            last_seen = server.trade_ns[("BTC-USD", int(server.history["BTC-USD"][-1]["trade_id"]))]
            server.dropping.add("BTC-USD")  # 90 s of BTC the WebSocket does not carry
            for k in range(12):
                at = F + (31_000 + k * 7_500) * MS
                await server.trade("BTC-USD", f"{121 + k * 0.25:.2f}", "0.25", "BUY" if k % 3 else "SELL",
                                   at_ns=at)
                await server.trade("ETH-USD", f"{50 + k * 0.125:.3f}", "0.125", at_ns=at + 3 * MS)
            server.dropping.clear()
            for off in (122_000, 130_000, 185_000):  # BTC again: its trade ids jump by 12
                await server.trade("BTC-USD", "124.00", "0.375", at_ns=F + off * MS)
                await server.trade("ETH-USD", "51.00", "0.25", at_ns=F + (off + 1) * MS)
            await run.applied(server, "BTC-USD")
            await run.applied(server, "ETH-USD")

            [refill] = [i for i in run.items if isinstance(i, Refill)]
            assert refill.sym == run.engine.symbols.get("BTC-USD")
            assert refill.since_ns == last_seen - last_seen % MINUTE
            c = run.feed.counters
            assert (c.refills, c.gaps, c.duplicates) == (1, 0, 0)
            now = F + 186_000 * MS
            want = reference(server, NAMES, now)
            run.engine.close_due(now - now % MINUTE)
            assert_same(run.engine, want, NAMES)


async def test_an_interval_coinbase_has_no_candles_for_is_built_from_finer_ones() -> None:
    """10-minute bars: Coinbase has 5-minute candles, and two of them make each bar, equal to the
    tape's; with more bars than one request may span, the candles come in pages of 350."""
    ten = 10 * MINUTE
    start = T0 - T0 % ten
    f = start + 400 * ten
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "SOL-USD", start, 4000, seed=5, quiet=tuple(range(100, 140)))
        await server.trade("SOL-USD", "70.00", "0.25", at_ns=f + 2_000 * MS)
        async with running(server, ("SOL-USD",), bars=380, interval_ns=ten) as run:
            await run.applied(server, "SOL-USD")  # the history, and the forming bar's trade, in the engine
            await server.trade("SOL-USD", "71.00", "0.5", at_ns=f + 9 * MINUTE)
            await server.trade("SOL-USD", "72.00", "0.5", at_ns=f + 11 * MINUTE)
            await run.applied(server, "SOL-USD")
            asked = [q for e, _, q, _ in server.requests if e == "candles"]
            assert {q["granularity"] for q in asked} == {"FIVE_MINUTE"}
            spans = [(int(q["end"]) - int(q["start"])) // 300 + 1 for q in asked]
            assert spans == [CANDLES, CANDLES, 760 - 2 * CANDLES]  # 380 bars of two candles each
            assert int(asked[0]["start"]) == (f - 380 * ten) // NS
            want = reference(server, ("SOL-USD",), f + 11 * MINUTE, ten)
            t, bars = run.engine.history.tail(0)
            want_t, want_bars = want.history.tail(0)
            assert len(t) == 381 and (t == want_t[-381:]).all() and (bars == want_bars[-381:]).all()
            assert not run.feed.counters.rest_bad and run.engine.stats.late_ticks == 0


async def test_an_aliased_product_is_fetched_under_its_book_and_handed_back_under_its_name() -> None:
    async with CoinbaseHistoryServer(aliases={"BTC-USDC": "BTC-USD"}) as server:
        await make_history(server, "BTC-USD", T0, 250, seed=6)
        await server.trade("BTC-USD", "130.00", "0.5", at_ns=F + 1_000 * MS)
        async with running(server, ("BTC-USDC",)) as run:
            await run.applied(server, "BTC-USDC", book="BTC-USD")
            await server.trade("BTC-USD", "131.00", "0.25", at_ns=F + 20_000 * MS)
            await run.applied(server, "BTC-USDC", book="BTC-USD")
            assert {p for _, p, _, _ in server.requests} == {"BTC-USD"}
            want = reference(server, ("BTC-USDC",), F + 20_000 * MS, books={"BTC-USDC": "BTC-USD"})
            assert_same(run.engine, want, ("BTC-USDC",))
            assert not run.feed.counters.rest_bad
