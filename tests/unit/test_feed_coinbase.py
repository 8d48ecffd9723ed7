"""The Coinbase feed against a local Advanced Trade market-data server (tests/servers/coinbase.py):
subscriptions, exact ticks, the ticker kept out of the tape, sequence gaps, replays, bad data, server
errors, disconnects, stalls and refused handshakes — with every status and counter checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import numpy as np
import pytest

from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.coinbase import HEARTBEATS, PRODUCT_CHANNELS, CoinbaseFeed, TickerState, parse_time_ns
from engine.ticks import TICK_DTYPE, SymbolTable
from tests.servers.coinbase import CoinbaseServer

FIELDS = ["sym", "ts", "price", "size", "side", "trade_id"]
SIDES = {"BUY": -1, "SELL": 1}  # Coinbase names the maker's side; a tick carries the aggressor's
BOTH = ("BTC-USD", "ETH-USD")
SETUP = 5  # messages after subscribing: 3 acknowledgements, a trades snapshot, a ticker snapshot


class Run:
    """A feed's stream consumed in a task; every item it yielded, in order."""

    def __init__(self, feed: CoinbaseFeed) -> None:
        self.feed = feed
        self.items: list[np.ndarray | FeedStatus] = []
        self.started_ns = time.time_ns()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for item in self.feed.stream():
            self.items.append(item)

    def statuses(self) -> list[FeedStatus]:
        return [i for i in self.items if isinstance(i, FeedStatus)]

    def states(self) -> list[tuple[str, str]]:
        return [(s.state, s.reason) for s in self.statuses()]

    def ticks(self) -> np.ndarray:
        batches = [i for i in self.items if not isinstance(i, FeedStatus)]
        return np.concatenate(batches) if batches else np.zeros(0, TICK_DTYPE)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.task.done():
                        self.task.result()
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise AssertionError(f"condition not met; statuses {self.states()}, counters "
                                 f"{self.feed.counters.as_dict()}") from None

    async def settled(self, messages: int, ticks: int) -> None:
        """Wait until the feed has read ``messages`` frames and yielded ``ticks`` ticks."""
        await self.until(lambda: self.feed.counters.messages >= messages and len(self.ticks()) >= ticks)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


Start = Callable[..., Run]


@pytest.fixture
async def server() -> AsyncIterator[CoinbaseServer]:
    async with CoinbaseServer() as s:
        yield s


@pytest.fixture
async def start(server: CoinbaseServer) -> AsyncIterator[Start]:
    runs: list[Run] = []

    def _start(wanted: Iterable[str] = BOTH, backoff: Backoff | None = None, stall_s: float = 15.0) -> Run:
        feed = CoinbaseFeed(SymbolTable(8), server.url, wanted,
                            backoff=backoff or Backoff(base=0.02, cap=0.05, rng=random.Random(1)),
                            stale_after=stall_s, rest_url=server.rest_url)
        run = Run(feed)
        runs.append(run)
        return run

    yield _start
    for run in runs:
        await run.stop()


def ticks_of(run: Run) -> list[tuple[Any, ...]]:
    return run.ticks()[FIELDS].tolist()


def expected(server: CoinbaseServer, feed: CoinbaseFeed,
             trades: list[dict[str, str]]) -> list[tuple[Any, ...]]:
    return [(feed.symbols.get(t["product_id"]), server.trade_ns[(t["product_id"], int(t["trade_id"]))],
             float(t["price"]), float(t["size"]), SIDES[t["side"]], int(t["trade_id"])) for t in trades]


def counters(feed: CoinbaseFeed, messages: int, ticks: int, reconnects: int = 0, duplicates: int = 0,
             gaps: int = 0, out_of_order: int = 0, bad: dict[str, int] | None = None) -> dict[str, object]:
    return {"feed": "coinbase", "messages": messages, "ticks": ticks, "reconnects": reconnects,
            "duplicates": duplicates, "gaps": gaps, "out_of_order": out_of_order, "bad": bad or {}}


def subscribe_frames(kind: str, products: list[str]) -> list[dict[str, object]]:
    return [{"type": kind, "product_ids": products, "channel": c} for c in PRODUCT_CHANNELS]


def connect_frames(products: list[str]) -> list[dict[str, object]]:
    """What a new connection sends: heartbeats (no products) first, then the products' channels."""
    return [HEARTBEATS, *subscribe_frames("subscribe", products)]


