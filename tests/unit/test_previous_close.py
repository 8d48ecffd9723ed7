"""The previous session's close each snapshot quote carries (the day P&L's reference): from the bars the
engine holds (the UTC day for crypto, the sim and replays), from what Yahoo reports (against the Yahoo
stand-in), and through the broadcast to an attached console."""

from __future__ import annotations

import math

import numpy as np

from engine.feeds.yahoo_answer import YahooQuote, previous_close
from engine.history import BarHistory as History
from engine.positions.session import DAY_NS, SessionCloses
from engine.sinks.frames import decode_quote, quote_frame
from engine.snapshot import Quote
from tests.servers.yahoo import YahooServer
from tests.unit.test_feed_yahoo import make_feed, run

MIN = 60_000_000_000
MIDNIGHT = 20_000 * DAY_NS  # a UTC midnight


def ring(bars: dict[int, list[tuple[int, float]]], depth: int = 8) -> History:
    """A history of ``depth`` bars per slot holding (open time, close) per slot, oldest first."""
    h = History(4, depth)
    for slot, rows in bars.items():
        for t, c in rows:
            h.append(slot, t, c, c, c, c, 1.0)
    return h


def test_the_close_of_the_last_bar_before_the_utc_day_is_the_previous_close() -> None:
    # slot 0 wraps its ring (10 bars in 8 places); slot 1 has only today's bars; slot 2 nothing
    h = ring({0: [(MIDNIGHT - (6 - i) * MIN, 100.0 + i) for i in range(10)],
              1: [(MIDNIGHT + i * MIN, 50.0 + i) for i in range(3)]})
    sessions = SessionCloses("binance")
    out = sessions.closes(h, np.array([0, 1, 2]), ["A", "B", "C"], MIDNIGHT + 5 * MIN)
    assert out[0] == 105.0  # the bar opened at 23:59 closed the previous day
    assert math.isnan(out[1]) and math.isnan(out[2])
    searched = sessions.searched
    sessions.closes(h, np.array([0, 1, 2]), ["A", "B", "C"], MIDNIGHT + 6 * MIN)
    assert sessions.searched == searched  # same session, nothing new to find: no search per frame
    tomorrow = sessions.closes(h, np.array([0, 1]), ["A", "B"], MIDNIGHT + DAY_NS + MIN)
    assert tomorrow[0] == 109.0 and tomorrow[1] == 52.0  # a new session: today's last closes


def test_the_feed_clock_decides_the_session_and_unknown_feeds_have_none() -> None:
    h = ring({0: [(MIDNIGHT - MIN, 10.0), (MIDNIGHT, 11.0)]})
    replay = SessionCloses("replay")
    assert replay.closes(h, np.array([0]), ["A"], MIDNIGHT + MIN)[0] == 10.0
    assert math.isnan(SessionCloses("attach").closes(h, np.array([0]), ["A"], MIDNIGHT + MIN)[0])


def test_a_reported_previous_close_wins_over_the_bars() -> None:
    h = ring({0: [(MIDNIGHT - MIN, 10.0)], 1: [(MIDNIGHT - MIN, 20.0)]})
    out = SessionCloses("yahoo", {"B": 19.5}).closes(h, np.array([0, 1]), ["A", "B"], MIDNIGHT + MIN)
    assert math.isnan(out[0]) and out[1] == 19.5  # yahoo without trading periods: only what it reports


def test_yahoo_previous_close_is_read_as_yfinance_reads_it_and_odd_values_are_dropped() -> None:
    def quote(value: object) -> YahooQuote:
        return YahooQuote("AAPL", 1.0, 1, regular_market_previous_close=value)

    assert previous_close(quote(178.79)) == 178.79
    for odd in (None, "178.79", True, 0, -1.0, math.inf, math.nan):
        assert previous_close(quote(odd)) is None


async def test_the_yahoo_feed_keeps_the_previous_close_its_stand_in_reports() -> None:
    async with YahooServer({"AAPL": [(1_700_000_000, 189.3, 1_000)] * 3}) as server:
        feed = make_feed(server, ["AAPL"])
        await run(feed, lambda items: bool(feed.previous_closes))
        assert feed.previous_closes == {"AAPL": 178.79}  # regularMarketPreviousClose of the record
        await feed.unsubscribe(["AAPL"])
        assert feed.previous_closes == {}


def test_the_broadcast_carries_the_previous_close_and_an_old_frame_reads_as_unknown() -> None:
    closes = np.array([1.0, 2.0])
    closes.flags.writeable = False
    q = Quote("AAPL", 2.0, 1.0, 100.0, 5.0, closes, {}, 0, 2, previous_close=1.5)
    assert decode_quote(quote_frame(q)).previous_close == 1.5
    old = quote_frame(Quote("AAPL", 2.0, 1.0, 100.0, 5.0, closes, {}, 0))
    assert "previous_close" not in old and math.isnan(decode_quote(old).previous_close)
