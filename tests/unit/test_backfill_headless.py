"""The headless service on Binance with history: its status lines say ``history n/m`` while history loads,
its summary counts the history bars, the histories given up on, the REST answers skipped and the refills."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bench.servers.history import Market
from engine.config import load_config
from engine.headless import Headless, prepare
from engine.sinks.base import SinkGroup

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


async def test_status_lines_show_history_loading_and_the_summary_counts_it(
        caplog: pytest.LogCaptureFixture) -> None:
    market = Market(SYMBOLS, bars=120, rate=20.0)
    await market.start()
    try:
        market.rest.gate = asyncio.Event()
        market.rest.fail("html", "/api/v3/klines", symbol="ETHUSDT")  # asked again, counted
        config = load_config(overrides={
            "feed.name": "binance", "feeds.binance.url": market.ws_url,
            "feeds.binance.rest_url": market.rest.url, "feeds.binance.symbols": (*SYMBOLS, "NOPEUSDT"),
            "engine.interval": "1m", "history.backfill": 100,
        }, env={})
        runtime, feed, _ = prepare(config, stdout_fd=None)
        service = Headless(runtime, feed, SinkGroup([]), status_every=0.05)
        caplog.set_level(logging.INFO, logger="tickdeck.headless")
        run = asyncio.create_task(service.run())
        async with asyncio.timeout(60):
            while not any("status: history 0/4, " in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.02)
            market.rest.gate.set()
            while runtime.feed.counters.history_done < 4:
                await asyncio.sleep(0.02)
            # the feed counts a history done when it hands the bars over; the engine thread counts them
            # when it has taken them in, a moment later on a busy machine
            while runtime.engine.stats.history_bars < 3 * 100:
                await asyncio.sleep(0.02)
        status = next(r for r in caplog.records if r.getMessage().startswith("status: history 0/4"))
        fields = status.fields  # type: ignore[attr-defined]
        assert (fields["history_done"], fields["history_total"], fields["refills"]) == (0, 4, 0)
        service.request_stop("SIGTERM")
        assert await run == 0
        summary = service.summary()
        assert summary["history_bars"] == 3 * 100  # 100 closed bars for each symbol Binance knows
        assert summary["history_failed"] == 1  # NOPEUSDT: Binance has never heard of it
        assert summary["rest_errors"] == 2  # the HTML answer, NOPEUSDT's 400
        assert summary["refills"] == 0 and summary["gaps"] == 0
    finally:
        await market.stop()
