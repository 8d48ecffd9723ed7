"""Bad REST answers are counted per reason and skipped, never a crash: errors, HTML, garbled bodies,
partial pages and rows out of order are asked again or put right (and history stays exact); a refused
symbol, a bad row and an empty range cost that history, and the symbol streams live with a note in its
status. A restart loads the bar store first and fetches only the span it lacks."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np

from engine.tick_engine import Engine
from engine.ticks import make_bars
from tests.servers.binance_rest import BinanceHistoryServer
from tests.unit.backfill_support import (
    BAR_NS,
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

F = M0 + 250 * MINUTE
KLINES, AGGS = "/api/v3/klines", "/api/v3/aggTrades"


def _reference(server: BinanceHistoryServer, names: tuple[str, ...], until_ms: int) -> Engine:
    reference = engine(names)
    reference.ingest(tape_ticks(server, reference))
    reference.close_due((until_ms - until_ms % MINUTE) * MS)
    return reference


async def test_answers_that_can_be_asked_again_or_put_right_leave_history_exact() -> None:
    names = ("BTCUSDT", "ETHUSDT")
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=5)
        await make_history(server, "ETHUSDT", M0, 250, seed=6)
        await trade(server, "BTCUSDT", F + 500)
        for kind, status in (("html", 200), ("error", 500), ("garbage", 200), ("partial", 200),
                             ("disorder", 200)):
            server.rest.fail(kind, KLINES, symbol="BTCUSDT", status=status)
        server.rest.fail("error", AGGS, symbol="ETHUSDT", status=502, code=-1001,
                         msg="Internal error; unable to process your request. Please try again.")
        async with running(server, names, retry_at_once=True) as run:
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            await trade(server, "BTCUSDT", F + 20_000, "99.00")
            await trade(server, "ETHUSDT", F + 20_001, "98.00")
            await run.applied(server, "BTCUSDT")
            await run.applied(server, "ETHUSDT")
            c = run.feed.counters
            assert c.rest_bad == Counter({"html": 1, "HTTP 500": 1, "malformed json": 1, "partial page": 1,
                                          "out-of-order bars": 1, "HTTP 502": 1})
            assert (c.history_failed, c.bad_total, c.gaps) == (0, 0, 0)
            assert not [s for s in run.statuses if s.symbols]  # no notes: every history came whole
            assert_same(run.engine, _reference(server, names, F + 20_001), names)
            assert server.rest.count(KLINES) == 2 + 3 + 1  # a page each, 3 asked again, the partial's rest


async def test_history_that_cannot_be_had_is_noted_and_the_symbol_streams_live() -> None:
    names = ("BTCUSDT", "ETHUSDT", "NEWUSDT", "NOPEUSDT")
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=7)
        await make_history(server, "ETHUSDT", M0, 250, seed=8)
        await trade(server, "NEWUSDT", F - 10 * MINUTE)  # listed ten minutes ago
        server.now_ms = F + 500
        server.rest.fail("bad row", KLINES, symbol="BTCUSDT")  # its first kline: a NaN price
        server.rest.fail("empty", KLINES, symbol="NEWUSDT")
        server.rest.fail("error", KLINES, symbol="ETHUSDT", status=403, code=-1003, msg="WAF")
        async with running(server, names, retry_at_once=True) as run:
            await run.until(lambda: run.feed.counters.history_done == 4, "every history tried")
            server.now_ms = None
            for i, name in enumerate(names):
                await trade(server, name, F + 1_000 + i, "12.50")
                await run.applied(server, name)  # each streams live
            c = run.feed.counters
            assert c.rest_bad == Counter({"bad bar": 1, "empty range": 1, "HTTP 403": 1, "HTTP 400": 1})
            assert (c.history_total, c.history_done, c.history_failed) == (4, 4, 3)
            notes = {s.symbols[0]: s.reason for s in run.statuses if s.symbols}
            assert set(notes) == {"ETHUSDT", "NEWUSDT", "NOPEUSDT"}
            host = server.rest_url.removeprefix("http://")
            assert notes["ETHUSDT"] == f"ETHUSDT: no history ({host} refused: WAF (HTTP 403, code -1003))"
            assert notes["NOPEUSDT"] == (f"NOPEUSDT: no history ({host} refused: Invalid symbol. (HTTP 400, "
                                         "code -1121))")
            assert notes["NEWUSDT"] == "NEWUSDT: no history (binance has no bars or trades of it)"
            assert all(s.state == "live" for s in run.statuses if s.symbols)
            btc = run.engine.history.tail(0)[0]
            first = server.made["BTCUSDT"][0]["T"]
            assert len(btc) and btc[0] > (first - first % MINUTE) * MS  # the bad first bar was skipped


class FakeStore:
    """Bars kept by an earlier run (``BarStore.load``); records what was asked."""

    def __init__(self, bars: np.ndarray) -> None:
        self.bars = bars
        self.asked: list[tuple[str, str, int, int]] = []

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        self.asked.append((feed, symbol, interval_ns, since_ns))
        out = self.bars[self.bars["t"] >= since_ns].copy()
        out["sym"] = -1
        return out


async def test_a_restart_loads_the_store_and_fetches_only_the_missing_span() -> None:
    names = ("BTCUSDT",)
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=9)
        await trade(server, "BTCUSDT", F + 2_000)
        earlier = _reference(server, names, F)  # what a run that ended 20 minutes ago had closed
        times, ohlcv = earlier.history.tail(0)
        kept = times < (F - 20 * MINUTE) * MS
        stored = make_bars(int(kept.sum()))
        stored["t"] = times[kept]
        for i, field in enumerate(("open", "high", "low", "close", "volume")):
            stored[field] = ohlcv[kept, i]
        store = FakeStore(stored)
        async with running(server, names, store=store, bars=300) as run:
            await run.until(lambda: run.feed.counters.history_done == 1, "the history in")
            await trade(server, "BTCUSDT", F + 30_000)
            await run.applied(server, "BTCUSDT")
            assert store.asked == [("binance", "BTCUSDT", BAR_NS, (F - 300 * MINUTE) * MS)]
            [klines] = [q for p, q, _ in server.rest.requests if p == KLINES]
            assert int(klines["startTime"]) == int(stored["t"][-1] // MS) + MINUTE  # after the last stored
            assert int(klines["endTime"]) == F - 1
            assert_same(run.engine, _reference(server, names, F + 30_000), names)


async def test_a_kline_stream_meets_its_history_at_the_forming_bar() -> None:
    """Kline updates carry no trade ids: history is the closed klines before the forming bar, the held
    updates of that bar follow it, and a late update of a bar the history holds whole is dropped."""
    async with BinanceHistoryServer() as server:
        await make_history(server, "BTCUSDT", M0, 250, seed=13)
        server.now_ms = F + 5_000
        server.rest.gate = asyncio.Event()
        async with running(server, ("BTCUSDT",), stream="kline_1m") as run:
            await server.wait_subscribed("btcusdt@kline_1m")
            last = server.made["BTCUSDT"][-1]
            await server.kline("BTCUSDT", "1m", F - MINUTE, last["p"], "99.000", F - 10, closed=True)
            await server.kline("BTCUSDT", "1m", F, "120.00", "1.500", F + 1_000)
            await server.kline("BTCUSDT", "1m", F, "121.00", "2.000", F + 2_000)
            loader = run.feed.history
            assert loader is not None
            await run.until(lambda: 0 in loader._symbols and len(loader._symbols[0].held) == 3,
                            "three updates held")
            server.rest.gate.set()
            await run.until(lambda: run.engine.forming_bar(0) is not None
                            and run.engine.forming_bar(0)[0] == F * MS, "the forming bar from the stream")
            _, bar = run.engine.forming_bar(0)  # type: ignore[misc]
            assert bar.tolist() == [120.0, 121.0, 120.0, 121.0, 2.0]  # o h l c, the kline's volume
            assert run.engine.stats.late_ticks == 0
            reference = _reference(server, ("BTCUSDT",), F)
            times, bars = run.engine.history.tail(0)
            want_t, want = reference.history.tail(0)
            assert np.array_equal(times, want_t) and np.array_equal(bars, want)  # history exact
