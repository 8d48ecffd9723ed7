"""The ccxt feed against loopback stand-ins of two exchanges whose protocols differ (Kraken's WebSocket v2
and REST, OKX's v5): live rows and history, built by the registry from the config as a user's run is,
and the faults the built-in feeds survive (a disconnect and its gap refilled, garbage, HTTP 429, a stall,
duplicates, a symbol the exchange does not list)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine.config import load_config
from engine.feeds.base import FeedItem, FeedStatus, HistoryBars, Refill
from engine.feeds.ccxt_feed import CcxtFeed
from engine.feeds.registry import build_feed
from engine.runtime import Runtime, build_engine
from tests.servers.exchange import StandIn
from tests.servers.kraken import KrakenServer
from tests.servers.okx import OkxServer

ROOT = Path(__file__).resolve().parents[2]
MIN = 60_000_000_000
FAST = {"rateLimit": 50}  # ccxt's limiter stays on (enableRateLimit), at a loopback's pace


class Run:
    """A feed's stream consumed in a task, every item kept, for tests to wait on."""

    def __init__(self, feed: CcxtFeed) -> None:
        self.feed = feed
        self.items: list[FeedItem] = []
        self._task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for item in self.feed.stream():
            self.items.append(item)

    def statuses(self, state: str | None = None) -> list[FeedStatus]:
        return [i for i in self.items if isinstance(i, FeedStatus) and (state is None or i.state == state)]

    def ticks(self) -> np.ndarray:
        arrays = [i for i in self.items if isinstance(i, np.ndarray)]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    def prices(self) -> list[float]:
        ticks = self.ticks()
        return [float(p) for p in ticks["price"]] if len(ticks) else []

    def of(self, kind: type) -> list[Any]:
        return [i for i in self.items if isinstance(i, kind)]

    async def until(self, condition: Callable[[], Any], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(server: StandIn, exchange: str, symbols: tuple[str, ...], tmp_path: Path,
                  **config: Any) -> AsyncIterator[Run]:
    overrides = {"feed.name": "ccxt", "feeds.ccxt.exchange": exchange, "feeds.ccxt.symbols": symbols,
                 "feeds.ccxt.options": {**server.options(), **FAST},  # type: ignore[attr-defined]
                 "history.store": "", "history.backfill": 30, "engine.interval": "1m", **config}
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "no-config"), "TICKDECK_DATA_DIR": str(tmp_path / "data")}
    cfg = load_config(overrides=overrides, env=env)
    feed = build_feed(cfg, build_engine(cfg))
    assert isinstance(feed, CcxtFeed)
    run = Run(feed)
    task = asyncio.get_running_loop().create_task(run._consume())
    try:
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _closes(bars: np.ndarray) -> dict[int, float]:
    return {int(t): float(c) for t, c in zip(bars["t"], bars["close"], strict=True)}


@pytest.mark.parametrize(("server_cls", "exchange", "symbol"),
                         [(KrakenServer, "kraken", "BTC/USD"), (OkxServer, "okx", "BTC/USDT")])
async def test_live_rows_with_history_filled_from_each_exchange(tmp_path: Path, server_cls: type,
                                                                exchange: str, symbol: str) -> None:
    async with server_cls() as server:
        server.seed(symbol, minutes=60)
        async with running(server, exchange, (symbol,), tmp_path) as run:
            await run.until(lambda: run.of(HistoryBars) and server.subscribed(symbol))
            history = run.of(HistoryBars)[0].bars
            assert len(history) == 30  # the newest 30 closed bars, as history.backfill asked
            now = time.time_ns()
            expected = {t * 1_000_000_000: c for t, _, _, _, c, _, _ in server.bars(symbol, 60)
                        if t * 1_000_000_000 < now - now % MIN}
            assert all(expected[t] == c for t, c in _closes(history).items())  # the exchange's bars
            await server.trade(symbol, 37123.5, 0.25)
            await run.until(lambda: 37123.5 in run.prices())
            assert [s.state for s in run.statuses()][:2] == ["connecting", "live"]
            assert run.feed.counters.bad_total == 0 and run.feed.counters.history_failed == 0


