"""``tickdeck attach``'s client (engine/remote.py) against a minimal publisher on 127.0.0.1 that says hello
and records how each connection ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

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
