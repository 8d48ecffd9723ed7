"""Binance's documented limits for a stream client, enforced by the local server the way Binance enforces
them: 5 incoming messages a second per connection with pings and pongs counted (past it, a disconnect),
1,024 streams per connection, and a new connection at once when a ``serverShutdown`` is announced."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from bench.servers.binance import BinanceServer
from engine.feeds.binance import BinanceFeed
from engine.feeds.budget import MessageBudget, budgeted_connection
from engine.ticks import SymbolTable
from tests.unit.test_feed_binance import make_feed, running


async def test_pongs_count_in_the_five_messages_a_second() -> None:
    # a pong every 0.5 s: four requests a second and the pongs make six, past Binance's five
    async with BinanceServer(ping_interval=0.5, ping_timeout=10) as server:
        feed = make_feed(server.url)
        feed.heartbeat_s = None
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            await server.wait(lambda: server.pongs_received >= 1)
            names = [f"S{i}USDT" for i in range(6)]
            for name in names:
                await feed.subscribe([name])
            await server.wait_subscribed(*(f"{n.lower()}@trade" for n in names), timeout=15)
            assert server.rate_closes == 0 and server.most_in_a_second <= 5
            assert run.states == ["connecting", "live"] and feed.counters.reconnects == 0
            assert server.pongs_received >= 2


async def test_the_server_disconnects_a_client_past_five_messages_a_second() -> None:
    """What the budget prevents: six requests at once end the connection."""
    async with BinanceServer() as server, connect(server.url + "/stream") as ws:
        for i in range(6):
            await ws.send(f'{{"method": "LIST_SUBSCRIPTIONS", "id": {i}}}')
        await server.wait(lambda: server.rate_closes == 1)
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_the_clients_own_pings_wait_for_room_and_its_pongs_are_counted() -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    budget = MessageBudget(4, clock=lambda: clock[0], sleep=sleep)
    async with BinanceServer() as server:
        async with connect(server.url + "/stream", ping_interval=None,
                           create_connection=budgeted_connection(budget)) as ws:
            assert await server.ping() == 1  # answered: the pong is counted, not held back
            assert budget.in_window() == 1
            for _ in range(3):
                await budget.acquire()  # three requests: the budget is full
            pong = await ws.ping()  # a ping of ours waits until the oldest frame leaves the window
            assert slept == [pytest.approx(1.1)]
            await asyncio.wait_for(pong, 5)
            assert budget.sent_total == 5
        assert server.rate_closes == 0


async def test_a_server_shutdown_moves_to_a_new_connection_at_once_losing_and_doubling_nothing() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT", "ETHUSDT"))
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
            made = {"BTCUSDT": 0, "ETHUSDT": 0}

            async def tape(n: int) -> None:  # trades keep coming while the connections change
                for i in range(n):
                    symbol = "BTCUSDT" if i % 2 else "ETHUSDT"
                    await server.trade(symbol, f"{100 + i % 7}.5", "1")
                    made[symbol] += 1
                    await asyncio.sleep(0.001)

            trading = asyncio.create_task(tape(600))
            await run.until(lambda: len(run.ticks()) >= 50)
            await server.announce_shutdown()
            # the client moves without waiting for the server: the first connection is closed by it
            await server.wait(lambda: 1000 in server.close_codes and len(server.connections) == 1)
            await trading
            await run.until(lambda: len(run.ticks()) == 600)
        assert len(server.paths) == 2
        ids = {slot: [t[5] for t in run.ticks() if t[0] == slot] for slot in (0, 1)}
        assert sorted(len(v) for v in ids.values()) == sorted(made.values())
        assert all(v == list(range(1, len(v) + 1)) for v in ids.values())  # every trade once, in order
        assert run.states == ["connecting", "live"]
        assert feed.counters.gaps == 0 and feed.counters.bad_total == 0
        assert feed._pool is not None and feed._pool.replacements == 1


async def test_more_than_1024_streams_are_split_across_connections() -> None:
    names = [f"S{i:04d}USDT" for i in range(1100)]
    async with BinanceServer() as server:
        feed = BinanceFeed(SymbolTable(2048), server.url, names)
        async with running(feed) as run:
            await server.wait(lambda: sum(len(c.subs) for c in server.connections) == 1100, timeout=10)
            assert sorted(len(c.subs) for c in server.connections) == [76, 1024]
            first = await server.trade(names[0], "1.5", "2")
            last = await server.trade(names[-1], "2.5", "3")
            await run.until(lambda: len(run.ticks()) == 2)
            assert [t[5] for t in run.ticks()] == [first["t"], last["t"]]
            assert {feed.symbols.name(t[0]) for t in run.ticks()} == {names[0], names[-1]}
            assert feed.counters.bad_total == 0 and run.states == ["connecting", "live"]