async def test_a_disconnect_mid_stream_reconnects_and_refills_the_gap(tmp_path: Path) -> None:
    # 2 s bars from OKX's 1 s candles, so bars close within the test: a gap is refilled from the bar of
    # the last trade received up to the forming one, which must have closed after the history loaded
    async with OkxServer() as server:
        symbol, step = "BTC/USDT", 2_000_000_000
        server.seed(symbol, minutes=5, every_s=1)
        server.options = lambda base=server.options: {**base(), "timeframes": {"1s": "1s"}}  # type: ignore[method-assign]
        async with running(server, "okx", (symbol,), tmp_path, **{"engine.interval": "2s"}) as run:
            await run.until(lambda: run.of(HistoryBars) and server.subscribed(symbol))
            first = await server.trade(symbol, 37100.0)
            await run.until(lambda: 37100.0 in run.prices())
            await server.disconnect()
            await run.until(lambda: time.time_ns() >= first.ts_ns + 2 * step)
            server.record(symbol, 39999.0, 1.5, ts_ns=first.ts_ns + step)  # missed while away
            await run.until(lambda: len(run.statuses("live")) >= 2 and server.subscribed(symbol))
            await server.trade(symbol, 37200.0)
            await run.until(lambda: run.of(Refill) and 37200.0 in run.prices())
        refill = run.of(Refill)[0]
        assert 39999.0 in refill.ticks["price"]  # the missed bar, from the exchange's candles
        assert refill.since_ns == first.ts_ns - first.ts_ns % step  # from the bar of the last trade received
        assert run.statuses("reconnecting")[0].reason.startswith("NetworkError")
        assert run.feed.counters.reconnects == 1 and run.feed.counters.refills == 1
        # the held trade comes after the refill, never before it
        order = [type(i).__name__ for i in run.items if isinstance(i, Refill | np.ndarray)]
        assert order.index("Refill") < len(order) - 1


async def test_garbage_is_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    async with KrakenServer() as server:
        async with running(server, "kraken", ("BTC/USD",), tmp_path, **{"history.fetch": False}) as run:
            await run.until(lambda: server.subscribed("BTC/USD") and run.statuses("live"))
            await server.raw("{garbage")
            await server.raw('{"channel": "trade", "type": "update", "data": [{"symbol": "BTC/USD"}]}')
            await server.trade("BTC/USD", 37001.0)
            # ccxt's receive loop did not stop at the bad frames: the next trade came without a reconnect
            await run.until(lambda: 37001.0 in run.prices(), timeout=5.0)
        counters = run.feed.counters
        assert counters.bad["malformed frame"] >= 1
        assert counters.reconnects == 0


async def test_bad_prices_and_duplicates_are_counted_and_dropped(tmp_path: Path) -> None:
    async with KrakenServer() as server:
        async with running(server, "kraken", ("BTC/USD",), tmp_path, **{"history.fetch": False}) as run:
            await run.until(lambda: server.subscribed("BTC/USD") and run.statuses("live"))
            first = await server.trade("BTC/USD", 37001.0)
            await server.trade("BTC/USD", 0.0)
            await server.trade("BTC/USD", -5.0)
            await server.resend(first)
            await server.trade("BTC/USD", 37002.0)
            await run.until(lambda: 37002.0 in run.prices())
        counters = run.feed.counters
        assert run.prices() == [37001.0, 37002.0]
        assert counters.bad["bad price"] == 2 and counters.duplicates == 1
        assert counters.gaps == 0  # a bad trade still used its id


