"""History at start meets the live tape exactly: a Binance feed with its history loader against the
stand-in whose REST history is computed from the same tape its stream sends, and an engine fed what the
feed yields equals, bit for bit, an engine fed the whole tape tick by tick (closed bars, the forming
bar, every committed and provisional indicator value)."""

from __future__ import annotations

import asyncio

from tests.servers.binance_rest import BinanceHistoryServer
from tests.unit.backfill_support import (
    M0,
    MINUTE,
    assert_same,
    engine,
    make_history,
    running,
    tape_ticks,
    trade,
)

NAMES = ("BTCUSDT", "ETHUSDT")
F = M0 + 250 * MINUTE  # the bar forming when the feed starts


async def test_history_and_live_trades_meet_by_trade_id_exactly() -> None:
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=1, quiet=(17, 18, 19, 120))
        await make_history(server, "ETHUSDT", M0, 247, seed=2)  # quiet for the last 3 minutes
        for off in (1_000, 2_000, 3_000):  # made before anyone listens: history must have them
            await trade(server, "BTCUSDT", F + off, price=f"{110 + off / 1000:.2f}")
        server.rest.gate = asyncio.Event()  # the history waits while live trades come and are held
        # and its first answer for BTCUSDT lacks the newest 4 trades (named: the two symbols' first
        # answers come in either order)
        server.rest.lag, server.rest.lagged, server.rest.lag_symbol = 4, 1, "BTCUSDT"
        async with running(server, NAMES) as run:
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
            server.dropping.add("BTCUSDT")  # an aggregate whose first trade the stream did not carry ...
            await trade(server, "BTCUSDT", F + 4_000, "111.25", "0.25", order=99)
            server.dropping.clear()
            await trade(server, "BTCUSDT", F + 4_000, "111.25", "0.5", order=99)  # ... and the rest held
            await trade(server, "BTCUSDT", F + 4_000, "111.25", "0.125", order=99)
            for i, off in enumerate((5_000, 6_000, 7_000)):
                await trade(server, "BTCUSDT", F + off, f"{111 - i:.2f}", "1.5", maker=bool(i % 2))
            held = server.made["BTCUSDT"][-5]["t"]
            await run.until(lambda: run.feed.history is not None
                            and run.feed.history.holding(run.engine.symbols.get("BTCUSDT") or 0)
                            and len(run.feed.history._symbols[0].held) == 5, "five BTC trades held")
            assert run.engine.forming_bar(0) is None  # nothing of BTC reached the engine yet
            server.rest.gate.set()
            await run.applied(server, "BTCUSDT")
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            for m in range(1, 4):  # the live tape goes on, over bar boundaries
                for off in (500, 20_000, 41_000):
                    await trade(server, "BTCUSDT", F + m * MINUTE + off, f"{112 + m:.2f}", "0.375")
                    await trade(server, "ETHUSDT", F + m * MINUTE + off + 1, f"{99 - m:.2f}", "2.000")
            await trade(server, "BTCUSDT", F + 4 * MINUTE, "115.00", "0.25", order=7)  # an aggregate, live
            await trade(server, "BTCUSDT", F + 4 * MINUTE, "115.00", "0.25", order=7)
            await run.applied(server, "BTCUSDT")
            await run.applied(server, "ETHUSDT")

            reference = engine(NAMES)
            reference.ingest(tape_ticks(server, reference))
            now = F + 4 * MINUTE
            reference.close_due((now - now % MINUTE) * 1_000_000)
            assert_same(run.engine, reference, NAMES)
            for e in (run.engine, reference):  # and once every bar has closed
                e.close_due(2**62)
            assert_same(run.engine, reference, NAMES)

            c = run.feed.counters
            assert (c.history_total, c.history_done, c.history_failed) == (2, 2, 0)
            assert (c.gaps, c.duplicates, c.refills, c.bad_total) == (0, 0, 0, 0)
            assert not c.rest_bad
            assert held > server.made["BTCUSDT"][2]["t"]
            # klines once per symbol, aggregate trades: BTC from the forming bar, then again past the
            # lagging answer; ETH from the forming bar (nothing) and its last trade before it
            assert server.rest.count("/api/v3/klines") == 2
            assert server.rest.count("/api/v3/aggTrades") == 4
            # every bar came as history but the live ones: BTC's from F on (5), ETH's from F + 1 (3)
            assert run.engine.stats.history_bars == reference.stats.bars - 5 - 3


async def test_trades_streaming_while_history_is_released_come_after_it() -> None:
    """The release lands while the feed is gathering a batch of the same symbol's trades: the history
    must still reach the engine before every live trade that was not held (none may count as late)."""
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=11)
        await make_history(server, "ETHUSDT", M0, 250, seed=12)
        server.rest.gate = asyncio.Event()
        async with running(server, NAMES) as run:
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")

            async def flood() -> None:
                for k in range(3000):
                    await trade(server, "BTCUSDT", F + k, f"{100 + (k % 50) / 8:.3f}", "0.125")
                    if k % 3 == 0:
                        await asyncio.sleep(0)  # messages keep arriving, a few at a time

            sender = asyncio.create_task(flood())
            await run.until(lambda: len(server.made["BTCUSDT"]) > 200, "the flood under way")
            server.rest.gate.set()
            await sender
            await run.applied(server, "BTCUSDT")
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            assert run.engine.stats.late_ticks == 0
            reference = engine(NAMES)
            reference.ingest(tape_ticks(server, reference))
            reference.close_due(F * 1_000_000)  # as the harness's clock did: ETH's last bar has ended
            assert_same(run.engine, reference, NAMES)


async def test_a_symbol_added_later_gets_its_history_too() -> None:
    names = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    async with BinanceHistoryServer() as server:
        for seed, name in enumerate(names, start=20):
            await make_history(server, name, M0, 250, seed=seed)
        async with running(server, NAMES) as run:  # SOLUSDT is not in the watchlist yet
            await run.until(lambda: run.feed.counters.history_done == 2, "two histories in")
            run.engine.add_symbol("SOLUSDT")  # (the runtime gives it a slot first, as `a` does)
            await run.feed.subscribe(["SOLUSDT"])
            await server.wait_subscribed("solusdt@trade")
            for off in (2_000, 9_000):
                await trade(server, "SOLUSDT", F + off, "77.00", "0.5")
            await run.applied(server, "SOLUSDT")
            assert (run.feed.counters.history_total, run.feed.counters.history_done) == (3, 3)
            reference = engine(names)
            reference.ingest(tape_ticks(server, reference))
            reference.close_due(F * 1_000_000)
            assert_same(run.engine, reference, names)
