"""Persisting closed bars: from a running runtime on a scripted live feed to the store, and back after a
restart; the writer's bounds and failures; feeds that keep nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from engine.config import Config, load_config
from engine.feeds.base import Feed, FeedItem, FeedStatus, HistoryBars
from engine.runtime import Runtime
from engine.store import FILENAME, BarStore, StoreError, open_store
from engine.store_writer import QUEUE_BATCHES, BarCollector, StoreWriter
from engine.tick_engine import Engine
from engine.ticks import SymbolTable, make_bars, make_ticks
from tests.data import random_walk

SEC = 1_000_000_000
MIN = 60 * SEC
T0 = 1_700_000_000 * SEC - (1_700_000_000 * SEC) % (86_400 * SEC)


class ScriptedLive(Feed):
    """A live feed (by name) that yields what it is given, then waits for ``release`` and ends as a
    stopped live feed does (its forming bars are not closed)."""

    def __init__(self, symbols: SymbolTable, items: list[FeedItem], clock: int, name: str = "binance",
                 release: asyncio.Event | None = None) -> None:
        self.name = name
        super().__init__(symbols)
        self.items, self.clock, self.release = items, clock, release
        self.stopped = True

    async def stream(self) -> AsyncIterator[FeedItem]:
        yield FeedStatus(self.name, "live")
        for item in self.items:
            yield item
        if self.release is not None:
            await self.release.wait()

    def now_ns(self) -> int:
        return self.clock


def walk_bars(n: int, slot: int, start: int, seed: int = 1) -> np.ndarray:
    w = random_walk(n, seed=seed)
    bars = make_bars(n)
    bars["sym"], bars["t"] = slot, start + np.arange(n, dtype=np.int64) * MIN
    for name, values in (("open", w.o), ("high", w.h), ("low", w.l), ("close", w.c), ("volume", w.v)):
        bars[name] = values
    return bars


def live_ticks(slot: int, first_bar: int, bars: int, price: float, seed: int) -> list[np.ndarray]:
    """Three trades in each of ``bars`` one-minute bars from ``first_bar``, one batch per trade."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(bars):
        for s in (7, 29, 51):
            t = make_ticks(1)
            price *= 1 + rng.normal(0, 0.002)
            t["sym"], t["ts"], t["price"], t["size"] = slot, first_bar + k * MIN + s * SEC, price, 2.0
            out.append(t)
    return out


def config(tmp_path: Path, store: str | None = None) -> Config:
    where = str(tmp_path / "bars") if store is None else store
    return load_config(overrides={"engine.interval": "1m", "history.retention": "3650d",
                                  "history.store": where}, env={})


def engine() -> Engine:
    e = Engine(["sma_3", "ema_5"], MIN, capacity=4, depth=500)
    e.add_symbol("AAA")
    e.add_symbol("BBB")
    return e


def stored(cfg: Config, symbol: str) -> np.ndarray:
    store = open_store(cfg)
    assert store is not None
    with store:
        return store.load("binance", symbol, MIN, 0)


def closed(e: Engine, symbol: str) -> tuple[np.ndarray, np.ndarray]:
    got = e.closed_bars(symbol)
    assert got is not None
    return got


def assert_equal(bars: np.ndarray, times: np.ndarray, ohlcv: np.ndarray) -> None:
    assert np.array_equal(bars["t"], times)
    for j, name in enumerate(("open", "high", "low", "close", "volume")):
        assert np.array_equal(bars[name], ohlcv[:, j]), name


def run(runtime: Runtime) -> None:
    asyncio.run(runtime.run(lambda update: None, lambda status: None))


def first_run(tmp_path: Path) -> tuple[Config, Engine, int]:
    """AAA: 50 bars of history then live trades; BBB: live trades only. Six bars of trades from the
    history's forming bar F; the clock stands in the last one, so F .. F+4 close."""
    cfg = config(tmp_path)
    e = engine()
    history = walk_bars(50, 0, T0)
    forming = int(history["t"][-1])
    items: list[FeedItem] = [HistoryBars(history)]
    items += live_ticks(0, forming, 6, float(history["close"][-1]), 1)
    items += live_ticks(1, forming, 6, 50.0, 2)
    run(Runtime(cfg, engine=e, feed=ScriptedLive(e.symbols, items, clock=forming + 5 * MIN + 55 * SEC)))
    return cfg, e, forming


