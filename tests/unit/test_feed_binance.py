"""The Binance feed against a local server that speaks Binance's combined-stream protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from websockets.protocol import State

from bench.servers.binance import GARBAGE, BinanceServer
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.binance import BinanceFeed
from engine.feeds.budget import MessageBudget
from engine.feeds.ws import Connection
from engine.ticks import SymbolTable

MS = 1_000_000


class Run:
    """A feed's ``stream()`` consumed in a task, keeping everything it yields."""

    def __init__(self, feed: BinanceFeed) -> None:
        self.feed = feed
        self.statuses: list[FeedStatus] = []
        self.batches: list[np.ndarray] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for item in self.feed.stream():
                if isinstance(item, FeedStatus):
                    self.statuses.append(item)
                else:
                    self.batches.append(item)
                self._bump()
        finally:
            self._bump()

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def states(self) -> list[str]:
        return [s.state for s in self.statuses]

    def ticks(self) -> list[tuple[Any, ...]]:
        """Every tick so far without its receive time: (sym, ts, price, size, side, trade_id)."""
        return [(r[0], r[1], r[3], r[4], r[5], r[6]) for b in self.batches for r in b.tolist()]

    def recv_times(self) -> list[int]:
        return [int(t) for b in self.batches for t in b["recv"]]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the feed's stream ended")
                # counters also change without anything being yielded (answers, garbage): look again soon
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.01)


@contextlib.asynccontextmanager
async def running(feed: BinanceFeed) -> AsyncIterator[Run]:
    run = Run(feed)
    try:
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task


def make_feed(url: str, wanted: tuple[str, ...] = ("BTCUSDT",), **kw: Any) -> BinanceFeed:
    return BinanceFeed(SymbolTable(16), url, wanted, backoff=Backoff(0.01, 0.02, rng=random.Random(3)), **kw)


def tick(slot: int, trade: dict[str, Any]) -> tuple[Any, ...]:
    """The tick a trade event must become."""
    return (slot, trade["T"] * MS, float(trade["p"]), float(trade["q"]), -1 if trade["m"] else 1, trade["t"])


def counters(feed: BinanceFeed, **expected: Any) -> None:
    want = {"feed": "binance", "messages": 0, "ticks": 0, "reconnects": 0, "duplicates": 0, "gaps": 0,
            "out_of_order": 0, "bad": {}}
    want.update(expected)
    assert feed.counters.as_dict() == want


def host(server: BinanceServer) -> str:
    return server.url.removeprefix("ws://")


async def test_trades_become_exact_ticks() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT", "ETHUSDT"))
        before = time.time_ns()
        async with running(feed) as run:
            await run.until(lambda: run.states == ["connecting", "live"])
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
            trades = [await server.trade("BTCUSDT", "43250.10", "0.015", buyer_maker=True),
                      await server.trade("ETHUSDT", "2250.5", "1.25"),
                      await server.trade("BTCUSDT", "43250.20", "0.5")]
            await run.until(lambda: len(run.ticks()) == 3)
        after = time.time_ns()
    assert server.paths == ["/stream?streams=btcusdt@trade/ethusdt@trade"]
    assert server.requests == []  # the URL subscribed them: no redundant SUBSCRIBE
    assert trades[0] == {"e": "trade", "E": 1_700_000_000_003, "s": "BTCUSDT", "t": 1, "p": "43250.10",
                         "q": "0.015", "T": 1_700_000_000_001, "m": True, "M": True}
    assert run.ticks() == [
        (0, 1_700_000_000_001 * MS, 43250.10, 0.015, -1, 1),
        (1, 1_700_000_000_002 * MS, 2250.5, 1.25, 1, 1),
        (0, 1_700_000_000_003 * MS, 43250.20, 0.5, 1, 2),
    ]
    assert run.ticks() == [tick(0, trades[0]), tick(1, trades[1]), tick(0, trades[2])]
    assert all(before <= t <= after for t in run.recv_times())
    assert feed.symbols.names == ("BTCUSDT", "ETHUSDT")
    assert run.states == ["connecting", "live"]
    counters(feed, messages=3, ticks=3)


