"""What the Yahoo history tests share: a Yahoo feed with its history loader against the stand-in whose
chart is computed from the tape its quotes read (tests/servers/yahoo_chart.py), on a clock the test
moves, and an engine fed what the feed yields as the runtime feeds it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.backfill.loader import BarStore, HistoryLoader
from engine.backfill.yahoo import YahooHistory
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus, HistoryBars, Refill
from engine.feeds.batching import TradeSequencer
from engine.feeds.pacing import RequestBudget, TokenBucket
from engine.feeds.yahoo import YahooFeed
from engine.tick_engine import Engine
from engine.ticks import TICK_DTYPE
from tests.servers.yahoo_chart import YahooHistoryServer
from tests.unit.backfill_support import OUTPUTS

NS = 1_000_000_000
MINUTE = 60 * NS
T0 = 1_700_000_040  # a minute's start (s)


class Now:
    """The market's clock, in seconds; the test moves it."""

    def __init__(self, s: float) -> None:
        self.s = s

    def __call__(self) -> float:
        return self.s

    def ns(self) -> int:
        return int(self.s * NS)


def make_engine(names: tuple[str, ...], interval_ns: int = MINUTE) -> Engine:
    out = Engine(OUTPUTS, interval_ns, capacity=8, depth=1000)
    for name in names:
        out.add_symbol(name)
    return out


def make_tape(server: YahooHistoryServer, symbol: str, start_s: int, end_s: int, seed: int,
              every_s: int = 15) -> None:
    """Prices of ``symbol`` every ``every_s`` seconds (some skipped) from ``start_s`` to ``end_s``, each with
    the volume traded since the one before."""
    rng = random.Random(seed)
    price = 100.0 + seed
    for t in range(start_s, end_s, every_s):
        if rng.random() < 0.2:
            continue
        price = round(max(1.0, price * (1 + rng.gauss(0, 0.002))), 2)
        server.tick(symbol, t * 1000, price, rng.randint(1, 40) * 100)


def tape_bars(server: YahooHistoryServer, e: Engine, until_s: int) -> Engine:
    """``e`` fed every point of the tape before ``until_s`` as a tick (size: the volume since the point
    before): the bars the chart's are."""
    rows = []
    for name, points in server.tape.items():
        slot = e.symbols.get(name)
        if slot is None:
            continue
        before = 0
        for t_ms, price, day in points:
            if t_ms // 1000 < until_s:
                rows.append((slot, t_ms * 1_000_000, t_ms * 1_000_000, price, float(day - before), 0, -1))
            before = day
    rows.sort(key=lambda r: (r[1], r[0]))
    e.ingest(np.array(rows, dtype=TICK_DTYPE))
    return e


@dataclass
class Run:
    feed: YahooFeed
    source: YahooHistory
    engine: Engine
    now: Now
    items: list[Any] = field(default_factory=list)
    statuses: list[FeedStatus] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def consume(self) -> None:
        async for item in self.feed.stream():
            self.items.append(item)
            e = self.engine
            if isinstance(item, FeedStatus):
                self.statuses.append(item)
            elif isinstance(item, HistoryBars):
                e.ingest_history(item.bars)
            elif isinstance(item, Refill):
                e.refill(item.sym, item.since_ns, item.ticks)
            else:
                e.ingest(item)
            now = self.now.ns()
            e.close_due(now - now % e.interval_ns)

    def ticks(self, name: str) -> np.ndarray:
        """The live ticks of ``name`` the feed yielded (no history, no refill)."""
        slot = self.engine.symbols.get(name)
        batches = [i[i["sym"] == slot] for i in self.items if isinstance(i, np.ndarray)]
        return np.concatenate(batches) if batches else np.zeros(0, TICK_DTYPE)

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.task is not None and self.task.done():
                        self.task.result()
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; items {self.items[-5:]}, counters "
                                 f"{self.feed.counters.as_dict()}, rest {dict(self.feed.counters.rest_bad)}"
                                 ) from None

    async def quoted(self, name: str, t_s: int) -> None:
        """Until the engine has the quote at ``t_s`` (its forming bar holds it)."""
        slot = self.engine.symbols.get(name)
        assert slot is not None

        def seen() -> bool:
            ticks = self.ticks(name)
            return bool(len(ticks)) and int(ticks["ts"][-1]) >= t_s * NS and len(self.feed.batcher) == 0
        await self.until(seen, f"{name}'s quote at {t_s} in the engine")


@contextlib.asynccontextmanager
async def running(server: YahooHistoryServer, names: tuple[str, ...], now: Now, *, bars: int = 250,
                  interval_ns: int = MINUTE, store: BarStore | None = None) -> AsyncIterator[Run]:
    e = make_engine(names, interval_ns)
    feed = YahooFeed(e.symbols, names, server.url, cookie_url=server.cookie_url, interval=0.02,
                     limiter=TokenBucket(60_000, burst=1000), budget=RequestBudget(100_000),
                     backoff=Backoff(0.01, 0.02, rng=random.Random(7)))
    source = YahooHistory(server.url, feed.fetch, feed.counters, clock=now.ns)
    feed.use_history(HistoryLoader("yahoo", e.symbols, feed.counters, TradeSequencer(), interval_ns, bars,
                                   source, store, refills=True, by_id=False, clock=now.ns,
                                   backoff=Backoff(0.01, 0.02, rng=random.Random(8))))
    run = Run(feed, source, e, now)
    run.task = asyncio.get_running_loop().create_task(run.consume())
    try:
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task