async def test_kraken_trade_ids_that_jump_are_counted_as_gaps(tmp_path: Path) -> None:
    async with KrakenServer() as server:
        async with running(server, "kraken", ("BTC/USD",), tmp_path, **{"history.fetch": False}) as run:
            await run.until(lambda: server.subscribed("BTC/USD") and run.statuses("live"))
            await server.trade("BTC/USD", 37001.0)
            server.record("BTC/USD", 37001.5)
            server.record("BTC/USD", 37001.7)
            await server.trade("BTC/USD", 37002.0)
            await run.until(lambda: 37002.0 in run.prices())
        assert run.feed.counters.gaps == 2


async def test_http_429_answers_are_waited_out(tmp_path: Path) -> None:
    async with OkxServer() as server:
        server.seed("BTC/USDT", minutes=60)
        server.refuse_ws(429, times=2)  # "Connection limit: 3 requests per second"
        server.refuse_rest(times=1)  # the instruments, then history goes through
        async with running(server, "okx", ("BTC/USDT",), tmp_path) as run:
            await run.until(lambda: run.of(HistoryBars) and run.statuses("live"), timeout=30)
        reasons = [s.reason for s in run.statuses("reconnecting")]
        assert any("RateLimitExceeded" in r for r in reasons), reasons
        assert any("429" in r for r in reasons), reasons
        assert run.feed.counters.history_failed == 0


async def test_a_stall_is_reported_stale_then_reconnected(tmp_path: Path) -> None:
    async with KrakenServer(heartbeat_s=0.2) as server:
        async with running(server, "kraken", ("BTC/USD",), tmp_path,
                           **{"history.fetch": False, "feeds.ccxt.stale_after": 1.0}) as run:
            await run.until(lambda: server.subscribed("BTC/USD") and run.statuses("live"))
            server.stall()
            await run.until(lambda: run.statuses("reconnecting"))
            await run.until(lambda: len(run.statuses("live")) >= 2)
        states = [s.state for s in run.statuses()]
        assert states.index("stale") < states.index("reconnecting")
        assert run.statuses("reconnecting")[0].reason == "no data from kraken for 2 s"


async def test_a_symbol_the_exchange_does_not_list_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with KrakenServer() as server:
        async with running(server, "kraken", ("BTC/USD",), tmp_path, **{"history.fetch": False}) as run:
            await run.until(lambda: run.statuses("live"))
            runtime = SimpleNamespace(feed=run.feed)  # what the console's `a` asks
            assert Runtime.check_symbol(runtime, "DOGE/USD") == "DOGE/USD is not listed on kraken"  # type: ignore[arg-type]
            assert Runtime.check_symbol(runtime, "sol/usd") == (  # type: ignore[arg-type]
                "sol/usd is not listed on kraken (did you mean SOL/USD?)")
            assert Runtime.check_symbol(runtime, "SOL/USD") is None  # type: ignore[arg-type]
            assert "SOL/USD" in run.feed.universe()  # `a` completes from the exchange's markets
            # added all the same (before the markets were known): not streamed, and the reason said
            await run.feed.subscribe(["DOGE/USD"])
            await run.until(lambda: any("DOGE/USD" in s.symbols for s in run.statuses()))
        note = next(s for s in run.statuses() if "DOGE/USD" in s.symbols)
        assert note.reason.startswith("DOGE/USD: not streamed (BadSymbol")
        assert run.feed.counters.reconnects == 0


def test_help_and_the_other_feeds_do_not_import_ccxt(tmp_path: Path) -> None:
    code = ("import sys, contextlib\n"
            "from console.cli import main\n"
            "with contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "from engine.config import load_config\n"
            "from engine.feeds.registry import build_feed\n"
            "from engine.runtime import build_engine\n"
            "for name in ('sim', 'binance'):\n"
            "    cfg = load_config(overrides={'feed.name': name, 'history.store': '',\n"
            "                                 'feeds.binance.rest_url': 'http://127.0.0.1:9'}, env={})\n"
            "    build_feed(cfg, build_engine(cfg))\n"
            "print('CCXT', sorted(m for m in sys.modules if m.split('.')[0] == 'ccxt'))\n")
    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "c"), "TICKDECK_DATA_DIR": str(tmp_path / "d"),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.strip().splitlines()[-1] == "CCXT []", out.stdout[-500:]


