"""History on Coinbase and Yahoo through the real runtime (``build_feed`` wires the loader in): every row
has RSI 14 and SMA 200 soon after the start, from history alone. A restart with the bar store asks each
service only for the bars after the last one stored (the requests are counted)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from engine.config import load_config
from engine.runtime import Runtime
from engine.ticks import make_bars
from tests.servers.coinbase_history import CoinbaseHistoryServer
from tests.servers.yahoo_chart import YahooHistoryServer
from tests.unit.coinbase_history_support import make_history
from tests.unit.coinbase_history_support import reference as coinbase_reference
from tests.unit.coinbase_history_support import running as coinbase_running
from tests.unit.yahoo_history_support import Now, make_engine, make_tape, tape_bars
from tests.unit.yahoo_history_support import running as yahoo_running

NS = 1_000_000_000
MINUTE = 60 * NS


async def _warm(config_overrides: dict[str, object], names: tuple[str, ...]) -> Runtime:
    """A runtime on the configured feed, until every row has RSI 14 and SMA 200 (bounded in time)."""
    config = load_config(overrides={"engine.interval": "1m", "history.store": "", **config_overrides}, env={})
    runtime = Runtime(config)
    task = asyncio.create_task(runtime.run(lambda _: None, lambda _: None))
    e = runtime.engine
    rows = [e.bank.row("rsi_14"), e.bank.row("sma_200")]

    def warm() -> bool:
        slots = [e.symbols.get(n) for n in names]
        return all(s is not None and np.isfinite(e.bank.committed[rows, s]).all() for s in slots)
    try:
        async with asyncio.timeout(60):
            while not warm():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
    except TimeoutError:
        c = runtime.feed.counters
        raise AssertionError(f"not warm: {c.as_dict()}, history {c.history_done}/{c.history_total}, "
                             f"rest {dict(c.rest_bad)}, bars {e.stats.history_bars}") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return runtime


async def test_yahoo_rows_have_rsi_and_sma_200_from_history_alone() -> None:
    names = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
    now = int(time.time())
    async with YahooHistoryServer() as server:
        for i, name in enumerate(names):
            make_tape(server, name, now - now % 60 - 260 * 60, now, seed=10 + i, every_s=20)
        runtime = await _warm({"feed.name": "yahoo", "feeds.yahoo.url": server.url,
                               "feeds.yahoo.cookie_url": server.cookie_url,
                               "feeds.yahoo.chart_url": server.url,
                               "feeds.yahoo.consent_url": "", "feeds.yahoo.stream_url": "",
                               "feeds.yahoo.symbols": names}, names)
        assert runtime.feed.counters.history_done == len(names) and not runtime.feed.counters.rest_bad
        assert len([q for q in server.charts if q["interval"] == "1m"]) == len(names)  # one request each


async def test_coinbase_rows_have_rsi_and_sma_200_from_history_alone() -> None:
    names = ("BTC-USD", "ETH-USD", "SOL-USD")
    now = time.time_ns()
    async with CoinbaseHistoryServer() as server:
        for i, name in enumerate(names):
            await make_history(server, name, now - now % MINUTE - 260 * MINUTE, 260, seed=20 + i, least=1)
        runtime = await _warm({"feed.name": "coinbase", "feeds.coinbase.url": server.url,
                               "feeds.coinbase.rest_url": server.rest_url, "feeds.coinbase.products": names},
                              names)
        c = runtime.feed.counters
        assert c.history_done == len(names) and not c.rest_bad and server.limited == 0
        assert server.count("candles") == len(names)


class FakeStore:
    """Bars kept by an earlier run (``BarStore.load``); records what was asked."""

    def __init__(self, bars: dict[str, np.ndarray]) -> None:
        self.bars = bars
        self.asked: list[tuple[str, str, int, int]] = []

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        self.asked.append((feed, symbol, interval_ns, since_ns))
        bars = self.bars[symbol]
        return bars[bars["t"] >= since_ns].copy()


def _stored(times: np.ndarray, ohlcv: np.ndarray, keep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    kept = keep(times)
    out = make_bars(int(kept.sum()))
    out["t"] = times[kept]
    for i, field in enumerate(("open", "high", "low", "close", "volume")):
        out[field] = ohlcv[kept, i]
    return out


async def test_a_coinbase_restart_asks_only_for_the_bars_after_the_last_one_stored() -> None:
    t0 = 1_699_999_980 * NS
    f = t0 + 250 * MINUTE
    async with CoinbaseHistoryServer() as server:
        await make_history(server, "BTC-USD", t0, 250, seed=31)
        await server.trade("BTC-USD", "150.00", "0.5", at_ns=f + 3 * NS)
        earlier = coinbase_reference(server, ("BTC-USD",), f)  # what a run that ended 20 minutes ago kept
        store = FakeStore({"BTC-USD": _stored(*earlier.history.tail(0), lambda t: t < f - 20 * MINUTE)})
        async with coinbase_running(server, ("BTC-USD",), store=store) as run:
            await run.applied(server, "BTC-USD")
            [candles] = [q for e, _, q, _ in server.requests if e == "candles"]
            last = int(store.bars["BTC-USD"]["t"][-1])
            assert int(candles["start"]) == last // NS + 60 and int(candles["end"]) == f // NS - 1
            assert store.asked == [("coinbase", "BTC-USD", MINUTE, f - 300 * MINUTE)]
            t, bars = run.engine.history.tail(0)
            want_t, want_bars = earlier.history.tail(0)
            assert np.array_equal(t, want_t) and np.array_equal(bars, want_bars)


async def test_a_yahoo_restart_asks_only_for_the_bars_after_the_last_one_stored() -> None:
    f = 1_700_000_040 + 400 * 60
    now = Now(f + 20)
    async with YahooHistoryServer(now_s=now) as server:
        make_tape(server, "AAPL", f - 400 * 60, f + 16, seed=32)
        earlier = tape_bars(server, make_engine(("AAPL",)), f)
        earlier.close_due(f * NS)
        store = FakeStore({"AAPL": _stored(*earlier.history.tail(0), lambda t: t < (f - 30 * 60) * NS)})
        async with yahoo_running(server, ("AAPL",), now, store=store, bars=300) as run:
            await run.until(lambda: len(run.engine.history.tail(0)[0]) == 300, "the history in the engine")
            [chart] = server.charts
            assert int(chart["period1"]) == int(store.bars["AAPL"]["t"][-1]) // NS + 60
            assert int(chart["period2"]) == f
            t, bars = run.engine.history.tail(0)
            want_t, want_bars = earlier.history.tail(0)
            assert np.array_equal(t, want_t[-300:]) and np.array_equal(bars, want_bars[-300:])
