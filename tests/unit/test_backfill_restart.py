"""A restart on Binance loads the bar store first and fetches only what it lacks, with the real store:
a first run takes 100 bars of history per symbol from the stand-in and stores every bar it closes; a
second run finds them on disk and asks Binance only for the bars after the last one stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.servers.history import Market
from engine.config import Config, load_config
from engine.runtime import Runtime
from engine.store import open_store

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MINUTE_MS = 60_000


async def _run(config: Config, until_bars: int) -> Runtime:
    runtime = Runtime(config)
    task = asyncio.create_task(runtime.run(lambda _: None, lambda _: None))
    async with asyncio.timeout(60):
        while (runtime.feed.counters.history_done < len(SYMBOLS)
               or runtime.engine.stats.history_bars < until_bars):
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return runtime


async def test_a_restart_fetches_only_the_bars_after_the_last_one_stored(tmp_path: Path) -> None:
    market = Market(SYMBOLS, bars=150, rate=5.0)
    await market.start()
    try:
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": market.ws_url,
            "feeds.binance.rest_url": market.rest.url, "feeds.binance.symbols": SYMBOLS,
            "engine.interval": "1m", "history.backfill": 100, "history.store": str(tmp_path / "store")},
            env={})
        await _run(config, until_bars=3 * 100)
        first = [q for p, q, _ in market.rest.requests if p == "/api/v3/klines"]
        assert len(first) == 3 and all(int(q["limit"]) == 1000 for q in first)
        store = open_store(config)
        assert store is not None
        try:
            stored = {s: int(store.load("binance", s, 60 * 10**9, 0)["t"][-1] // 10**6) for s in SYMBOLS}
        finally:
            store.close()
        market.rest.requests.clear()

        second = await _run(config, until_bars=3 * 99)
        asked = [(q["symbol"], int(q["startTime"])) for p, q, _ in market.rest.requests
                 if p == "/api/v3/klines"]
        # nothing, or (when a minute began between the runs) only the bars after the stored ones
        assert len(asked) <= 3 and all(start == stored[symbol] + MINUTE_MS for symbol, start in asked)
        assert market.rest.count("/api/v3/aggTrades") >= 3  # the forming bar's trades, for the seam
        assert second.feed.counters.history_failed == 0 and not second.feed.counters.rest_bad
    finally:
        await market.stop()
