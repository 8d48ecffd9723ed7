"""Coinbase's documented rules for a market-data client, enforced by the local server the way the service
enforces them: a subscribe within 5 s of connecting (heartbeats, even with nothing to watch), at most 8
frames a second, heartbeats as a connection-wide channel, aliased products answered under their canonical
id, and ``side`` naming the maker."""

from __future__ import annotations

import json
import random
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine.feeds.backoff import Backoff
from engine.feeds.coinbase import HEARTBEATS, CoinbaseFeed
from engine.ticks import SymbolTable
from tests.servers.coinbase import CoinbaseServer
from tests.unit.test_feed_coinbase import SETUP, Run, connect_frames, subscribe_frames


def make_feed(server: CoinbaseServer, wanted: tuple[str, ...], rest_url: str | None = None) -> CoinbaseFeed:
    return CoinbaseFeed(SymbolTable(16), server.url, wanted, rest_url=rest_url,
                        backoff=Backoff(base=0.02, cap=0.05, rng=random.Random(1)))


async def test_an_empty_watchlist_subscribes_heartbeats_before_the_servers_deadline() -> None:
    async with CoinbaseServer(subscribe_deadline_s=0.3) as server:
        run = Run(make_feed(server, ()))
        try:
            await run.until(lambda: server.deadline_checks >= 1)
            assert server.deadline_closes == 0
            assert server.received == [HEARTBEATS]
            assert run.states() == [("connecting", ""), ("live", "")]
            assert run.feed.counters.reconnects == 0 and len(server.clients) == 1
            await run.feed.subscribe(["BTC-USD"])  # and the watchlist can start later
            await run.until(lambda: server.subscribed("market_trades", "BTC-USD"))
            assert server.received[1:] == subscribe_frames("subscribe", ["BTC-USD"])
        finally:
            await run.stop()


async def test_a_connection_that_never_subscribes_is_closed_by_the_server() -> None:
    """The rule the test above obeys, shown to bite: the server closes a silent connection."""
    async with CoinbaseServer(subscribe_deadline_s=0.1) as server, connect(server.url) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert server.deadline_closes == 1
        await server.until(lambda: server.close_codes == [1008])


async def test_a_quickly_edited_watchlist_stays_within_eight_frames_a_second() -> None:
    async with CoinbaseServer(products={"BTC-USD": 1.0, "ETH-USD": 2.0, "SOL-USD": 3.0, "ADA-USD": 4.0,
                                        "XRP-USD": 5.0}) as server:
        run = Run(make_feed(server, ("BTC-USD", "ETH-USD")))
        try:
            await run.settled(SETUP, 0)
            # 3 frames on connecting, then 2 per change: 13 in a burst, over Coinbase's 8 a second
            for change in (["SOL-USD"], ["ADA-USD"], ["XRP-USD"]):
                await run.feed.subscribe(change)
            await run.feed.unsubscribe(["ETH-USD"])
            await run.feed.unsubscribe(["SOL-USD"])
            await run.until(lambda: len(server.received) == 13 and server.clients
                            and not server.subscribed("ticker", "SOL-USD"))
            assert server.rate_limited == 0 and run.feed.counters.reconnects == 0
            assert run.feed.budget is not None and run.feed.budget.waits > 0  # it did have to wait
            assert sorted(server.clients[0].subs["market_trades"]) == ["ADA-USD", "BTC-USD", "XRP-USD"]
            assert run.states() == [("connecting", ""), ("live", "")]
        finally:
            await run.stop()


async def test_the_server_disconnects_a_client_past_eight_frames_a_second() -> None:
    """What the budget above prevents: nine frames at once end the connection."""
    async with CoinbaseServer() as server:
        async with connect(server.url) as ws:
            for _ in range(9):
                await ws.send('{"type": "subscribe", "product_ids": [], "channel": "heartbeats"}')
            await server.until(lambda: server.rate_limited == 1)
        await server.until(lambda: server.close_codes == [1008])


async def test_aliased_products_reach_the_names_they_were_subscribed_by() -> None:
    async with CoinbaseServer(aliases={"BTC-USDC": "BTC-USD"}) as server:
        run = Run(make_feed(server, ("BTC-USDC", "ETH-USD"), rest_url=server.rest_url))
        feed = run.feed
        try:
            await run.settled(SETUP, 0)
            assert sorted(server.product_requests) == ["BTC-USDC", "ETH-USD"]
            trade = await server.trade("BTC-USD", "37001.00", "0.5", "SELL")  # under the canonical id
            await run.settled(SETUP + 2, 1)
            ticks = run.ticks()
            assert ticks["sym"].tolist() == [feed.symbols.get("BTC-USDC")]
            assert ticks["trade_id"].tolist() == [int(trade["trade_id"])]
            assert feed.tickers["BTC-USDC"].price == 37001.0 and "BTC-USD" not in feed.tickers
            assert feed.last_price("BTC-USDC") == 37001.0
            assert dict(feed.counters.bad) == {}

            # both names watched: each gets the trade; a name looked up once is not asked again
            await feed.subscribe(["BTC-USD"])
            await run.until(lambda: server.subscribed("market_trades", "BTC-USD"))
            await server.trade("BTC-USD", "37002.00", "0.1", "BUY")
            await run.until(lambda: len(run.ticks()) == 3)
            assert sorted(run.ticks()["sym"].tolist()[1:]) == sorted(
                [feed.symbols.get("BTC-USDC"), feed.symbols.get("BTC-USD")])
            assert sorted(server.product_requests) == ["BTC-USD", "BTC-USDC", "ETH-USD"]
            assert dict(feed.counters.bad) == {}
        finally:
            await run.stop()


async def test_a_product_lookup_that_fails_never_stops_the_feed(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with CoinbaseServer() as server:
        run = Run(make_feed(server, ("BTC-USD",), rest_url=closed))
        try:
            await run.until(lambda: server.subscribed("market_trades", "BTC-USD"))
            assert server.received == connect_frames(["BTC-USD"])
            await server.trade("BTC-USD", "37001.00", "0.5", "BUY")
            await run.until(lambda: len(run.ticks()) == 1)
            assert run.feed.aliases is not None and run.feed.aliases.failures == 1
            assert any("could not look up product BTC-USD" in r.getMessage() for r in caplog.records)
        finally:
            await run.stop()


@pytest.mark.parametrize(("side", "aggressor"), [("SELL", 1), ("BUY", -1)])
def test_side_names_the_maker_so_the_tick_carries_the_other_side(side: str, aggressor: int) -> None:
    feed = CoinbaseFeed(SymbolTable(4), "ws://127.0.0.1:1", ["BTC-USD"])
    feed._map_names()
    trade = {"trade_id": "7", "product_id": "BTC-USD", "price": "100.5", "size": "1", "side": side,
             "time": "2023-11-14T22:13:20.001Z"}
    msg = {"channel": "market_trades", "sequence_num": 0, "events": [{"type": "update", "trades": [trade]}]}
    feed.decode(json.dumps(msg), 0)
    batch = feed.batcher.flush()
    assert batch is not None and batch["side"].tolist() == [aggressor]
