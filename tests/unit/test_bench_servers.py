"""The Binance stand-in (``bench.servers.binance``) as the benches use it: its books stay bounded however
long it runs, a restarting server's 503 is answered once, a duplicate is a trade the connection already
carried, and a flood carries every trade, ids in order per symbol. A raw WebSocket client on 127.0.0.1
reads what the server sends, so nothing of tickdeck's feed is involved."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bench.servers.binance import HISTORY, KEEP, BinanceServer


async def frames(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5.0)) for _ in range(n)]


async def test_history_keeps_the_last_frames_of_each_stream_and_requests_the_last_keep() -> None:
    async with BinanceServer() as server:
        for _ in range(HISTORY + 5):
            await server.trade("BTCUSDT", "1.00", "1.0")
        kept = server.history["btcusdt@trade"]
        assert len(kept) == HISTORY
        assert [kept[0]["data"]["t"], kept[-1]["data"]["t"]] == [6, HISTORY + 5]
        async with connect(f"{server.url}/stream") as ws:
            for i in range(2 * KEEP + 1):
                server.requests.append({"method": "LIST_SUBSCRIPTIONS", "id": i})
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
            assert (await frames(ws, 1))[0] == {"result": [], "id": 7}
        assert len(server.requests) == KEEP
        assert server.requests[-1] == {"method": "LIST_SUBSCRIPTIONS", "id": 7}


async def test_refuse_next_answers_503_to_that_many_handshakes_then_accepts() -> None:
    async with BinanceServer() as server:
        server.refuse_next = 2
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{server.url}/stream"):
                    pass
            assert refused.value.response.status_code == 503
        async with connect(f"{server.url}/stream"):
            await server.wait(lambda: server.accepted == 1)
        assert (server.refused, server.refuse_next) == (2, 0)


async def test_a_duplicate_is_a_trade_the_connection_already_carried() -> None:
    async with BinanceServer() as server, connect(f"{server.url}/stream?streams=btcusdt@trade") as ws:
        await server.wait_subscribed("btcusdt@trade")
        sent = [await server.trade("BTCUSDT", f"{p}.00", "1.0") for p in (10, 11)]
        assert [f["data"] for f in await frames(ws, 2)] == sent
        assert await server.duplicate(random.Random(3)) == 1
        assert (await frames(ws, 1))[0]["data"] in sent


async def test_a_flood_carries_every_trade_with_ids_in_order_per_symbol() -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    streams = [f"{s.lower()}@trade" for s in symbols]
    async with BinanceServer(compression=None) as server, \
            connect(f"{server.url}/stream?streams={'/'.join(streams)}") as ws:
        await server.wait_subscribed(*streams)
        assert await server.flood(symbols, 300) == 300
        got = await frames(ws, 300)
    assert [f["stream"] for f in got] == streams * 100
    for symbol in symbols:
        assert [f["data"]["t"] for f in got if f["data"]["s"] == symbol] == list(range(1, 101))
