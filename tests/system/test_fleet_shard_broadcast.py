"""The ``websocket`` broadcast of engines sharded with ``--shard auto`` (a real ``nats-server -js`` on
127.0.0.1, the Binance stand-in of ``test_fleet_shard``): its ``hello`` lists the symbols the engine
carries now, not those it started with, and a client connected while the share changes is sent a
``symbols`` frame. Every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from engine.bus.shard_keeper import ShardTiming
from tests.servers.nats import NatsServer
from tests.system.test_fleet_shard import (
    CHECK,
    RENEW,
    SLACK_S,
    SYMBOLS,
    TTL,
    Bus,
    EarlyTradeMarket,
    Engine,
    _holds,
    until,
    until_async,
    write_config,
)

pytestmark = pytest.mark.usefixtures("clean_env")

KEPT = ["ETHUSDT", "SOLUSDT", "XRPUSDT"]  # what rendezvous leaves "a" of the six when "b" joins
GIVEN = ["ADAUSDT", "BNBUSDT", "BTCUSDT"]  # and gives "b" (test_fleet_shard asserts the same split)
SINK = """
[[sinks]]
type = "websocket"
host = "127.0.0.1"
port = 0
"""


def broadcast_url(engine: Engine) -> str:
    """The URL its websocket sink logged when it started listening ('' before)."""
    for line in engine.err.read_text().splitlines() if engine.err.exists() else ():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            found = re.search(r"serving signals on (ws://\S+)", str(record.get("message", "")))
            if found:
                return found.group(1)
    return ""


async def hello_of(url: str) -> list[str]:
    """The symbols of the hello a client connecting now reads, sorted."""
    async with asyncio.timeout(10), connect(url, open_timeout=5) as ws:
        hello = json.loads(await ws.recv())
    assert hello["type"] == "hello"
    return sorted(hello["symbols"])


async def test_after_a_takeover_the_broadcast_says_the_symbols_the_survivor_carries(
        nats_server: NatsServer, tmp_path: Path) -> None:
    market = EarlyTradeMarket(SYMBOLS, bars=240, interval="1s", per_bar=3, rate=20.0)
    await market.start()
    config = write_config(tmp_path / "fleet.toml", market)
    config.write_text(config.read_text(encoding="utf-8") + SINK, encoding="utf-8")
    shard = ("--publish", nats_server.url, "--shard", "auto")
    a = await Engine("a", tmp_path, config, *shard).start()
    b = Engine("b", tmp_path, config, *shard)
    frames: list[dict[str, Any]] = []
    reader: asyncio.Task[None] | None = None
    try:
        async with Bus(nats_server.url) as bus:
            await until_async(lambda: _holds(bus, "a", len(SYMBOLS)), "engine a to hold every symbol")
            await until(lambda: broadcast_url(a), "a's broadcast")
            await until_async(lambda: _hello_is(a, SYMBOLS), "a's hello to list every symbol")
            await b.start()
            await until_async(lambda: _holds(bus, "b", 3, engines=["a", "b"]), "b to take its share")
            await until(lambda: broadcast_url(b), "b's broadcast")
            await until_async(lambda: _hello_is(a, KEPT), "a's hello to list only what it kept")
            await until_async(lambda: _hello_is(b, GIVEN), "b's hello to list its share")

            async with connect(broadcast_url(b), open_timeout=5) as ws:  # connected before the kill
                first = json.loads(await ws.recv())
                assert first["type"] == "hello" and sorted(first["symbols"]) == GIVEN

                async def read() -> None:
                    async for raw in ws:
                        frames.append(json.loads(raw))

                reader = asyncio.create_task(read())
                a_proc = a.proc
                assert a_proc is not None
                a_proc.kill()  # its presence is left to expire: b takes its symbols over
                await a_proc.wait()
                bound = ShardTiming(TTL, RENEW, CHECK).takeover_s
                await until_async(lambda: _holds(bus, "b", len(SYMBOLS), engines=["b"]),
                                  "b to take a's symbols over", timeout=bound + SLACK_S)
                await until(lambda: any(f["type"] == "symbols" for f in frames), "the symbols frame")
                (change,) = [f for f in frames if f["type"] == "symbols"]
                assert sorted(change["symbols"]) == sorted(SYMBOLS)
                assert sorted(change["added"]) == KEPT and change["removed"] == []
            assert await hello_of(broadcast_url(b)) == sorted(SYMBOLS)  # a client connecting now
        assert await b.stop() == 0
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for engine in (a, b):
            if engine.proc is not None and engine.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    engine.proc.kill()
                await engine.proc.wait()
        await market.stop()


async def _hello_is(engine: Engine, symbols: list[str]) -> bool:
    try:
        return await hello_of(broadcast_url(engine)) == sorted(symbols)
    except (OSError, TimeoutError, WebSocketException):  # not listening yet
        return False
