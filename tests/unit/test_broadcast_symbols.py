"""A publisher whose symbols change while it runs (a sharded engine's takeovers): the ``websocket`` sink's
``hello`` and ``symbols`` frame, and what an attached runtime (``RemoteRuntime``) tells the console.
A real server on 127.0.0.1 and real WebSocket clients, as in ``test_broadcast``."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from engine.feeds.base import FeedStatus
from engine.remote import RemoteRuntime
from engine.sinks.frames import SymbolsChanged, decode
from engine.snapshot import Update
from tests.unit.test_broadcast import client, make_snapshot, recv, serving, until


async def test_hello_and_the_clients_that_follow_every_symbol_learn_a_change() -> None:
    async with serving(fps=1000) as sink:
        sink.set_source("binance", ("AAA", "BBB"), ("rsi_14",), "1m")
        async with client(sink) as everything, client(sink, {"symbols": ["AAA"]}) as named:
            sink.set_symbols(("AAA", "BBB", "CCC"))  # a takeover: CCC gained
            sink.set_symbols(("AAA", "BBB", "CCC"))  # the same share again: nothing to say
            sink.set_symbols(("AAA", "CCC"))  # BBB given up
            assert await recv(everything) == {"type": "symbols", "symbols": ["AAA", "BBB", "CCC"],
                                              "added": ["CCC"], "removed": []}
            frame = await recv(everything)
            assert frame == {"type": "symbols", "symbols": ["AAA", "CCC"], "added": [], "removed": ["BBB"]}
            assert decode(json.dumps(frame)) == SymbolsChanged(("AAA", "CCC"), (), ("BBB",))
            await everything.send(json.dumps({"op": "ping", "id": 1}))
            assert await recv(everything) == {"type": "pong", "id": 1}  # no third symbols frame
            await named.send(json.dumps({"op": "ping", "id": 2}))
            assert await recv(named) == {"type": "pong", "id": 2}  # it named its symbols: not told
        async with connect(sink.url) as ws:  # a client connecting now: its hello says the share
            hello = await recv(ws)
            assert hello["symbols"] == ["AAA", "CCC"] and hello["feed"] == "binance"


async def test_an_empty_share_is_said_as_such_not_guessed_from_the_last_snapshot() -> None:
    async with serving(fps=1000) as sink:
        sink.set_source("binance", ("AAA", "BBB"), ("rsi_14",), "1m")
        sink.publish(make_snapshot(1, ("AAA", "BBB")))
        assert sink.hello()["symbols"] == ["AAA", "BBB"]
        sink.set_symbols(())  # a third engine joined and every symbol went to the others
        assert sink.hello()["symbols"] == []


async def test_the_attached_runtime_announces_each_later_symbol_once() -> None:
    updates: list[Update] = []
    statuses: list[FeedStatus] = []

    def told() -> list[tuple[str, ...]]:
        return [u.new_symbols for u in updates if u.new_symbols]

    async with serving(fps=1000) as sink:
        sink.set_source("binance", ("AAA", "BBB"), ("rsi_14",), "1m")
        remote = RemoteRuntime(sink.url)
        await remote.handshake()
        assert remote.watch == ("AAA", "BBB")
        run = asyncio.create_task(remote.run(updates.append, statuses.append))
        try:
            await until(lambda: sink.stats()["subscriptions"] == 1, "the runtime's subscription")
            sink.publish(make_snapshot(1, ("AAA", "BBB")))
            await until(lambda: any(u.snapshot is not None for u in updates), "a snapshot")
            assert told() == []  # the symbols it opened with are not news
            sink.set_symbols(("AAA", "BBB", "CCC"))
            await until(lambda: told() == [("CCC",)], "CCC announced")
            assert remote.watch == ("AAA", "BBB", "CCC") and remote.feed.universe() == remote.watch
            sink.set_symbols(("AAA", "BBB"))
            sink.set_symbols(("AAA", "BBB", "CCC"))  # given up and taken back: told once only
            sink.publish(make_snapshot(2, ("AAA", "BBB", "CCC", "DDD")))  # DDD was never listed
            await until(lambda: any(u.snapshot is not None and len(u.snapshot.quotes) == 4 for u in updates),
                        "the snapshot with DDD")
            with_ddd = next(u for u in updates if u.snapshot is not None and len(u.snapshot.quotes) == 4)
            assert with_ddd.new_symbols == ("DDD",)  # in the update that first carries its quote
            sink.publish(make_snapshot(3, ("AAA", "BBB", "CCC", "DDD")))
            await until(lambda: any(u.snapshot is not None and u.snapshot.bars == 3 for u in updates),
                        "the next snapshot")
            assert told() == [("CCC",), ("DDD",)]
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
