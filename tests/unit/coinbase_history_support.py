"""What the Coinbase history tests share: a Coinbase feed with its history loader against the stand-in
with a past (tests/servers/coinbase_history.py), an engine fed what the feed yields as the runtime feeds
it, and a reference engine fed every trade the stand-in made, tick by tick."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.backfill.coinbase import CoinbaseHistory
from engine.backfill.loader import BarStore, HistoryLoader
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus, HistoryBars, Refill
from engine.feeds.coinbase import CoinbaseFeed
from engine.tick_engine import Engine
from engine.ticks import TICK_DTYPE
from tests.servers.coinbase_history import CoinbaseHistoryServer
from tests.unit.backfill_support import OUTPUTS

NS = 1_000_000_000
MINUTE = 60 * NS
T0 = 1_699_999_980 * NS  # a minute's start
SIDE = {"BUY": -1, "SELL": 1}  # the maker's side -> the aggressor's
SIZES = ("0.125", "0.25", "0.5", "1.375", "2.000", "0.875")  # float sums of eighths are exact


def make_engine(names: tuple[str, ...], interval_ns: int = MINUTE) -> Engine:
    out = Engine(OUTPUTS, interval_ns, capacity=16, depth=1000)
    for name in names:
        out.add_symbol(name)
    return out


def tape_ticks(server: CoinbaseHistoryServer, e: Engine, names: dict[str, str] | None = None) -> np.ndarray:
    """Every trade the stand-in made, as ticks for ``e`` (``names``: engine name -> the book it trades
    on, for aliases; by default every book under its own name)."""
    books = names or {n: n for n in server.history if e.symbols.get(n) is not None}
    rows = []
    for name, book in books.items():
        slot = e.symbols.get(name)
        assert slot is not None
        for t in server.history[book]:
            tid = int(t["trade_id"])
            ns = server.trade_ns[(book, tid)]
            rows.append((slot, ns, ns, float(t["price"]), float(t["size"]), SIDE[t["side"]], tid))
    rows.sort(key=lambda r: (r[1], r[0], r[6]))
    return np.array(rows, dtype=TICK_DTYPE)


def reference(server: CoinbaseHistoryServer, names: tuple[str, ...], until_ns: int,
              interval_ns: int = MINUTE, books: dict[str, str] | None = None) -> Engine:
    e = make_engine(names, interval_ns)
    e.ingest(tape_ticks(server, e, books))
    e.close_due(until_ns - until_ns % interval_ns)
    return e


@dataclass
class Run:
    """A feed's stream applied to an engine as the runtime applies it, on the stand-in's clock."""

    feed: CoinbaseFeed
    source: CoinbaseHistory
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

    async def applied(self, server: CoinbaseHistoryServer, name: str, book: str | None = None) -> None:
        """Until the engine has the newest trade the stand-in made on ``name``'s book."""
        slot = self.engine.symbols.get(name)
        assert slot is not None
        last = int(server.history[book or name][-1]["trade_id"])
        await self.until(lambda: self.seen.get(slot, -1) >= last, f"{name} trade {last} in the engine")


@contextlib.asynccontextmanager
async def running(server: CoinbaseHistoryServer, names: tuple[str, ...], *, bars: int = 300,
                  interval_ns: int = MINUTE, store: BarStore | None = None,
                  retry_backoff: Backoff | None = None) -> AsyncIterator[Run]:
    e = make_engine(names, interval_ns)
    feed = CoinbaseFeed(e.symbols, server.url, names, backoff=Backoff(0.01, 0.02, rng=random.Random(3)),
                        rest_url=server.rest_url)
    aliases = feed.aliases
    assert aliases is not None

    async def canonical(name: str) -> str:
        await aliases.learn([name])
        return aliases.canonical(name)

    async def no_wait(_: float) -> None:  # requests asked again without the backoff's pause
        await asyncio.sleep(0)

    source = CoinbaseHistory(server.rest_url, feed.counters, canonical=canonical, sleep=no_wait)
    aliases.share(source.session, source.limiter)
    feed.use_history(HistoryLoader("coinbase", e.symbols, feed.counters, feed.sequencer, interval_ns, bars,
                                   source, store, refills=True, by_id=True, clock=server.now,
                                   backoff=retry_backoff or Backoff(0.01, 0.02, rng=random.Random(4))))
    run = Run(feed, source, e, server.now)
    run.task = asyncio.get_running_loop().create_task(run.consume())
    try:
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task


async def make_history(server: CoinbaseHistoryServer, product: str, start_ns: int, minutes: int, seed: int,
                       quiet: tuple[int, ...] = (), least: int = 0) -> None:
    """Trades of ``product`` over ``minutes`` minutes from ``start_ns``: ``least`` to 5 a minute (none in
    the minutes ``quiet``), at random times within each minute."""
    rng = random.Random(seed)
    price = 100.0 + seed
    for m in range(minutes):
        if m in quiet:
            continue
        for off in sorted(rng.sample(range(0, 60_000, 7), rng.randint(least, 5))):
            price = max(1.0, price * (1 + rng.gauss(0, 0.003)))
            await server.trade(product, f"{price:.2f}", rng.choice(SIZES), rng.choice(("BUY", "SELL")),
                               at_ns=start_ns + m * MINUTE + off * 1_000_000)