def held(products: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The ``subscriptions`` answer for ``products`` on every channel (heartbeats need none)."""
    return {"heartbeats": (), **{c: products for c in PRODUCT_CHANNELS}}


def host(server: CoinbaseServer) -> str:
    return server.url.removeprefix("ws://")


# --- the happy path ---------------------------------------------------------------------------------


async def test_snapshot_then_updates_become_exact_ticks(server: CoinbaseServer, start: Start) -> None:
    before = server.record("BTC-USD", [("36990.00", "0.01", "BUY"), ("36995.50", "0.20", "SELL"),
                                       ("37000.25", "1.5", "BUY"), ("37001.00", "0.003", "SELL")])
    run = start()
    feed = run.feed
    await run.settled(SETUP, 3)
    assert server.received == connect_frames(list(BOTH))
    assert feed.subscribed == held(BOTH)
    # ETH has not traded: its ticker snapshot gives the last price, and no tick
    assert feed.last_price("ETH-USD") == 2000.0 and feed.last_price("SOL-USD") is None

    eth = await server.trade("ETH-USD", "2001.50", "0.1", "SELL")
    # three trades in one update, listed newest first: ticks come out in trade-id order
    btc = await server.trades("BTC-USD", [("37002.00", "0.5", "BUY"), ("37003.75", "0.25", "SELL"),
                                          ("37004.00", "2", "BUY")], newest_first=True)
    await run.settled(SETUP + 4, 7)

    # the snapshot replays the last three trades (the first one recorded is older than it reaches)
    assert ticks_of(run) == expected(server, feed, [*before[1:], eth, *btc])
    recv = run.ticks()["recv"]
    assert ((recv >= run.started_ns) & (recv <= time.time_ns())).all()
    assert run.states() == [("connecting", ""), ("live", "")]
    assert feed.counters.as_dict() == counters(feed, messages=SETUP + 4, ticks=7)
    # the ticker never becomes a tick; it is kept for display, its 24 h volume never added to bars
    ticker = feed.tickers["BTC-USD"]
    assert (ticker.price, ticker.best_bid, ticker.best_ask) == (37004.0, 37003.99, 37004.01)
    assert ticker.volume_24h == pytest.approx(0.01 + 0.20 + 1.5 + 0.003 + 0.5 + 0.25 + 2)
    assert isinstance(feed.tickers["ETH-USD"], TickerState) and feed.tickers["ETH-USD"].price == 2001.5
    assert feed.last_price("BTC-USD") == 37004.0 and feed.last_price("ETH-USD") == 2001.5
    assert feed.universe() == BOTH


async def test_unsubscribe_then_subscribe_again_drops_the_replayed_snapshot(
        server: CoinbaseServer, start: Start) -> None:
    eth_before = server.record("ETH-USD", [("1999.00", "1", "BUY"), ("1999.50", "2", "SELL")])
    run = start()
    feed = run.feed
    await run.settled(SETUP, 2)

    await feed.unsubscribe(["ETH-USD"])
    await run.settled(SETUP + 2, 2)
    assert server.received[3:] == subscribe_frames("unsubscribe", ["ETH-USD"])  # heartbeats stay
    assert feed.subscribed == held(("BTC-USD",))
    assert feed.universe() == ("BTC-USD",)

    eth_missed = await server.trade("ETH-USD", "2003.00", "0.5", "BUY")  # sent to nobody
    btc = await server.trade("BTC-USD", "37010.00", "0.1", "SELL")
    await run.settled(SETUP + 4, 3)

    await feed.subscribe(["ETH-USD"])
    # the new snapshot holds the two trades already delivered and the one traded while unsubscribed
    await run.settled(SETUP + 8, 4)
    assert server.received[5:] == subscribe_frames("subscribe", ["ETH-USD"])
    assert ticks_of(run) == expected(server, feed, [*eth_before, btc, eth_missed])
    assert run.states() == [("connecting", ""), ("live", "")]
    assert feed.counters.as_dict() == counters(feed, messages=SETUP + 8, ticks=4, duplicates=2)
    assert feed.subscribed == held(BOTH)


async def test_heartbeats_keep_a_quiet_connection_live(server: CoinbaseServer, start: Start) -> None:
    server.heartbeat_s = 0.02
    run = start(stall_s=0.15)
    # twenty heartbeats span well over twice the stall limit: without them the feed would reconnect
    await run.until(lambda: run.feed.counters.messages >= SETUP + 20)
    assert run.states() == [("connecting", ""), ("live", "")]
    c = run.feed.counters
    assert (c.ticks, c.reconnects, c.duplicates, c.gaps, c.out_of_order, dict(c.bad)) == (0, 0, 0, 0, 0, {})
    assert len(run.ticks()) == 0


# --- bad data ---------------------------------------------------------------------------------------


async def test_garbage_is_counted_and_skipped_and_the_feed_stays_live(
        server: CoinbaseServer, start: Start, caplog: pytest.LogCaptureFixture) -> None:
    run = start()
    feed = run.feed
    await run.settled(SETUP, 0)
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds"):
        first = await server.trade("BTC-USD", "37010.00", "0.5", "BUY")  # sequence 5 and 6
        for kind in ("malformed", "truncated", "unknown_channel", "negative_price", "nan_price",
                     "unknown_product", "bad_shape"):
            await server.garbage(kind)
        last = await server.trade("BTC-USD", "37020.00", "0.25", "SELL")
        await run.settled(SETUP + 11, 2)

    assert ticks_of(run) == expected(server, feed, [first, last])
    # the truncated frame was sequence 7: its loss shows as a gap when sequence 8 arrives
    gap = "sequence gap: messages 7-7 never arrived (1 missed); not refilled, Coinbase cannot replay them"
    assert run.states() == [("connecting", ""), ("live", ""), ("live", gap)]
    assert feed.counters.as_dict() == counters(
        feed, messages=SETUP + 11, ticks=2, gaps=1,
        bad={"malformed json": 2, "unknown channel": 1, "bad price": 2, "unknown product": 1,
             "invalid market_trades events": 1})
    logged = [r.getMessage() for r in caplog.records]
    assert sum(gap in m for m in logged) == 1
    assert len(logged) == 6  # one per reason, and the gap


def test_decode_counts_what_it_cannot_use() -> None:
    feed = CoinbaseFeed(SymbolTable(4), "ws://127.0.0.1:9", ["BTC-USD"])

    def trade(**kw: str) -> dict[str, str]:
        return {"trade_id": "7", "product_id": "BTC-USD", "price": "10.5", "size": "2", "side": "BUY",
                "time": "2023-06-23T20:31:26.1Z"} | kw

    def msg(seq: int, channel: str, events: list[Any]) -> str:
        return json.dumps({"channel": channel, "client_id": "", "timestamp": "", "sequence_num": seq,
                           "events": events})

    frames: list[str | bytes] = [
        "[1, 2]",
        "{}",
        msg(0, "market_trades", [{"type": "update", "trades": [
            trade(trade_id="x1"), trade(time="yesterday"), trade(time="2023-06-23T20:31:26.1+02:00"),
            trade(size="-1"), trade(size="abc"), trade(side="NONE")]}]),
        msg(1, "ticker", [{"type": "update", "tickers": [{"product_id": "BTC-USD", "price": "abc"},
                                                        {"product_id": "XRP-USD", "price": "1"},
                                                        {"product_id": "BTC-USD", "price": "10.75"}]}]),
        msg(2, "ticker", [{"type": "update"}]),
        msg(3, "subscriptions", [{"subscriptions": {"market_trades": ["BTC-USD"]}}]),
        msg(4, "heartbeats", [{"current_time": "2023-06-23 20:31:56 +0000 UTC", "heartbeat_counter": 3}])
        .encode(),
        msg(3, "heartbeats", []),  # an old sequence number
    ]
    for frame in frames:
        feed.decode(frame, 99)
    batch = feed.batcher.flush()
    assert batch is not None
    # an unknown side is kept as "unknown" (0): the trade itself is sound
    slot = feed.symbols.get("BTC-USD")
    assert batch.tolist() == [(slot, parse_time_ns("2023-06-23T20:31:26.1Z"), 99, 10.5, 2.0, 0, 7)]
    assert feed.counters.as_dict() == counters(
        feed, messages=0, ticks=1, out_of_order=1,
        bad={"invalid message": 1, "unknown message": 1, "bad trade id": 1, "bad time": 2,
             "bad size": 2, "bad ticker price": 1, "unknown product": 1, "invalid ticker events": 1})
    assert feed.tickers["BTC-USD"].price == 10.75 and np.isnan(feed.tickers["BTC-USD"].volume_24h)
    assert feed.subscribed == {"market_trades": ("BTC-USD",)}


@pytest.mark.parametrize(("text", "ns"), [
    ("2023-06-23T20:31:26Z", 1687552286 * 10**9),
    ("2023-06-23T20:31:26.1Z", 1687552286 * 10**9 + 100_000_000),
    ("2023-06-23T20:31:26.122969572Z", 1687552286 * 10**9 + 122_969_572),
    ("2023-06-23T20:31:26.000001+00:00", 1687552286 * 10**9 + 1_000),
])
def test_times_are_exact_to_the_nanosecond(text: str, ns: int) -> None:
    assert parse_time_ns(text) == ns


@pytest.mark.parametrize("text", ["", "2023-06-23T20:31:26", "2023-06-23T20:31:26.Z",
                                  "2023-06-23T20:31:26.1234567890Z", "2023-13-23T20:31:26Z", "garbageZ"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_ns(text)


# --- sequence numbers and server errors ------------------------------------------------------------


async def test_a_sequence_gap_is_counted_logged_once_and_reported(
        server: CoinbaseServer, start: Start, caplog: pytest.LogCaptureFixture) -> None:
    run = start()
    feed = run.feed
    await run.settled(SETUP, 0)
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds"):
        server.skip(3)  # sequence numbers 5, 6 and 7 are never sent
        t = await server.trade("BTC-USD", "37010.00", "0.5", "BUY")
        await run.settled(SETUP + 2, 1)
        # the same trade message again, with its old sequence number: out of order, trade a duplicate
        await server.replay("market_trades")
        await run.settled(SETUP + 3, 1)

    gap = "sequence gap: messages 5-7 never arrived (3 missed); not refilled, Coinbase cannot replay them"
    assert ticks_of(run) == expected(server, feed, [t])
    assert run.states() == [("connecting", ""), ("live", ""), ("live", gap)]
    assert feed.counters.as_dict() == counters(feed, messages=SETUP + 3, ticks=1, gaps=3, duplicates=1,
                                               out_of_order=1)
    assert [r.getMessage() for r in caplog.records] == [f"coinbase: {gap}"]


async def test_server_errors_are_counted_reported_once_each_and_not_fatal(
        server: CoinbaseServer, start: Start, caplog: pytest.LogCaptureFixture) -> None:
    run = start()
    feed = run.feed
    await run.settled(SETUP, 0)
    with caplog.at_level(logging.WARNING, logger="tickdeck.feeds"):
        await feed.subscribe(["NOPE-USD"])  # the server refuses each of the two product channels
        await run.settled(SETUP + 2, 0)
        await server.error("internal error")
        await server.error("internal error")
        t = await server.trade("BTC-USD", "37010.00", "0.5", "BUY")
        await run.settled(SETUP + 6, 1)

    assert server.received[3:] == subscribe_frames("subscribe", ["NOPE-USD"])
    refused = "server error: Failed to subscribe: unknown product id NOPE-USD"
    assert run.states() == [("connecting", ""), ("live", ""), ("live", refused),
                            ("live", "server error: internal error")]
    assert ticks_of(run) == expected(server, feed, [t])
    assert feed.counters.as_dict() == counters(feed, messages=SETUP + 6, ticks=1, bad={"server error": 4})
    assert feed.last_error == "internal error"
    assert [r.getMessage() for r in caplog.records] == [
        "coinbase: could not look up product NOPE-USD (HTTP 404); subscribing it as it is, looked up "
        "again on the next subscription", f"coinbase: {refused}", "coinbase: server error: internal error"]


# --- connections ------------------------------------------------------------------------------------


async def test_a_closed_connection_reconnects_resubscribes_and_drops_the_replay(
        server: CoinbaseServer, start: Start) -> None:
    before = server.record("BTC-USD", [("36990.00", "0.01", "BUY"), ("36995.50", "0.20", "SELL")])
    run = start()
    feed = run.feed
    await run.settled(SETUP, 2)
    t1 = await server.trade("BTC-USD", "37000.00", "1", "BUY")
    await server.garbage("negative_price")  # takes trade id 1003, which no snapshot will hold
    await run.settled(SETUP + 3, 3)

    await server.disconnect(1011, "restarting")
    # the new connection's snapshot holds the three trades already delivered, so nothing was lost
    # (the jump from 1002 to 1004 is not a gap); its sequence numbers restart
    await run.settled(2 * SETUP + 3, 3)
    t2 = await server.trade("BTC-USD", "37001.00", "2", "SELL")
    await run.settled(2 * SETUP + 5, 4)

    assert server.received == 2 * connect_frames(list(BOTH))
    assert ticks_of(run) == expected(server, feed, [*before, t1, t2])
    statuses = run.statuses()
    assert run.states() == [("connecting", ""), ("live", ""),
                            ("reconnecting", f"{host(server)} closed the connection (code 1011: restarting)"),
                            ("connecting", ""), ("live", "")]
    assert 0.0 < statuses[2].retry_in <= 0.05
    assert feed.counters.as_dict() == counters(feed, messages=2 * SETUP + 5, ticks=4, reconnects=1,
                                               duplicates=3, bad={"bad price": 1})


async def test_trades_missed_beyond_the_snapshot_during_an_outage_are_gaps(
        server: CoinbaseServer, start: Start) -> None:
    run = start()
    feed = run.feed
    await run.settled(SETUP, 0)
    t1 = await server.trade("BTC-USD", "37000.00", "1", "BUY")  # trade id 1000
    await run.settled(SETUP + 2, 1)

    # five trades the client never hears of, then the TCP connection drops without a close frame;
    # the snapshot after reconnecting reaches back three trades, so 1001 and 1002 are lost
    missed = server.record("BTC-USD", [(f"3700{i}.00", "0.1", "SELL") for i in range(1, 6)])
    await server.disconnect(abort=True)
    await run.settled(2 * SETUP + 2, 4)

    lost = "BTC-USD: trades 1001-1002 happened while disconnected (2 missed); not refilled"
    assert ticks_of(run) == expected(server, feed, [t1, *missed[2:]])
    assert run.states() == [("connecting", ""), ("live", ""),
                            ("reconnecting", f"{host(server)} dropped the connection without a close frame"),
                            ("connecting", ""), ("live", ""), ("live", lost)]
    assert feed.counters.as_dict() == counters(feed, messages=2 * SETUP + 2, ticks=4, reconnects=1, gaps=2)


async def test_a_stall_goes_stale_then_live_again_when_data_returns(
        server: CoinbaseServer, start: Start) -> None:
    run = start(stall_s=0.3)
    feed = run.feed
    await run.settled(SETUP, 0)
    server.stall()
    await run.until(lambda: run.statuses()[-1].state == "stale")
    server.resume()
    t = await server.trade("BTC-USD", "37000.00", "1", "BUY")
    await run.settled(SETUP + 2, 1)

    assert ticks_of(run) == expected(server, feed, [t])
    assert run.states() == [("connecting", ""), ("live", ""), ("stale", "no data for 0.3 s"), ("live", "")]
    assert feed.counters.as_dict() == counters(feed, messages=SETUP + 2, ticks=1)


async def test_a_stall_past_twice_the_limit_reconnects(server: CoinbaseServer, start: Start) -> None:
    run = start(stall_s=0.1, backoff=Backoff(base=0.4, cap=0.4, rng=random.Random(1)))
    feed = run.feed
    await run.settled(SETUP, 0)
    server.stall()
    await run.until(lambda: run.statuses()[-1].state == "reconnecting")
    feed.stall_s = 30.0  # the next connection is as quiet: it must not go stale while the test checks
    await run.settled(2 * SETUP, 0)
    t = await server.trade("BTC-USD", "37000.00", "1", "BUY")
    await run.settled(2 * SETUP + 2, 1)

    assert ticks_of(run) == expected(server, feed, [t])
    assert run.states() == [("connecting", ""), ("live", ""), ("stale", "no data for 0.1 s"),
                            ("reconnecting", f"no data from {host(server)} for 0.2 s"),
                            ("connecting", ""), ("live", "")]
    assert server.received == 2 * connect_frames(list(BOTH))
    assert feed.counters.as_dict() == counters(feed, messages=2 * SETUP + 2, ticks=1, reconnects=1)


async def test_a_refused_handshake_is_retried_with_backoff(server: CoinbaseServer, start: Start) -> None:
    server.refuse(503, times=2)
    run = start()
    feed = run.feed
    await run.settled(SETUP, 0)

    refused = f"HTTP 503 from {host(server)} at the WebSocket handshake"
    assert run.states() == [("connecting", ""), ("reconnecting", refused), ("connecting", ""),
                            ("reconnecting", refused), ("connecting", ""), ("live", "")]
    assert all(0.0 < s.retry_in <= 0.05 for s in run.statuses() if s.state == "reconnecting")
    assert server.handshakes == 3
    assert server.received == connect_frames(list(BOTH))
    assert feed.counters.as_dict() == counters(feed, messages=SETUP, ticks=0, reconnects=2)


async def test_a_stopped_feed_closes_the_connection_with_going_away(server: CoinbaseServer,
                                                                     start: Start) -> None:
    """RFC 6455, 7.4.1: 1001, an endpoint going away (not 1011, an unexpected condition)."""
    run = start()
    await run.until(lambda: ("live", "") in run.states())
    await run.stop()
    async with asyncio.timeout(5):
        while not server.close_codes:
            await asyncio.sleep(0.005)
    assert server.close_codes == [1001]