def test_every_closed_bar_is_stored_and_a_restart_loads_them_back(tmp_path: Path) -> None:
    cfg, e, forming = first_run(tmp_path)
    # AAA: its 49 closed bars of history and its live bars F .. F+4, exactly as the engine closed them
    a_times, a_ohlcv = closed(e, "AAA")
    a = stored(cfg, "AAA")
    assert len(a) == 54 and (a["sym"] == -1).all()
    assert_equal(a, a_times, a_ohlcv)
    # BBB: nothing before its first trade, so its first bar (F) began mid-bar and is not kept
    b_times, b_ohlcv = closed(e, "BBB")
    b = stored(cfg, "BBB")
    assert int(b_times[0]) == forming and len(b) == 4
    assert_equal(b, b_times[1:], b_ohlcv[1:])

    # the restart: the stored bars go in as history, the live tape goes on from the next bar
    e2 = engine()
    back = stored(cfg, "AAA")
    back["sym"] = 0
    items: list[FeedItem] = [HistoryBars(back)]
    items += live_ticks(0, forming + 5 * MIN, 3, float(back["close"][-1]), 3)
    run(Runtime(cfg, engine=e2, feed=ScriptedLive(e2.symbols, items, clock=forming + 7 * MIN + 55 * SEC)))
    t2, ohlcv2 = closed(e2, "AAA")
    a2 = stored(cfg, "AAA")
    assert len(a2) == 56 and (np.diff(a2["t"]) > 0).all()  # F+5 and F+6 added, nothing twice
    assert_equal(a2, t2, ohlcv2)
    assert_equal(a2[:53], a_times[:53], a_ohlcv[:53])  # the old bars came back unchanged


def test_bars_reach_the_store_while_the_feed_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    e = engine()
    items: list[FeedItem] = list(live_ticks(0, T0, 4, 100.0, 1))

    async def main() -> None:
        release = asyncio.Event()
        feed = ScriptedLive(e.symbols, items, clock=T0 + 3 * MIN + 55 * SEC, release=release)
        runtime = Runtime(cfg, engine=e, feed=feed)
        task = asyncio.create_task(runtime.run(lambda update: None, lambda status: None))
        store = await asyncio.to_thread(open_store, cfg)
        assert store is not None
        try:
            async with asyncio.timeout(90):  # a bound, not a speed: a loaded machine took over 20 s
                while len(await asyncio.to_thread(store.load, "binance", "AAA", MIN, 0)) < 2:
                    await asyncio.sleep(0.05)
        finally:
            release.set()
            await task
        got = store.load("binance", "AAA", MIN, 0)  # T0 began at the first trade: not kept
        assert list(got["t"]) == [T0 + MIN, T0 + 2 * MIN]
        assert runtime.store_writer is not None and runtime.store_writer.written == 2
        store.close()

    asyncio.run(main())


@pytest.mark.parametrize("name", ["sim", "replay"])
def test_the_sim_and_a_replay_keep_nothing(tmp_path: Path, name: str) -> None:
    e = engine()
    runtime = Runtime(config(tmp_path), engine=e,
                      feed=ScriptedLive(e.symbols, live_ticks(0, T0, 4, 100.0, 1), clock=T0 + 4 * MIN,
                                        name=name))
    run(runtime)
    assert e.stats.bars >= 3 and runtime.store_writer is None
    assert not (tmp_path / "bars").exists()


def test_an_empty_store_setting_keeps_nothing(tmp_path: Path) -> None:
    e = engine()
    runtime = Runtime(config(tmp_path, ""), engine=e,
                      feed=ScriptedLive(e.symbols, live_ticks(0, T0, 4, 100.0, 1), clock=T0 + 4 * MIN))
    run(runtime)
    assert e.stats.bars >= 3 and runtime.store_writer is None and e.on_closed is None


def test_a_store_that_cannot_open_is_logged_and_the_run_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bars").mkdir()
    (tmp_path / "bars" / FILENAME).write_bytes(b"not a database" * 100)
    e = engine()
    feed = ScriptedLive(e.symbols, live_ticks(0, T0, 4, 100.0, 1), clock=T0 + 3 * MIN + 55 * SEC)
    runtime = Runtime(config(tmp_path), engine=e, feed=feed)
    run(runtime)
    writer = runtime.store_writer
    assert writer is not None and writer.written == 0 and writer.dropped == 2
    assert "not a tickdeck bar store" in writer.error
    assert any("closed bars are not kept" in r.getMessage() for r in caplog.records)
    assert e.stats.bars == 3


