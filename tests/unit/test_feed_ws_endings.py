"""How a WebSocket feed's connection ends, against the local Binance server: a stop closes it with
1001 (going away), whichever way the app or the service stops the feed; a connection that the server
cuts short in the middle of a frame or of a fragmented message is a bad message, counted with its
reason, and the feed reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from bench.servers.binance import BinanceServer
from engine.feeds.base import FeedStatus
from engine.feeds.binance import BinanceFeed
from tests.unit.test_feed_binance import counters, host, make_feed, running, tick


# --- shutdown: the exchange hears a normal close, not an error ----------------------------------------
async def _stop_by_cancelling_the_consumer(feed: BinanceFeed) -> None:
    """As the console stops: the task that reads the stream is cancelled while the feed waits."""
    async with running(feed) as run:
        await run.until(lambda: run.states == ["connecting", "live"])


async def _stop_by_closing_the_stream(feed: BinanceFeed) -> None:
    """As a consumer that stops reading does: the stream, suspended at a yield, is closed."""
    async with contextlib.aclosing(feed.stream()) as stream:
        async for item in stream:
            if isinstance(item, FeedStatus) and item.state == "live":
                break


async def _stop_as_the_headless_service_does(feed: BinanceFeed) -> None:
    """``StoppableFeed.stop()`` (SIGTERM): the stream ends, the runtime sees the end of the feed."""
    from engine.headless import StoppableFeed

    stoppable = StoppableFeed(feed)
    async with contextlib.aclosing(stoppable.stream()) as stream:
        async for item in stream:
            if isinstance(item, FeedStatus) and item.state == "live":
                stoppable.stop()


async def _stop_as_the_runtime_does(feed: BinanceFeed) -> None:
    """The console's runtime task cancelled (the app exits): it cancels its feed pump in turn."""
    from engine.config import load_config
    from engine.runtime import Runtime, build_engine

    config = load_config(overrides={"feeds.sim.backfill": 0}, env={})
    runtime = Runtime(config, engine=build_engine(config), feed=feed)
    live = asyncio.Event()

    def on_status(status: FeedStatus) -> None:
        if status.state == "live":
            live.set()

    task = asyncio.create_task(runtime.run(lambda u: None, on_status))
    async with asyncio.timeout(5):
        await live.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("stop", [_stop_by_cancelling_the_consumer, _stop_by_closing_the_stream,
                                  _stop_as_the_headless_service_does, _stop_as_the_runtime_does])
async def test_a_stopped_feed_closes_the_connection_with_going_away(
        stop: Callable[[BinanceFeed], Any]) -> None:
    """RFC 6455, 7.4.1: 1001 is an endpoint going away; 1011, which ``websockets`` sends when the
    connection is torn down by an exception (a cancellation is one), is an unexpected condition."""
    async with BinanceServer() as server:
        await stop(make_feed(server.url))
        await server.wait(lambda: len(server.close_codes) == 1)
    assert server.close_codes == [1001]


@pytest.mark.parametrize(("where", "reset", "reason", "said"), [
    ("frame", False, "closed mid-frame", "closed the connection in the middle of a frame"),
    ("frame", True, "closed mid-frame", "closed the connection in the middle of a frame"),
    ("message", False, "closed mid-message", "closed the connection in the middle of a fragmented message"),
])
async def test_a_connection_cut_short_is_counted_as_a_bad_message_with_its_reason(
        where: str, reset: bool, reason: str, said: str) -> None:
    async with BinanceServer() as server:
        feed = make_feed(server.url)
        async with running(feed) as run:
            await server.wait_subscribed("btcusdt@trade")
            before = await server.trade("BTCUSDT", "50", "1")
            await run.until(lambda: len(run.ticks()) == 1)
            await server.cut_short("BTCUSDT", where, reset)  # trade 2, never delivered
            await run.until(lambda: run.states.count("live") == 2)
            await server.wait_subscribed("btcusdt@trade")
            after = await server.trade("BTCUSDT", "51", "2")
            await run.until(lambda: len(run.ticks()) == 2)
    assert run.states == ["connecting", "live", "reconnecting", "connecting", "live"]
    assert run.statuses[2].reason == f"{host(server)} {said}"
    assert run.ticks() == [tick(0, before), tick(0, after)]
    counters(feed, messages=2, ticks=2, reconnects=1, gaps=1, bad={reason: 1})
    sample = feed.counters.samples[reason]  # where, and what websockets said of it
    expected = "stream ends after" if where == "frame" else "incomplete fragmented message"
    assert sample.startswith(f"{host(server)}: ") and expected in sample, sample
