"""Yahoo history at start: the chart's bars before the forming bar, then the quotes, meeting by time. Its
bars are the tape's exactly, and so are the indicators they warm (RSI 14 and SMA 200 on every row); the
forming bar is the quotes' (its open the first quote after it began, its volume the day volume added
between the quotes seen, only the last price of each poll in it): what differs from the tape is
checked. Bad chart answers are counted and skipped (asked again, or the symbol streams live with a note
and its history is tried again later); an outage across a bar's close is refilled from the chart."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np

from tests.servers.yahoo_chart import YahooHistoryServer
from tests.unit.yahoo_history_support import MINUTE, NS, T0, Now, make_engine, make_tape, running, tape_bars

F = T0 + 400 * 60  # the bar forming when the feed starts (s)
NAMES = ("AAPL", "MSFT")


def _committed(e: object, slot: int) -> np.ndarray:
    return e.bank.committed[:, slot]  # type: ignore[attr-defined,no-any-return]


async def test_history_is_the_charts_bars_and_the_quotes_continue_the_forming_bar() -> None:
    now = Now(F + 20)
    async with YahooHistoryServer(now_s=now) as server:
        make_tape(server, "AAPL", T0, F, seed=1)
        server.tick("AAPL", (F + 5) * 1000, 120.0, 500)  # in the forming bar before the first quote
        server.tick("AAPL", (F + 15) * 1000, 121.0, 700)
        make_tape(server, "MSFT", T0, F - 5, seed=2)  # its newest price in the bar before
        server.gate = asyncio.Event()
        async with running(server, NAMES, now, bars=400) as run:
            loader = run.feed.history
            assert loader is not None
            await run.until(lambda: all(len(s.held) for s in loader._symbols.values()),
                            "a quote of each held")
            server.gate.set()
            await run.until(lambda: run.feed.counters.history_done == 2, "both histories in")
            await run.until(lambda: all(len(run.engine.history.tail(s)[0]) > 390 for s in (0, 1)),
                            "both histories in the engine")
            await run.quoted("AAPL", F + 15)

            want = tape_bars(server, make_engine(NAMES), F)
            want.close_due(F * NS)
            for name in NAMES:  # every bar before the forming one: the tape's, and so every indicator
                slot = run.engine.symbols.get(name)
                assert slot is not None
                t, bars = run.engine.history.tail(slot)
                want_t, want_bars = want.history.tail(slot)
                assert len(t) > 390 and np.array_equal(t, want_t)
                assert np.array_equal(bars, want_bars)
                assert np.array_equal(_committed(run.engine, slot), _committed(want, slot), equal_nan=True)
                for output in ("rsi_14", "sma_200"):
                    assert np.isfinite(run.engine.bank.committed[run.engine.bank.row(output), slot])
            msft = run.engine.symbols.get("MSFT")
            assert msft is not None and run.engine.forming_bar(msft) is None  # its held quote was history's

            # the quotes go on: a poll sees only the newest price, and the bar it is in
            server.tick("AAPL", (F + 30) * 1000, 125.0, 300)  # never quoted: the clock moves past it
            server.tick("AAPL", (F + 45) * 1000, 119.5, 200)
            now.s = F + 50
            await run.quoted("AAPL", F + 45)
            server.tick("AAPL", (F + 75) * 1000, 122.0, 100)
            now.s = F + 80
            await run.quoted("AAPL", F + 75)
            slot = run.engine.symbols.get("AAPL")
            assert slot is not None
            t, bars = run.engine.history.tail(slot)
            assert int(t[-1]) == F * NS
            # what differs: the open is the first quote's (121, at F+15, not 120 at F+5), the volume is
            # what the day volume added between the quotes seen (200 + 300, not 500 + 700 + 300 + 200),
            # and 125, at F+30, never quoted, is not the high
            assert bars[-1].tolist() == [121.0, 121.0, 119.5, 119.5, 500.0]
            chart = tape_bars(server, make_engine(NAMES), F + 60)
            chart.close_due((F + 60) * NS)
            assert chart.history.tail(slot)[1][-1].tolist() == [120.0, 125.0, 119.5, 119.5, 1700.0]
            c = run.feed.counters
            assert (c.history_total, c.history_done, c.history_failed) == (2, 2, 0) and not c.rest_bad
            assert run.engine.stats.late_ticks == 0
            [query] = [q for q in server.charts if q["symbol"] == "AAPL"]
            assert (query["interval"], query["includePrePost"], query["formatted"]) == (
                "1m", "false", "false")
            assert query["crumb"] == next(iter(server.crumbs.values()))


async def test_bad_chart_answers_are_counted_and_the_symbol_streams_live_until_its_history_comes() -> None:
    """HTML and a body cut short are asked again; a server error costs the first try (the symbol streams
    live, its note says when the next try is) and the next brings the history as a refill; a symbol
    Yahoo does not know streams live without history, its note saying why."""
    names = ("AAPL", "MSFT", "NOPE")
    now = Now(F + 20)
    async with YahooHistoryServer(now_s=now) as server:
        make_tape(server, "AAPL", T0, F + 16, seed=3)
        make_tape(server, "MSFT", T0, F + 16, seed=4)
        server.tick("NOPE", (F + 10) * 1000, 5.0, 100)  # quoted, but the chart knows nothing of it
        server.fail_chart("html", "AAPL")
        server.fail_chart("error", "MSFT", status=500)
        server.fail_chart("cut", "MSFT")
        known = server.tape.pop("NOPE")
        server.market["NOPE"] = [(known[0][0] // 1000, known[0][1], known[0][2])]
        async with running(server, names, now, bars=300) as run:
            await run.until(lambda: run.feed.counters.history_done == 3, "every history tried")
            msft = run.engine.symbols.get("MSFT")
            await run.until(lambda: any(s.reason == "MSFT: history loaded (try 2)" for s in run.statuses),
                            "MSFT's second try")
            await run.until(lambda: all(len(run.engine.history.tail(s)[0]) == 300 for s in (0, 1)),
                            "both histories in the engine")
            c = run.feed.counters
            assert c.rest_bad == {"html": 1, "HTTP 500": 1, "malformed json": 1, "HTTP 404": 1}
            notes = {s.symbols[0]: s.reason for s in run.statuses if s.symbols}
            assert notes["NOPE"].startswith("NOPE: no history (127.0.0.1:")
            assert notes["NOPE"].endswith(
                "refused NOPE: No data found, symbol may be delisted (Not Found) (HTTP 404))")
            assert notes["MSFT"].startswith("MSFT: ") and msft is not None
            tried = [s.reason for s in run.statuses if s.symbols == ("MSFT",)]
            assert tried[0].startswith("MSFT: no history (HTTP 500 from 127.0.0.1:")
            assert "; next try in " in tried[0]
            assert tried[-1] == "MSFT: history loaded (try 2)"
            assert c.history_failed == 1  # NOPE
            want = tape_bars(server, make_engine(names), F)
            want.close_due(F * NS)
            for name in ("AAPL", "MSFT"):
                slot = run.engine.symbols.get(name)
                assert slot is not None
                got = run.engine.history.tail(slot)[1]
                assert len(got) == 300 and np.array_equal(got, want.history.tail(slot)[1][-300:])
            nope = run.engine.symbols.get("NOPE")
            assert nope is not None and run.engine.forming_bar(nope) is not None  # live all the same


async def test_one_minute_bars_are_asked_seven_days_at_a_time_and_no_further_back_than_30_days() -> None:
    now = Now(F)
    async with YahooHistoryServer(now_s=now) as server:
        make_tape(server, "AAPL", F - 40 * 86_400, F, seed=5, every_s=3600)
        async with running(server, ("AAPL",), now, bars=1) as run:
            await run.until(lambda: run.feed.counters.history_done == 1, "the history in")
            source = run.source
            server.charts.clear()
            bars = await source.bars("AAPL", (F - 40 * 86_400) * NS, F * NS, MINUTE)
            spans = [(int(q["period1"]), int(q["period2"])) for q in server.charts]
            assert all(hi - lo <= 7 * 86_400 for lo, hi in spans) and len(spans) == 5
            assert spans[0][0] == F - 30 * 86_400 + 3600 and spans[-1][1] == F
            assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
            inside = [p for p in server.tape["AAPL"] if spans[0][0] <= p[0] // 1000 < F]
            assert len(bars) == len(inside) > 500 and not run.feed.counters.rest_bad
            # and what Yahoo answers a request past its limits: 422, counted, the history given up
            wide = {"period1": str(F - 8 * 86_400), "period2": str(F), "interval": "1m"}
            answer = await run.feed.fetch(f"{server.url}/v8/finance/chart/AAPL", wide, 1 << 20)
            assert not isinstance(answer, str) and answer.status == 422
            assert b"Only 7 days worth of 1m granularity data are allowed to be fetched per request." in (
                answer.body or b"")


async def test_an_outage_across_a_bars_close_is_refilled_from_the_chart() -> None:
    """The quote requests fail for two minutes; when they come back, the bars missed (and the bar of the
    last quote before, which the outage cut short) are the chart's, then the quotes go on."""
    now = Now(F + 20)
    async with YahooHistoryServer(now_s=now) as server:
        make_tape(server, "AAPL", T0, F + 16, seed=6)
        async with running(server, ("AAPL",), now, bars=300) as run:
            await run.until(lambda: run.feed.counters.history_done == 1, "the history in")
            await run.quoted("AAPL", server.latest("AAPL")[0] // 1000)  # type: ignore[index]
            for _ in range(200):
                server.fail(503)
            make_tape(server, "AAPL", F + 30, F + 170, seed=7)
            now.s = F + 175
            await run.until(lambda: any(s.state == "stale" for s in run.statuses), "the outage seen")
            server.faults["quote"].clear()
            await run.quoted("AAPL", server.latest("AAPL")[0] // 1000)  # type: ignore[index]
            refills = [i for i in run.items if type(i).__name__ == "Refill"]
            assert len(refills) == 1 and refills[0].since_ns == F * NS
            want = tape_bars(server, make_engine(("AAPL",)), F + 120)
            want.close_due((F + 120) * NS)
            t, bars = run.engine.history.tail(0)
            want_t, want_bars = want.history.tail(0)
            assert int(t[-1]) == (F + 60) * NS and len(t) == 302  # 300, and the two the outage missed
            assert np.array_equal(t, want_t[-302:]) and np.array_equal(bars, want_bars[-302:])
            assert run.engine.stats.late_ticks == 0