# --- the writer on its own -----------------------------------------------------------------------

def one_bar(t: int) -> np.ndarray:
    b = make_bars(1)
    b["sym"], b["t"], b["open"], b["high"], b["low"], b["close"], b["volume"] = 0, t, 1, 2, 0.5, 1.5, 3
    return b


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_open() -> BarStore:
        gate.wait(30)  # the store is stuck until the queue has overflowed
        return BarStore(tmp_path, 3650 * 1440 * MIN)

    writer = StoreWriter(slow_open, "binance", MIN)
    for k in range(QUEUE_BATCHES + 5):
        writer.put(one_bar(T0 + k * MIN), ("AAA",))
    assert writer.dropped == 5
    gate.set()
    assert writer.wait_idle(30) and writer.written == QUEUE_BATCHES
    assert writer.close(30)
    writer.put(one_bar(T0), ("AAA",))  # after the close: dropped, counted
    assert writer.dropped == 6
    with BarStore(tmp_path, 3650 * 1440 * MIN) as store:
        assert len(store.load("binance", "AAA", MIN, 0)) == QUEUE_BATCHES


def test_a_failed_write_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    class Flaky(BarStore):
        fail = True

        def append_many(self, series):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail = False
                raise StoreError("cannot write to the bar store: database or disk is full")
            return super().append_many(series)

    writer = StoreWriter(lambda: Flaky(tmp_path, 3650 * 1440 * MIN), "binance", MIN)
    writer.put(one_bar(T0), ("AAA",))
    assert writer.wait_idle(30) and writer.failures == 1 and writer.dropped == 1
    writer.put(one_bar(T0 + MIN), ("AAA",))
    assert writer.wait_idle(30) and writer.written == 1
    assert writer.close(30)


def test_the_writer_prunes_while_it_runs(tmp_path: Path) -> None:
    now = [T0]
    with BarStore(tmp_path, 60 * MIN, clock=lambda: now[0]) as store:
        store.append("binance", "AAA", MIN, np.concatenate([one_bar(T0 - k * MIN) for k in range(1, 30)]))
    now[0] = T0 + 40 * MIN  # the retention (an hour) now starts at T0 - 20 min: 9 of the 29 bars are past it
    writer = StoreWriter(lambda: BarStore(tmp_path, 60 * MIN, clock=lambda: now[0]), "binance", MIN,
                         prune_every_s=0.01)

    async def until(count: int) -> None:
        async with asyncio.timeout(20):
            while len(store.load("binance", "AAA", MIN, 0)) != count:
                await asyncio.sleep(0.01)

    with BarStore(tmp_path, 3650 * 1440 * MIN) as store:
        asyncio.run(until(20))  # pruned on open
        now[0] += 5 * MIN
        asyncio.run(until(15))  # and again while it runs
    assert writer.close(30)


def test_the_collector_keeps_a_symbols_first_bar_only_when_something_came_before_it() -> None:
    handed: list[tuple[np.ndarray, tuple[str, ...]]] = []

    class Catch:
        def put(self, bars: np.ndarray, names: tuple[str, ...]) -> None:
            handed.append((bars, names))

    names = ["AAA", "BBB", "CCC"]
    c = BarCollector(Catch(), names.__getitem__)  # type: ignore[arg-type]
    bar = np.array([[1.0, 2.0, 0.5, 1.5, 10.0]] * 2)
    c.collect(np.array([0, 2]), np.array([T0, T0]), bar, np.array([True, False]))  # AAA history, CCC live
    c.collect(np.array([2]), np.array([T0 + MIN]), bar[:1], np.array([False]))
    c.hand_over()
    c.hand_over()  # nothing more: nothing handed
    assert len(handed) == 1 and c.skipped == 1
    bars, got_names = handed[0]
    assert got_names == ("AAA", "CCC")
    assert [(got_names[s], t) for s, t in zip(bars["sym"].tolist(), bars["t"].tolist(), strict=True)] == [
        ("AAA", T0), ("CCC", T0 + MIN)]