class TickerOnly:
    """An exchange ccxt knows without a trade stream (``has['watchTrades']`` false): tickers only, each
    one handed to the feed's frame guard as ccxt's client would."""

    id = "tickeronly"
    has = {"watchTrades": False, "watchTicker": True}

    def __init__(self, tickers: list[dict[str, Any]]) -> None:
        self.tickers = list(tickers)
        self.markets: dict[str, Any] = {}
        self.made = SimpleNamespace(handle_text_or_binary_message=lambda data: None)

    def client(self, url: str) -> Any:
        return self.made

    async def load_markets(self, reload: bool = False) -> dict[str, Any]:
        self.markets = {"BTC/USD": {}}
        return self.markets

    async def watch_ticker(self, symbol: str) -> dict[str, Any]:
        while not self.tickers:
            await asyncio.sleep(0.01)
        self.client("ws").handle_text_or_binary_message("{}")  # a frame arrived
        return self.tickers.pop(0)

    async def close_ws_clients(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_an_exchange_without_a_trade_stream_falls_back_to_its_ticker() -> None:
    from engine.ticks import SymbolTable

    t0 = 1_700_000_000_000
    exchange = TickerOnly([{"symbol": "BTC/USD", "last": 100.0, "timestamp": t0},
                           {"symbol": "BTC/USD", "last": 100.0, "timestamp": t0},  # unchanged: no tick
                           {"symbol": "BTC/USD", "last": 0.0, "timestamp": t0 + 1},  # bad: counted
                           {"symbol": "BTC/USD", "last": 101.5, "timestamp": t0 + 2}])
    feed = CcxtFeed(SymbolTable(4), exchange, ["BTC/USD"])
    run = Run(feed)
    task = asyncio.get_running_loop().create_task(run._consume())
    try:
        await run.until(lambda: 101.5 in run.prices(), timeout=5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ticks = run.ticks()
    assert run.prices() == [100.0, 101.5] and list(ticks["size"]) == [0.0, 0.0]  # a ticker is no trade
    assert list(ticks["ts"]) == [t0 * 1_000_000, (t0 + 2) * 1_000_000]
    assert feed.counters.bad["bad ticker price"] == 1
    assert [s.state for s in run.statuses()][:2] == ["connecting", "live"]


def test_an_exchange_ccxt_does_not_know_is_refused_when_the_feed_is_built(tmp_path: Path) -> None:
    from engine.config import ConfigError
    from engine.feeds.registry import FeedUnavailable

    env = {"TICKDECK_CONFIG_DIR": str(tmp_path / "c"), "TICKDECK_DATA_DIR": str(tmp_path / "d")}
    cfg = load_config(overrides={"feed.name": "ccxt", "feeds.ccxt.exchange": "krakenn", "history.store": ""},
                      env=env)
    with pytest.raises(FeedUnavailable, match=r"ccxt has no WebSocket exchange 'krakenn' "
                                              r"\(feeds\.ccxt\.exchange\); some: .* in all\)"):
        build_feed(cfg, build_engine(cfg))
    with pytest.raises(ConfigError, match=r"feeds\.ccxt\.exchange .*must be a ccxt exchange id"):
        load_config(overrides={"feeds.ccxt.exchange": "kra ken"}, env=env)
    with pytest.raises(ConfigError, match=r"\(feeds\.ccxt\.options\) must be a table, got .\[1, 2\]."):
        load_config(overrides={}, env={**env, "TICKDECK_FEEDS_CCXT_OPTIONS": "[1, 2]"})
    options = load_config(overrides={}, env={**env, "TICKDECK_FEEDS_CCXT_OPTIONS": "{timeout = 20000}"})
    assert options.feeds.ccxt.options == {"timeout": 20000}