async def test_the_watchlist_changes_live() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ())
        async with running(feed) as run:
            await run.until(lambda: run.states == ["connecting", "live"])
            await server.wait(lambda: len(server.connections) == 1)
            await feed.subscribe(["ETHUSDT", "BTCUSDT"])
            await server.wait_subscribed("ethusdt@trade", "btcusdt@trade")
            eth = await server.trade("ETHUSDT", "2250.5", "2")
            await run.until(lambda: len(run.ticks()) == 1)
            await feed.subscribe(["BTCUSDT"])  # already subscribed: nothing to send
            await feed.unsubscribe(["ETHUSDT", "SOLUSDT"])  # SOLUSDT was never subscribed
            await server.wait(lambda: server.connections[0].subs == ["btcusdt@trade"])
            await server.trade("ETHUSDT", "2251", "1")  # no longer subscribed: the server keeps it
            btc = await server.trade("BTCUSDT", "43000", "0.1", buyer_maker=True)
            await run.until(lambda: len(run.ticks()) == 2 and feed.counters.messages == 4)
    assert server.paths == ["/stream"]
    assert server.requests == [
        {"method": "SUBSCRIBE", "params": ["ethusdt@trade", "btcusdt@trade"], "id": 1},
        {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 2},
    ]
    assert run.ticks() == [tick(0, eth), tick(1, btc)]
    assert feed.universe() == ("BTCUSDT",)
    assert run.states == ["connecting", "live"]
    counters(feed, messages=4, ticks=2)  # two answers, two trades


