"""A quiet symbol (intervals without a trade, so without a bar) still starts with the bars asked for:
the loader reaches further back than ``history.backfill`` intervals, sized by the density it has seen.
A symbol whose tape begins inside the window (a new listing) is not asked for anything older."""

from __future__ import annotations

from engine.backfill.loader import REACH_BACK
from tests.servers.binance_rest import BinanceHistoryServer
from tests.unit.backfill_support import M0, MINUTE, assert_same, running, trade
from tests.unit.test_backfill_answers import KLINES, _reference

BARS = 100


async def test_a_quiet_symbol_gets_the_bars_asked_for_from_further_back() -> None:
    names = ("QUIETUSDT",)
    minutes = 1000
    now = M0 + minutes * MINUTE
    async with BinanceHistoryServer() as server:
        for m in range(0, minutes, 4):  # a trade in one minute of four: 100 intervals hold 25 bars
            await trade(server, "QUIETUSDT", M0 + m * MINUTE + 1_000, price=f"{100 + (m % 7) / 10:.2f}")
        await trade(server, "QUIETUSDT", now + 2_000)
        async with running(server, names, bars=BARS) as run:
            await run.until(lambda: run.feed.counters.history_done == 1, "the history in")
            await trade(server, "QUIETUSDT", now + 30_000)
            await run.applied(server, "QUIETUSDT")
            times, _ = run.engine.history.tail(0)
            assert len(times) == BARS  # the newest 100 bars with trades, not the 25 of the last 100 minutes
            assert int(times[0]) == (now - 4 * BARS * MINUTE) * 1_000_000
            asked = server.rest.count(KLINES)
            assert 2 <= asked <= 1 + REACH_BACK
            reference = _reference(server, names, now + 30_000)
            ref_times, _ = reference.history.tail(0)
            assert list(times) == list(ref_times[-BARS:])


async def test_a_symbol_listed_inside_the_window_is_not_asked_for_older_bars() -> None:
    names = ("NEWUSDT",)
    now = M0 + 300 * MINUTE
    async with BinanceHistoryServer() as server:
        for m in range(240, 300):  # listed 60 minutes ago, a trade every minute since
            await trade(server, "NEWUSDT", M0 + m * MINUTE + 1_000, price="10.00")
        await trade(server, "NEWUSDT", now + 2_000)
        async with running(server, names, bars=BARS) as run:
            await run.until(lambda: run.feed.counters.history_done == 1, "the history in")
            await trade(server, "NEWUSDT", now + 30_000)
            await run.applied(server, "NEWUSDT")
            assert server.rest.count(KLINES) == 1
            assert len(run.engine.history.tail(0)[0]) == 60
            assert_same(run.engine, _reference(server, names, now + 30_000), names)
            assert not run.feed.counters.rest_bad
