"""Gaps refilled: when a symbol's trade ids jump (trades the stream never carried), its trades are held,
everything since the open of the bar that holds the last trade received is fetched again, and the feed
yields a ``Refill``; applied, the engine equals an uninterrupted run's, bit for bit. A symbol removed and
added back resumes the same way, and what was fetched for it before is not fetched again."""

from __future__ import annotations

from engine.feeds.base import FeedStatus, Refill
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


async def _prelude(server: BinanceHistoryServer) -> None:
    await make_history(server, "BTCUSDT", M0, 250, seed=3)
    await make_history(server, "ETHUSDT", M0, 250, seed=4)
    await trade(server, "BTCUSDT", F + 1_000)


def _reference(server: BinanceHistoryServer, until_ms: int) -> object:
    reference = engine(NAMES)
    reference.ingest(tape_ticks(server, reference))
    reference.close_due((until_ms - until_ms % MINUTE) * MS)
    return reference


async def test_a_90_second_gap_is_refilled_and_every_output_equals_an_uninterrupted_run() -> None:
    async with BinanceHistoryServer() as server:
        await _prelude(server)
        async with running(server, NAMES) as run:
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            for off in (5_000, 30_000):
                await trade(server, "BTCUSDT", F + off, "120.25", "0.5")
                await trade(server, "ETHUSDT", F + off + 1, "50.50", "1.5")
            await run.applied(server, "BTCUSDT")
            last_seen = server.made["BTCUSDT"][-1]
            server.dropping.add("BTCUSDT")  # 90 s of BTC the stream does not carry
            for k in range(12):
                at = F + 31_000 + k * 7_500
                await trade(server, "BTCUSDT", at, f"{121 + k * 0.25:.2f}", "0.25", maker=k % 3 == 0,
                            order=1000 + k // 2)
                await trade(server, "ETHUSDT", at + 3, f"{50 + k * 0.125:.3f}", "0.125")
            server.dropping.clear()
            for off in (122_000, 130_000, 185_000):  # the stream carries BTC again: a gap of 12 ids
                await trade(server, "BTCUSDT", F + off, "124.00", "0.375")
                await trade(server, "ETHUSDT", F + off + 1, "51.00", "0.25")
            await run.applied(server, "BTCUSDT")
            await run.applied(server, "ETHUSDT")

            [refill] = [i for i in run.items if isinstance(i, Refill)]
            assert refill.sym == 0
            assert refill.since_ns == (F - F % MINUTE) * MS == (last_seen["T"] - last_seen["T"] % MINUTE) * MS
            c = run.feed.counters
            assert (c.refills, c.gaps, c.duplicates) == (1, 0, 0)
            reference = _reference(server, F + 185_000)
            assert_same(run.engine, reference, NAMES)  # type: ignore[arg-type]


async def test_a_gap_the_service_cannot_refill_is_counted_and_noted() -> None:
    async with BinanceHistoryServer() as server:
        await _prelude(server)
        async with running(server, NAMES) as run:
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            server.dropping.add("BTCUSDT")
            for k in range(3):
                await trade(server, "BTCUSDT", F + 10_000 + k)
            server.dropping.clear()
            for _ in range(6):  # every answer to the refill's requests is a server error
                server.rest.fail("error", status=503)
            await trade(server, "BTCUSDT", F + 20_000)
            await run.applied(server, "BTCUSDT")
            c = run.feed.counters
            assert (c.refills, c.gaps) == (0, 3)
            assert c.rest_bad["HTTP 503"] >= 4
            [note] = [s for s in run.statuses if s.symbols]
            assert note == FeedStatus("binance", "live", note.reason, at_ns=note.at_ns, symbols=("BTCUSDT",))
            assert note.reason.startswith("BTCUSDT: gap not refilled (no usable answer from 127.0.0.1:")


async def test_a_symbol_removed_and_added_back_resumes_without_fetching_its_past_again() -> None:
    async with BinanceHistoryServer() as server:
        await _prelude(server)
        async with running(server, NAMES) as run:
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            assert server.rest.count("/api/v3/klines") == 2
            await trade(server, "BTCUSDT", F + 9_000, "118.00")
            await run.applied(server, "BTCUSDT")
            await run.feed.unsubscribe(["BTCUSDT"])
            await server.wait(lambda: all("btcusdt@trade" not in c.subs for c in server.connections))
            for k in range(8):  # two bars the feed does not hear of
                await trade(server, "BTCUSDT", F + 20_000 + k * 15_000, f"{118 + k:.2f}", "0.5")
                await trade(server, "ETHUSDT", F + 20_001 + k * 15_000, "40.00", "0.25")
            await run.feed.subscribe(["BTCUSDT"])
            await server.wait_subscribed("btcusdt@trade")
            await trade(server, "BTCUSDT", F + 150_000, "130.00", "0.125")
            await trade(server, "ETHUSDT", F + 150_001, "41.00", "0.25")
            await run.applied(server, "BTCUSDT")
            await run.applied(server, "ETHUSDT")

            assert run.feed.counters.refills == 1
            klines = [q for p, q, _ in server.rest.requests if p == "/api/v3/klines"]
            assert len(klines) == 3  # once each at start, then only the bars since BTC's last fetch
            assert int(klines[2]["startTime"]) == F - F % MINUTE
            reference = _reference(server, F + 150_001)
            assert_same(run.engine, reference, NAMES)  # type: ignore[arg-type]
