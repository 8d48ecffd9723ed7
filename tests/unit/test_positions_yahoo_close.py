"""Yahoo's previous close for the day P&L reaches a streamed symbol: a pushed price holds polling off only
once a poll gave the previous close for that price's UTC day, so each trading day's close is polled once
(pushes carry no previous close)."""

from __future__ import annotations

from tests.servers.yahoo import YahooServer
from tests.servers.yahoo_stream import YahooStreamer
from tests.unit.test_feed_yahoo import SEC, T0, make_feed, ticks
from tests.unit.test_feed_yahoo_protocol import Running

DAY = 86_400


async def test_a_streamed_symbol_is_polled_once_on_a_new_day_for_its_previous_close() -> None:
    market = {"AAPL": [(T0, 100.0, 1000), (T0 + DAY + 60, 101.0, 1100)],  # the second poll: the next day
              "MSFT": [(T0 + i, 200.0 + i, 2000 + i) for i in range(400)]}
    async with YahooServer(market) as server, YahooStreamer() as streamer:
        feed = make_feed(server, ["AAPL", "MSFT"], stream_url=streamer.url)
        running = Running(feed)
        try:
            await streamer.until(lambda: streamer.subscribed("AAPL"))
            await running.until(lambda: server.requested("AAPL") >= 1 and "AAPL" in feed.previous_closes)
            assert feed._close_day["AAPL"] == T0 // DAY
            next_day_ms = (T0 + DAY + 30) * 1000
            await streamer.push("AAPL", 100.5, next_day_ms)
            pushed = ("AAPL", (T0 + DAY + 30) * SEC, 100.5)
            await running.until(lambda: pushed in [t[:3] for t in ticks(feed, running.items, 0)])
            # the new day's first push does not hold polling off: a poll brings that day's close
            await running.until(lambda: feed._close_day.get("AAPL") == T0 // DAY + 1)
            await streamer.push("AAPL", 101.5, next_day_ms + 120_000)
            later = ("AAPL", (T0 + DAY + 150) * SEC, 101.5)
            await running.until(lambda: later in [t[:3] for t in ticks(feed, running.items, 0)])
            polled, msft = server.requested("AAPL"), server.requested("MSFT")
            await running.until(lambda: server.requested("MSFT") >= msft + 5)  # MSFT: polled on
            assert server.requested("AAPL") == polled  # AAPL: the day's close known, left to the streamer
            assert feed.previous_closes["AAPL"] > 0
        finally:
            await running.stop()
