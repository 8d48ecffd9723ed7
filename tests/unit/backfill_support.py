"""What the history tests share: a Binance feed with a history loader against the stand-in with a past,
an engine fed what the feed yields (as the runtime feeds it), a reference engine fed the whole tape tick
by tick, and an exact comparison of the two.

A ``Refill`` goes to ``Engine.refill``, as the runtime hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.backfill.binance import BinanceHistory
from engine.backfill.limiter import WeightLimiter
from engine.backfill.loader import BarStore, HistoryLoader
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus, HistoryBars, Refill
from engine.feeds.binance import BinanceFeed
from engine.indicators.catalogue import DEFAULT_OUTPUTS
from engine.tick_engine import Engine
from engine.ticks import TICK_DTYPE
from tests.servers.binance_rest import BinanceHistoryServer

MS = 1_000_000
MINUTE = 60_000  # ms
BAR_NS = MINUTE * MS
M0 = 1_699_999_980_000  # a minute's start (ms)
OUTPUTS = (*DEFAULT_OUTPUTS, "sma_200", "sma_50")


def engine(names: tuple[str, ...]) -> Engine:
    out = Engine(OUTPUTS, BAR_NS, capacity=8, depth=1000)
    for name in names:
        out.add_symbol(name)
    return out


def tape_ticks(server: BinanceHistoryServer, e: Engine) -> np.ndarray:
    """Every trade the stand-in made, of every symbol, in the order made, as ticks for ``e``."""
    rows = []
    for name, trades in server.made.items():
        slot = e.symbols.get(name)
        assert slot is not None
        rows += [(t["t"], (slot, t["T"] * MS, t["T"] * MS, float(t["p"]), float(t["q"]),
                           -1 if t["m"] else 1, t["t"])) for t in trades]
    rows.sort(key=lambda r: (r[1][1], r[1][0], r[0]))
    return np.array([r for _, r in rows], dtype=TICK_DTYPE)


def assert_same(a: Engine, b: Engine, names: tuple[str, ...]) -> None:
    """Closed bars, forming bars, committed and provisional values: equal, bit for bit (NaN = NaN)."""
    for name in names:
        slot = a.symbols.get(name)
        assert slot == b.symbols.get(name) and slot is not None
        ta, ba = a.history.tail(slot)
        tb, bb = b.history.tail(slot)
        assert len(ta) == len(tb), f"{name}: {len(ta)} closed bars, uninterrupted {len(tb)}"
        assert np.array_equal(ta, tb), f"{name}: bar times differ"
        assert np.array_equal(ba, bb), f"{name}: closed bars differ at {np.argwhere(ba != bb)[:5].tolist()}"
        fa, fb = a.forming_bar(slot), b.forming_bar(slot)
        assert (fa is None) == (fb is None), f"{name}: forming {fa} vs {fb}"
        if fa is not None and fb is not None:
            assert fa[0] == fb[0] and np.array_equal(fa[1], fb[1]), f"{name}: forming {fa} vs {fb}"
        for label, va, vb in (("committed", a.bank.committed[:, slot], b.bank.committed[:, slot]),
                              ("provisional", a.bank.provisional[:, slot], b.bank.provisional[:, slot])):
            if fa is None and label == "provisional":
                continue
            assert np.array_equal(va, vb, equal_nan=True), (
                f"{name}: {label} values differ: "
                + ", ".join(f"{n} {va[a.bank.row(n)]!r} vs {vb[b.bank.row(n)]!r}" for n in OUTPUTS
                            if not np.array_equal(va[a.bank.row(n)], vb[b.bank.row(n)], equal_nan=True)))


@dataclass
class Run:
    """A feed's stream applied to an engine as the runtime applies it, on the stand-in's clock."""

    feed: BinanceFeed
    engine: Engine
    clock: Callable[[], int]
    items: list[Any] = field(default_factory=list)
    statuses: list[FeedStatus] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)  # slot -> the newest trade id applied
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
                self._saw(item.ticks)
            else:
                e.ingest(item)
                now = self.clock()
                e.close_due(now - now % e.interval_ns)
                self._saw(item)

    def _saw(self, ticks: np.ndarray) -> None:
        for slot in np.unique(ticks["sym"]):
            ids = ticks["trade_id"][ticks["sym"] == slot]
            self.seen[int(slot)] = max(self.seen.get(int(slot), -1), int(ids.max()))

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.task is not None and self.task.done():
                        self.task.result()
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; items {self.items[-5:]}, "
                                 f"counters {self.feed.counters.as_dict()}") from None

    async def applied(self, server: BinanceHistoryServer, name: str) -> None:
        """Until the engine has the newest trade the stand-in made for ``name``."""
        slot = self.engine.symbols.get(name)
        assert slot is not None
        last = server.made[name][-1]["t"]
        await self.until(lambda: self.seen.get(slot, -1) >= last, f"{name} trade {last} in the engine")


@contextlib.asynccontextmanager
async def running(server: BinanceHistoryServer, names: tuple[str, ...], *, bars: int = 300,
                  refills: bool = True, store: BarStore | None = None,
                  limiter: WeightLimiter | None = None, retry_at_once: bool = False,
                  stream: str = "trade", retry_backoff: Backoff | None = None,
                  retry_sleep: Callable[[float], Coroutine[None, None, None]] = asyncio.sleep,
                  ) -> AsyncIterator[Run]:
    e = engine(names)
    feed = BinanceFeed(e.symbols, server.url, names, backoff=Backoff(0.01, 0.02, rng=random.Random(3)),
                       stream=stream)

    def clock() -> int:  # the stand-in's "now", in ns
        return server._now() * MS

    async def no_wait(_: float) -> None:  # retries after a bad answer without the backoff's pause
        await asyncio.sleep(0)

    source = BinanceHistory(server.rest_url, feed.counters, limiter=limiter,
                            sleep=no_wait if retry_at_once else asyncio.sleep)
    feed.use_history(HistoryLoader("binance", e.symbols, feed.counters, feed.sequencer, BAR_NS, bars, source,
                                   store, refills=refills, by_id=stream == "trade", clock=clock,
                                   backoff=retry_backoff, sleep=retry_sleep))
    run = Run(feed, e, clock)
    run.task = asyncio.get_running_loop().create_task(run.consume())
    try:
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task


QTYS = ("0.125", "0.25", "0.5", "1.375", "2.000", "0.875")


async def make_history(server: BinanceHistoryServer, name: str, start_ms: int, minutes: int, seed: int,
                       quiet: tuple[int, ...] = ()) -> None:
    """Trades of ``name`` over ``minutes`` minutes from ``start_ms``: 0 to 5 a minute (none in the
    minutes ``quiet``), some of them aggregates of a few trades of one order."""
    rng = random.Random(seed)
    price = 100.0 + seed
    order = seed * 100_000
    for m in range(minutes):
        if m in quiet:
            continue
        times = sorted(rng.sample(range(0, MINUTE, 7), rng.randint(0, 5)))
        for off in times:
            price = max(1.0, price * (1 + rng.gauss(0, 0.003)))
            text = f"{price:.2f}"
            order += 1
            maker = rng.random() < 0.5
            for _ in range(rng.choice((1, 1, 1, 2, 3))):  # one trade, or an aggregate of 2 or 3
                await server.trade(name, text, rng.choice(QTYS), maker, at_ms=start_ms + m * MINUTE + off,
                                   order=order)


async def trade(server: BinanceHistoryServer, name: str, at_ms: int, price: str = "101.50",
                qty: str = "0.5", maker: bool = False, order: int | None = None) -> dict[str, Any]:
    return await server.trade(name, price, qty, maker, at_ms=at_ms, order=order)
