"""Fuzzing the ccxt feed's message handling: whatever an exchange sends, the feed counts it or uses it.

Each example is a short run of frames handed to a real ccxt.pro client of Kraken and of OKX (markets
loaded from the loopback stand-ins) through the feed's frame guard, as the receive loop hands them; the
trades ccxt made of them then go through the feed's checks (``TradeTape``) and the batcher is flushed,
as the stream does. Nothing may raise out of the guard (an exception there stops ccxt's receive loop),
and every tick that comes out is usable: a positive finite price, a finite size, a time that fits, and
no trade id twice. The frames are those of ``test_fuzz_feeds`` (random bytes and text, random and deeply
nested JSON, valid frames of each protocol with one field replaced, removed or added).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.feeds.ccxt_feed import CcxtFeed, make_exchange
from engine.ticks import SymbolTable
from tests.fuzz_settings import fuzz, tried
from tests.servers.kraken import KrakenServer
from tests.servers.okx import OkxServer
from tests.unit.test_fuzz_feeds import frames

KRAKEN = [{"channel": "trade", "type": "update", "data": [
    {"symbol": "BTC/USD", "side": "buy", "price": 37000.5, "qty": 0.25, "ord_type": "market", "trade_id": 7,
     "timestamp": "2023-11-14T22:13:20.123456Z"}]},
    {"channel": "heartbeat"}, {"method": "pong", "req_id": 1}]
OKX = [{"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [
    {"instId": "BTC-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "0.12060306", "side": "buy",
     "ts": "1630048897897", "count": "1"}]},
    {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}, "connId": "c1"}]


class Harness:
    """A feed on a ccxt exchange whose markets came from a stand-in, and the client frames go to."""

    def __init__(self, loop: asyncio.AbstractEventLoop, exchange: Any, url: str, symbol: str) -> None:
        self.loop = loop
        self.exchange = exchange
        self.symbol = symbol
        self.feed = CcxtFeed(SymbolTable(8), exchange, [symbol])
        self.client = exchange.client(url)  # (the feed's guard wraps every client it makes)
        self.slot = self.feed.symbols.slot(symbol)
        self.ids: set[int] = set()  # trade ids let through since the sequence last started
        self.renumberings = 0

    async def _take(self, batch: list[str | bytes]) -> None:
        for frame in batch:
            self.client.handle_text_or_binary_message(frame)  # never raises: counted instead
        cache = (self.exchange.trades or {}).get(self.symbol)
        got = list(cache or [])
        self.exchange.trades = {}
        for tick, missing in self.feed.tape.trades(self.slot, self.symbol, got, 0):
            self.feed._add(self.symbol, self.slot, tick, missing)
        ticks = self.feed.batcher.flush()  # raises if a field does not fit TICK_DTYPE
        if self.feed.tape.renumberings != self.renumberings:
            # ids at or below the last with later times: the exchange numbered its trades afresh, so ids
            # seen before are new trades now (ccxt_trades.py); the check starts again after this batch
            self.renumberings = self.feed.tape.renumberings
            self.ids = set()
            restarted = True
        else:
            restarted = False
        for t in ticks if ticks is not None else ():
            assert float(t["price"]) > 0 and math.isfinite(float(t["price"]))
            assert float(t["size"]) >= 0 and math.isfinite(float(t["size"]))
            assert int(t["ts"]) >= 0
            if int(t["trade_id"]) >= 0:
                assert restarted or int(t["trade_id"]) not in self.ids  # a repeated trade is dropped
                self.ids.add(int(t["trade_id"]))

    def take(self, batch: list[str | bytes]) -> None:
        self.loop.run_until_complete(self._take(batch))


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[str, Harness]]:
    loop = asyncio.new_event_loop()
    servers = [KrakenServer(heartbeat_s=None), OkxServer()]
    out: dict[str, Harness] = {}

    async def start() -> None:
        for server, name, symbol in zip(servers, ("kraken", "okx"), ("BTC/USD", "BTC/USDT"), strict=True):
            await server.__aenter__()
            exchange = make_exchange(name, {**server.options(), "rateLimit": 10})  # type: ignore[attr-defined]
            await exchange.load_markets()
            url = server.ws_url
            out[name] = Harness(loop, exchange, url, symbol)

    async def stop() -> None:
        for h in out.values():
            await h.exchange.close()
        for server in servers:
            await server.__aexit__(None, None, None)

    loop.run_until_complete(start())
    yield out
    loop.run_until_complete(stop())
    loop.close()


@fuzz(300)
@given(batch=st.lists(frames(KRAKEN), min_size=1, max_size=4))
def test_fuzz_ccxt_kraken_frames(harnesses: dict[str, Harness], batch: list[str | bytes]) -> None:
    harnesses["kraken"].take(batch)
    tried("test_fuzz_ccxt_kraken_frames")


@fuzz(300)
@given(batch=st.lists(frames(OKX), min_size=1, max_size=4))
def test_fuzz_ccxt_okx_frames(harnesses: dict[str, Harness], batch: list[str | bytes]) -> None:
    harnesses["okx"].take(batch)
    tried("test_fuzz_ccxt_okx_frames")


def test_a_frame_ccxt_cannot_parse_is_counted_not_raised(harnesses: dict[str, Harness]) -> None:
    h = harnesses["kraken"]
    before = h.feed.counters.bad["malformed frame"]
    h.take(["{garbage", b"\xff\xfe", json.dumps({"channel": "trade", "data": [{"symbol": "XYZ/ABC"}]})])
    assert h.feed.counters.bad["malformed frame"] - before == 3
