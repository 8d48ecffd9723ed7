"""The runtime: one engine thread, frame-rate snapshots that are copies, and the sim that feeds it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from engine.config import load_config
from engine.engine_thread import EngineThread
from engine.feeds.sim import SimFeed, universe
from engine.runtime import Runtime
from engine.ticks import SymbolTable

SEC = 1_000_000_000
NOW = 1_800_000_000 * SEC


def runtime(**overrides: object) -> Runtime:
    config = load_config(overrides={"engine.interval": "1s", "feeds.sim.backfill": 0, **overrides},
                         env={})
    return Runtime(config)


def test_snapshots_come_at_most_once_per_frame_and_are_frozen_copies() -> None:
    rt = runtime(**{"ui.fps": 10})
    feed = rt.feed
    assert isinstance(feed, SimFeed)
    first = rt.process(feed.next_batch(500, NOW, 5.0), NOW)
    assert first.snapshot is not None
    again = rt.process(feed.next_batch(50, NOW + SEC // 20, 0.05), NOW + SEC // 20)
    assert again.snapshot is None  # 50 ms later: still inside the 100 ms frame
    later = rt.process(feed.next_batch(50, NOW + SEC // 5, 0.15), NOW + SEC // 5)
    assert later.snapshot is not None
    quote = later.snapshot.by_symbol()["AAPL"]
    assert not quote.closes.flags.writeable
    before = quote.closes.copy()
    rt.process(feed.next_batch(5000, NOW + 3 * SEC, 2.8), NOW + 3 * SEC)
    np.testing.assert_array_equal(quote.closes, before)  # the engine moved on; the snapshot did not


def test_quotes_follow_the_engine() -> None:
    rt = runtime()
    feed = rt.feed
    assert isinstance(feed, SimFeed)
    ticks = feed.next_batch(4000, NOW, 10.0)
    update = rt.process(ticks, NOW + SEC)
    assert update.snapshot is not None
    quotes = update.snapshot.by_symbol()
    slot = rt.engine.symbols.get("MSFT")
    assert slot is not None
    last = ticks["price"][ticks["sym"] == slot][-1]
    assert quotes["MSFT"].last == last
    assert set(quotes["MSFT"].values) == {"rsi_14", "macd_hist_12_26_9"}


def test_sim_is_deterministic_and_backfill_spans_the_window() -> None:
    a = SimFeed(SymbolTable(100), n_symbols=30, seed=3, backfill=10)
    b = SimFeed(SymbolTable(100), n_symbols=30, seed=3, backfill=10)
    np.testing.assert_array_equal(a.backfill(NOW), b.backfill(NOW))
    np.testing.assert_array_equal(a.next_batch(100, NOW + SEC, 1.0), b.next_batch(100, NOW + SEC, 1.0))
    hist = SimFeed(SymbolTable(100), n_symbols=30, seed=3, backfill=10, bar_ns=60 * SEC).backfill(NOW)
    assert hist["t"].min() == NOW - 600 * SEC and hist["t"].max() < NOW  # NOW is on a bar boundary
    assert np.all(np.diff(hist["t"]) >= 0) and np.all(hist["close"] > 0)
    assert len(set(universe(500, 1))) == 500


def test_engine_thread_runs_calls_in_order_on_one_thread_and_passes_errors() -> None:
    async def main() -> None:
        worker = EngineThread()
        seen: list[tuple[int, str]] = []

        def record(i: int) -> int:
            seen.append((i, threading.current_thread().name))
            return i * i

        results = await asyncio.gather(*(worker.call(record, i) for i in range(20)))
        assert results == [i * i for i in range(20)]
        assert [i for i, _ in seen] == list(range(20))
        assert {name for _, name in seen} == {"tickdeck-engine"}

        def boom() -> None:
            raise ValueError("bad batch")

        with pytest.raises(ValueError, match="bad batch"):
            await worker.call(boom)
        assert await worker.call(record, 3) == 9  # still serving after an error
        worker.stop()

    asyncio.run(main())
