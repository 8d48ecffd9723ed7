"""``tickdeck attach``'s client (engine/remote.py) against minimal publishers on 127.0.0.1 that say hello
and then end the connection, or record how the client ended it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.remote import RemoteRuntime

HELLO = {"type": "hello", "protocol": 1, "feed": "sim", "symbols": ["AAA"], "outputs": [], "interval": "1m"}


class Publisher:
    def __init__(self) -> None:
        self.close_codes: list[int | None] = []  # what each connection's client closed it with
        self.ended = asyncio.Event()

    async def handle(self, ws: ServerConnection) -> None:
        try:
            await ws.send(json.dumps(HELLO))
            async for _ in ws:  # the subscription; then the publisher has nothing more to say
                pass
        except ConnectionClosed:
            pass
        finally:
            received = ws.protocol.close_rcvd
            self.close_codes.append(None if received is None else received.code)
            self.ended.set()


@contextlib.asynccontextmanager
async def publishing() -> AsyncIterator[tuple[Publisher, str]]:
    publisher = Publisher()
    async with serve(publisher.handle, "127.0.0.1", 0) as server:
        yield publisher, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_console_that_goes_away_closes_with_going_away() -> None:
    """RFC 6455, 7.4.1: 1001, an endpoint going away (``websockets`` sent 1011, an unexpected
    condition, when the task holding the connection was cancelled as the console exits)."""
    async with publishing() as (publisher, url):
        live = asyncio.Event()

        def on_status(status: FeedStatus) -> None:
            if status.state == "live":
                live.set()

        remote = RemoteRuntime(url)
        run = asyncio.create_task(remote.run(lambda update: None, on_status))
        async with asyncio.timeout(5):
            await live.wait()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        async with asyncio.timeout(5):
            await publisher.ended.wait()
    assert publisher.close_codes == [1001]


async def test_a_frame_cut_short_is_counted_as_a_bad_message_and_attach_reconnects() -> None:
    statuses: list[FeedStatus] = []
    first_live = asyncio.Event()

    def on_status(status: FeedStatus) -> None:
        statuses.append(status)
        if status.state == "live":
            first_live.set()

    async def handle(ws: ServerConnection) -> None:
        await ws.send(json.dumps(HELLO))
        if not first_live.is_set():  # the first connection, once live, ends in the middle of a frame
            await first_live.wait()
            frame = Frame(Opcode.TEXT, json.dumps({"type": "status", "feed": "sim", "state": "live"})
                          .encode()).serialize(mask=False)
            ws.transport.write(frame[: len(frame) // 2])
            ws.transport.close()
        with contextlib.suppress(ConnectionClosed):
            await ws.wait_closed()

    async with serve(handle, "127.0.0.1", 0) as server:
        where = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        remote = RemoteRuntime(f"ws://{where}", backoff=Backoff(0.01, 0.02))
        run = asyncio.create_task(remote.run(lambda update: None, on_status))
        try:
            async with asyncio.timeout(5):
                while [s.state for s in statuses].count("live") < 2:
                    await asyncio.sleep(0.005)
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
    assert [s.state for s in statuses] == ["connecting", "live", "reconnecting", "connecting", "live"]
    assert statuses[2].reason == f"{where} closed the connection in the middle of a frame"
    counters = remote.feed.counters
    assert (dict(counters.bad), counters.messages, counters.reconnects) == ({"closed mid-frame": 1}, 2, 1)
    assert counters.samples["closed mid-frame"].startswith(f"{where}: stream ends after ")