async def test_streams_beyond_the_url_limit_are_subscribed_after_connecting() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
        feed.url_streams_max = 2
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade", "solusdt@trade")
            sol = await server.trade("SOLUSDT", "150.25", "3")
            await run.until(lambda: len(run.ticks()) == 1 and feed.counters.messages == 2)
    assert server.paths == ["/stream?streams=btcusdt@trade/ethusdt@trade"]
    assert server.requests == [{"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 1}]
    assert run.ticks() == [tick(0, sol)]
    assert run.states == ["connecting", "live"]
    counters(feed, messages=2, ticks=1)


async def test_an_error_answer_is_counted_and_logged_never_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url)
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            server.fail_next = (2, "Invalid request: too many parameters")
            with caplog.at_level(logging.WARNING, logger="tickdeck.feeds.binance"):
                await feed.subscribe(["ETHUSDT"])
                await run.until(lambda: feed.counters.bad_total == 1)
            await feed.subscribe(["SOLUSDT"])
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")
            btc = await server.trade("BTCUSDT", "43000.5", "1")
            await run.until(lambda: len(run.ticks()) == 1 and feed.counters.messages == 3)
    assert server.requests == [
        {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1},
        {"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 2},
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "binance refused SUBSCRIBE ['ethusdt@trade'] (id 1): code 2, Invalid request: too many parameters"]
    assert run.ticks() == [tick(0, btc)]
    assert run.states == ["connecting", "live"]
    counters(feed, messages=3, ticks=1, bad={"error answer": 1})


async def test_symbols_that_cannot_be_stream_names_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="kline_<interval>"):
        BinanceFeed(SymbolTable(4), "ws://127.0.0.1:1", stream="kline_7m")
    with pytest.raises(ValueError, match="'depth'"):
        BinanceFeed(SymbolTable(4), "ws://127.0.0.1:1", stream="depth")
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds.binance"):
        feed = BinanceFeed(SymbolTable(4), "ws://127.0.0.1:1", ["BTCUSDT", "BTC/USDT"])
        await feed.subscribe(["ETH USDT", "", "eth@usdt", "SOLUSDT"])
    assert feed.universe() == ("BTCUSDT", "SOLUSDT")
    assert feed.url_for(feed.wanted) == "ws://127.0.0.1:1/stream?streams=btcusdt@trade/solusdt@trade"
    assert len(caplog.records) == 4 and "'BTC/USDT' cannot be a Binance symbol" in caplog.records[0].message


async def test_server_pings_are_answered_with_pongs() -> None:
    async with BinanceServer(ping_interval=0.05, ping_timeout=0.5) as server:
        feed = make_feed(server.url)
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            # the server's periodic pings (Binance: every 20 s; here every 50 ms) get their pongs: the
            # latency is measured only from a pong that answers one of them
            conn = server.connections[0]
            async with asyncio.timeout(5):
                while conn.ws.latency == 0.0:
                    await asyncio.sleep(0.05)
            # a pong must carry a copy of the ping's payload, or the ping stays unanswered
            assert await server.ping(b"tickdeck-1") == 1
            assert await server.ping(b"tickdeck-2") == 1
            assert server.connections == [conn]  # never closed for a missing pong
    assert run.states == ["connecting", "live"]
    counters(feed)  # control frames are not messages


async def test_a_forced_disconnect_reconnects_resubscribes_and_loses_or_doubles_nothing() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT", "ETHUSDT"))
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
            await feed.subscribe(["SOLUSDT"])
            await server.wait_subscribed("btcusdt@trade", "ethusdt@trade", "solusdt@trade")
            first = [await server.trade("BTCUSDT", f"100.{i}", "1") for i in range(1, 4)]
            sol = await server.trade("SOLUSDT", "150", "2", buyer_maker=True)
            await run.until(lambda: len(run.ticks()) == 4)
            server.stall()  # the connection goes quiet before it ends: these two never reach the feed
            missed = [await server.trade("BTCUSDT", f"100.{i}", "1") for i in range(4, 6)]
            server.replay = 4  # the next connection gets the last 4 trades of each stream again
            await server.disconnect()
            await run.until(lambda: "reconnecting" in run.states)
            await feed.unsubscribe(["ETHUSDT"])  # while away: the next URL leaves it out
            await run.until(lambda: run.states.count("live") == 2)
            await server.wait_subscribed("btcusdt@trade", "solusdt@trade")
            last = await server.trade("BTCUSDT", "100.6", "1")
            await run.until(lambda: len(run.ticks()) == 7 and feed.counters.messages == 11)
    assert server.paths == ["/stream?streams=btcusdt@trade/ethusdt@trade",
                            "/stream?streams=btcusdt@trade/solusdt@trade"]
    assert server.requests == [{"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 1}]
    assert run.states == ["connecting", "live", "reconnecting", "connecting", "live"]
    reconnecting = run.statuses[2]
    assert reconnecting.reason == f"{host(server)} closed the connection (code 1000)"
    assert 0.005 <= reconnecting.retry_in <= 0.02
    btc = [*first, *missed, last]
    assert [t["t"] for t in btc] == [1, 2, 3, 4, 5, 6]
    assert run.ticks() == [*(tick(0, t) for t in first), tick(1, sol), *(tick(0, t) for t in btc[3:])]
    # 1 answer + 4 trades, then the replay (btc 2-5, sol 1) + 1 trade; btc 2, 3 and sol 1 were doubles
    counters(feed, messages=11, ticks=7, reconnects=1, duplicates=3)


async def test_gaps_are_counted_and_logged_once_per_symbol(caplog: pytest.LogCaptureFixture) -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT", "ETHUSDT"))
        with caplog.at_level(logging.WARNING, logger="tickdeck.feeds.binance"):
            async with running(feed) as run:
                await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
                sent = [await server.trade("BTCUSDT", "10", "1")]
                server.skip("BTCUSDT", 2)
                sent.append(await server.trade("BTCUSDT", "11", "1"))
                server.skip("BTCUSDT", 1)
                sent.append(await server.trade("BTCUSDT", "12", "1"))
                sent.append(await server.trade("ETHUSDT", "20", "1"))
                server.skip("ETHUSDT", 5)
                sent.append(await server.trade("ETHUSDT", "21", "1"))
                await run.until(lambda: len(run.ticks()) == 5)
                # trades made while the feed is disconnected are gaps too (no replay here)
                server.stall()
                await server.trade("BTCUSDT", "13", "1")
                await server.disconnect(abort=True)
                await run.until(lambda: run.states.count("live") == 2)
                await server.wait_subscribed("btcusdt@trade", "ethusdt@trade")
                sent.append(await server.trade("BTCUSDT", "14", "1"))
                await run.until(lambda: len(run.ticks()) == 6)
    assert [(t["s"], t["t"]) for t in sent] == [("BTCUSDT", 1), ("BTCUSDT", 4), ("BTCUSDT", 6),
                                                ("ETHUSDT", 1), ("ETHUSDT", 7), ("BTCUSDT", 8)]
    assert run.ticks() == [tick(s, t) for s, t in zip([0, 0, 0, 1, 1, 0], sent, strict=True)]
    gaps = [r.getMessage() for r in caplog.records if "missed" in r.getMessage()]
    assert gaps == [
        "binance: BTCUSDT: 2 trade(s) missed, ids 2..3 (not fetched again; further gaps are only counted)",
        "binance: ETHUSDT: 5 trade(s) missed, ids 2..6 (not fetched again; further gaps are only counted)",
    ]
    assert run.states == ["connecting", "live", "reconnecting", "connecting", "live"]
    assert run.statuses[2].reason == f"{host(server)} dropped the connection without a close frame"
    counters(feed, messages=6, ticks=6, reconnects=1, gaps=2 + 1 + 5 + 1)


async def test_garbage_is_counted_by_reason_and_skipped() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT",))
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            for kind in GARBAGE:
                await server.send_garbage(kind)
            await server.send_raw('[1, 2, 3]')
            await server.send_raw('{"hello": "world"}')
            await server.send_raw('{"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, '
                                  '"s": "BTCUSDT", "t": "seven", "p": "1", "q": "1", "T": 1, "m": false}}')
            await server.send_raw('{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, '
                                  '"s": "BTCUSDT", "k": {"t": 0, "T": 59999, "s": "BTCUSDT", "i": "1m", '
                                  '"c": "1", "v": "1", "x": false}}}')
            await server.send_raw('{"result": null, "id": {"nested": true}}')
            await server.send_raw('{"stream": "btcusdt@trade", "data": {"e": "serverShutdown", "E": 1}}')
            await server.send_raw('{"e": "serverShutdown", "E": 1}')
            await server.send_raw("")
            good = await server.trade("BTCUSDT", "43000", "0.25")
            await run.until(lambda: len(run.ticks()) == 1)
    assert good["t"] == 3  # the negative and NaN prices were trades 1 and 2: no gap before it
    assert run.ticks() == [tick(0, good)]
    assert run.states == ["connecting", "live"]
    counters(feed, messages=15, ticks=1, bad={
        "malformed json": 1, "truncated frame": 1, "empty frame": 1, "unknown event type": 1, "bad price": 2,
        "unknown symbol": 1, "unknown frame": 2, "invalid event": 1, "unexpected stream": 1,
        "invalid answer": 1,
    })
    truncated = feed.counters.samples["truncated frame"]
    assert truncated.startswith('{"stream":"btcusdt@trade","data":{"e":"trade"')
    assert '"s":"BTCUSDT","t":1,"p":"-1.50","q":"1.0"' in feed.counters.samples["bad price"]


async def test_a_stall_goes_stale_then_recovers_or_reconnects() -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url, stale_after=0.6)  # feeds.binance.stale_after
        feed.heartbeat_s = None
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            server.stall()
            await run.until(lambda: run.states[-1] == "stale")
            server.resume()  # data again before twice the stall time: live, same connection
            first = await server.trade("BTCUSDT", "50", "1")
            await run.until(lambda: run.states[-1] == "live")
            server.stall()
            await run.until(lambda: run.states.count("live") == 3)
            await server.wait_subscribed("btcusdt@trade")
            second = await server.trade("BTCUSDT", "51", "2")
            await run.until(lambda: len(run.ticks()) == 2)
    assert run.states == ["connecting", "live", "stale", "live", "stale", "reconnecting", "connecting",
                          "live"]
    assert run.statuses[2].reason == run.statuses[4].reason == "no data for 0.6 s"
    assert run.statuses[5].reason == f"no data from {host(server)} for 1.2 s"
    assert len(server.paths) == 2
    assert run.ticks() == [tick(0, first), tick(0, second)]
    counters(feed, messages=2, ticks=2, reconnects=1)


async def test_a_quiet_connection_is_probed_but_a_silent_one_still_goes_stale() -> None:
    async with BinanceServer(max_messages_per_s=100) as server:  # probes faster than Binance allows
        feed = make_feed(server.url)
        feed.stall_s = 0.6
        feed.heartbeat_s = 0.1
        feed.max_requests_per_s = 20  # the throttle would space these probes out beyond the stall time

        def probes() -> int:
            return sum(1 for r in server.requests if r["method"] == "LIST_SUBSCRIPTIONS")

        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            # probes are at least 0.1 s apart: 13 of them outlast twice the stall time
            await server.wait(lambda: probes() >= 13)
            await run.until(lambda: feed.counters.messages >= 12)
            assert run.states == ["connecting", "live"]
            server.stall()  # unanswered probes do not keep a dead server alive
            await run.until(lambda: run.states.count("live") == 2)
            answered = feed.counters.messages
    assert run.states == ["connecting", "live", "stale", "reconnecting", "connecting", "live"]
    assert all(r == {"method": "LIST_SUBSCRIPTIONS", "id": i}
               for i, r in enumerate(server.requests[:probes()], start=1))
    counters(feed, messages=answered, reconnects=1)


async def test_an_http_503_handshake_is_reported_while_reconnecting() -> None:
    async with BinanceServer() as server:
        server.refuse_status = 503
        feed = make_feed(server.url)
        async with running(feed) as run:
            await run.until(lambda: run.states.count("reconnecting") == 2)
            server.refuse_status = None
            await run.until(lambda: "live" in run.states)
    refused = server.refused
    assert refused >= 2
    assert run.states == ["connecting", "reconnecting"] * refused + ["connecting", "live"]
    reasons = {s.reason for s in run.statuses if s.state == "reconnecting"}
    assert reasons == {f"HTTP 503 from {host(server)} at the WebSocket handshake"}
    assert all(0.005 <= s.retry_in <= 0.02 for s in run.statuses if s.state == "reconnecting")
    counters(feed, reconnects=refused)


async def test_a_refused_connection_is_reported_while_reconnecting() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    feed = make_feed(f"ws://127.0.0.1:{port}")
    async with running(feed) as run:
        await run.until(lambda: run.states.count("reconnecting") == 2)
    assert run.states[:4] == ["connecting", "reconnecting", "connecting", "reconnecting"]
    assert run.statuses[1].reason == run.statuses[3].reason == f"connection refused by 127.0.0.1:{port}"
    assert feed.counters.reconnects in (1, 2)  # the third attempt may have begun when we stopped
    counters(feed, reconnects=feed.counters.reconnects)


async def test_kline_updates_become_ticks_of_the_added_volume() -> None:
    start = 1_700_000_040_000  # a minute boundary
    async with BinanceServer() as server:
        feed = make_feed(server.url, ("BTCUSDT",), stream="kline_1m")
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@kline_1m")
            first = await server.kline("BTCUSDT", "1m", start, "100.5", "1.5", start + 10_000)
            await server.kline("BTCUSDT", "1m", start, "101.25", "2.25", start + 20_000)
            await server.kline("BTCUSDT", "1m", start, "101.25", "2.25", start + 22_000)  # no trades since
            await server.kline("BTCUSDT", "1m", start, "101.0", "3.0", start + 60_002, closed=True)
            nxt = start + 60_000
            await server.kline("BTCUSDT", "1m", nxt, "102", "0.5", nxt + 1_000)
            await server.kline("BTCUSDT", "1m", start, "99", "4", nxt + 1_500)  # the old kline, late
            await server.kline("BTCUSDT", "1m", nxt, "102.5", "0.25", nxt + 2_000)  # volume went back
            await server.kline("BTCUSDT", "1m", nxt, "NaN", "0.75", nxt + 3_000)
            await server.kline("BTCUSDT", "1m", nxt, "103", "0.75", nxt + 4_000)
            # all nine read, and the batch they went into handed over (it closes 5 ms after the last)
            await run.until(lambda: feed.counters.messages == 9 and not len(feed.batcher) and run.batches)
    assert server.paths == ["/stream?streams=btcusdt@kline_1m"]
    assert first["k"]["T"] == start + 59_999 and first["k"]["i"] == "1m" and first["E"] == start + 10_000
    assert run.ticks() == [
        (0, (start + 10_000) * MS, 100.5, 1.5, 0, -1),
        (0, (start + 20_000) * MS, 101.25, 0.75, 0, -1),
        (0, (start + 59_999) * MS, 101.0, 0.75, 0, -1),  # the closing update, filed inside its kline
        (0, (nxt + 1_000) * MS, 102.0, 0.5, 0, -1),
        (0, (nxt + 4_000) * MS, 103.0, 0.25, 0, -1),  # 0.75 since the last good update at 0.5
    ]
    assert run.states == ["connecting", "live"]
    counters(feed, messages=9, ticks=5, out_of_order=2, bad={"bad price": 1})


class FakeConnection:
    """Stands in for an open connection where only what is sent matters."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sent: list[tuple[float, Any]] = []
        self.state = State.OPEN
        self.protocol = None

    async def send(self, text: str) -> None:
        self.sent.append((self.clock[0], json.loads(text)))

    async def recv(self) -> str:
        await asyncio.Event().wait()  # nothing ever arrives
        return ""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.state = State.CLOSED


@contextlib.asynccontextmanager
async def connected(feed: BinanceFeed, ws: FakeConnection, url: str | None = None
                    ) -> AsyncIterator[Connection]:
    """``feed`` connected (as WsFeed.stream connects it) to ``ws`` instead of a server, at ``url`` (by
    default the URL for the feed's watchlist now)."""
    async def opener(url: str, budget: MessageBudget) -> FakeConnection:
        return ws

    feed._open = opener  # type: ignore[method-assign,assignment]
    pool = await feed.open_connection(url or feed.url_for(feed.wanted))
    feed._ws = pool
    feed.on_connected()
    try:
        yield pool
    finally:
        await pool.close()


async def test_requests_are_throttled_below_the_servers_message_limit() -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    feed = BinanceFeed(SymbolTable(16), "ws://127.0.0.1:1", [])
    feed.heartbeat_s = None
    feed._clock = lambda: clock[0]
    feed._sleep = sleep  # type: ignore[assignment]
    ws = FakeConnection(clock)
    async with connected(feed, ws):
        for i in range(10):
            await feed.subscribe([f"S{i}USDT"])
            clock[0] += 0.1
    times = [t for t, _ in ws.sent]
    assert [r["params"] for _, r in ws.sent] == [[f"s{i}usdt@trade"] for i in range(10)]
    assert [r["id"] for _, r in ws.sent] == list(range(1, 11))
    # 4 of Binance's 5 a second, over 1.1 s: frames sent just over a second apart may arrive just under
    assert all(sum(1 for u in times if t - 1.1 < u <= t) <= 4 for t in times)
    assert slept and len(slept) <= 10


async def test_streams_dropped_while_connecting_are_unsubscribed_on_arrival() -> None:
    feed = BinanceFeed(SymbolTable(16), "ws://127.0.0.1:1", ["BTCUSDT", "ETHUSDT"])
    feed.heartbeat_s = None
    ws = FakeConnection([0.0])
    url = feed.url_for(feed.wanted)  # as WsFeed.stream does, then the watchlist changes meanwhile
    await feed.unsubscribe(["ETHUSDT"])
    await feed.subscribe(["SOLUSDT"])
    async with connected(feed, ws, url) as pool:
        await feed.send_subscription(pool, feed.wanted, True)
    assert url == "ws://127.0.0.1:1/stream?streams=btcusdt@trade/ethusdt@trade"
    assert [r for _, r in ws.sent] == [
        {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 1},
        {"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 2},
    ]
