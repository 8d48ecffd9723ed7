"""The headless service's share of its feed (``--shard K/N`` or ``--shard auto``, ``[bus] shard``): the
feed's other symbols are unsubscribed before the run starts, and with ``auto`` a ``ShardKeeper``
(``engine.bus.shard_keeper``) moves symbols in and out while it runs.

Whatever the feed still delivers of the other symbols (a simulation or a replay delivers every symbol;
a live feed, the trades already on their way when it unsubscribed) stops at the feed's wrapper
(``StoppableFeed.only``, :meth:`Share.only`): ticks, history and refills of a symbol not in the share
never reach the engine. A symbol given up has its forming bar dropped, unclosed (twice: at once, and
``AGAIN_S`` later for the batches that were already queued): the engine that takes it builds that bar
whole, and this one publishes no partial bar nor a signal on one.

``auto`` needs a feed that subscribes symbols one by one and loads their history (binance, coinbase,
yahoo, ccxt): the feed's history loader reads the bars on the bus first (``engine.bus.bus_bars``), so a
symbol taken over continues the indicators of the engine that held it. ``K/N`` works with every feed.

Whoever tells others what the engine carries (the ``websocket`` sink's ``hello``) follows the share with
:meth:`Sharding.on_change`: called with the symbols held each time ``auto`` moves some.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.connection import BusError, settings_of
from engine.bus.shards import Shard, ShardError, parse_shard, static_share
from engine.feeds.base import FeedItem, HistoryBars, Refill

if TYPE_CHECKING:
    from engine.bus.bus_bars import BusBars
    from engine.bus.shard_keeper import ShardKeeper
    from engine.config import Config
    from engine.runtime import Runtime
    from engine.tick_engine import Engine

log = logging.getLogger("tickdeck.bus")

AGAIN_S = 0.2  # after giving a symbol up, when its forming bar is dropped a second time

Listener = Callable[[Sequence[str]], None]
"""Told the symbols held after a change of the share (on the event loop; it must not block)."""


class Share:
    """Which engine slots are this engine's: every slot but those of the feed's symbols held elsewhere."""

    def __init__(self, engine: Engine, universe: Iterable[str], held: Iterable[str]) -> None:
        self.engine = engine
        self.universe = list(universe)
        self.keep = np.ones(engine.capacity, dtype=bool)
        self.set(held)

    def slots(self, names: Iterable[str]) -> list[int]:
        return [slot for name in names if (slot := self.engine.symbols.get(name)) is not None]

    def set(self, held: Iterable[str]) -> None:
        keep = set(held)
        self.keep[:] = True
        self.keep[self.slots(s for s in self.universe if s not in keep)] = False

    def only(self, item: FeedItem) -> FeedItem | None:
        """``item`` without what belongs to other engines' symbols (None: nothing left)."""
        if isinstance(item, Refill):
            return item if self.keep[item.sym] else None
        rows = item.bars if isinstance(item, HistoryBars) else item
        if not isinstance(rows, np.ndarray) or not len(rows):
            return item
        mine = self.keep[rows["sym"]]
        if mine.all():
            return item
        if not mine.any():
            return None
        return HistoryBars(rows[mine]) if isinstance(item, HistoryBars) else rows[mine]

    def drop_forming(self, slots: list[int]) -> None:
        """On the engine thread: the forming bars of ``slots`` no longer held, dropped unclosed."""
        for slot in slots:
            if not self.keep[slot]:
                self.engine.drop_forming(slot)


class Sharding:
    """One run's share: ``start`` the keeper (auto) with the run, ``close`` it after."""

    def __init__(self, shard: Shard, share: Share, held: list[str],
                 keeper: ShardKeeper | None = None, listeners: list[Listener] | None = None) -> None:
        self.shard = shard
        self.share = share
        self.universe = share.universe
        self.held = held
        self.keeper = keeper
        self.bars: BusBars | None = None  # the history loader's reader of the bars on the bus (auto)
        self._task: asyncio.Task[None] | None = None
        self._listeners = listeners if listeners is not None else []  # shared with the keeper's apply

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` with the symbols held after each change of the share (none with ``K/N``)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self.keeper is not None:
            self._task = asyncio.create_task(self.keeper.run(), name="tickdeck-shards")

    async def close(self, timeout: float = 0.5) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.keeper is not None:
            await self.keeper.close(timeout)

    def stats(self) -> dict[str, Any]:
        if self.keeper is not None:
            bars = self.bars
            read = {} if bars is None else {"bus_reads": bars.reads, "bus_bars": bars.bars,
                                            "bus_read_failures": bars.failed}
            return {**self.keeper.stats(), **read}
        return {"shard": str(self.shard), "held": len(self.held), "symbols": len(self.universe)}


def check_sharding(config: Config, runtime: Runtime) -> Shard | None:
    """The share ``config`` asks for (None: every symbol), checked before anything connects;
    ``BusError`` (one line, exit status 2) when it cannot be had."""
    try:
        shard = parse_shard(config.bus.shard)
    except ShardError as exc:  # (the config's own check says this first; a Config built in code)
        raise BusError(f"bus.shard {exc}") from None
    if shard is None:
        return None
    feed = runtime.feed
    if shard.auto and feed.closed_universe:
        raise BusError(f"--shard auto needs a feed that subscribes symbols and loads their history (binance, "
                       f"coinbase, yahoo, ccxt); with the {feed.name} feed, use --shard K/N")
    if shard.auto and not config.bus.url:
        raise BusError("--shard auto keeps the assignment on the bus: it needs --publish "
                       "nats://HOST:4222 (bus.url)")
    return shard


async def open_sharding(config: Config, runtime: Runtime) -> Sharding | None:
    """The share ``config`` asks for, applied to ``runtime``'s feed before its run (None: every symbol);
    ``BusError`` (one line, exit status 2) when it cannot be had."""
    shard = check_sharding(config, runtime)
    if shard is None:
        return None
    feed = runtime.feed
    universe = list(feed.universe())
    share = Share(runtime.engine, universe, universe)
    keeper, bars = None, None
    listeners: list[Listener] = []
    if shard.auto:
        keeper, bars = await _keeper(config, runtime, share, listeners)
        held = await keeper.open()
    else:
        held = static_share(universe, shard)
        log.info("shard %s: %d of %d symbols", shard, len(held), len(universe),
                 extra={"event": "shard", "fields": {"shard": str(shard), "held": len(held),
                                                     "symbols": len(universe)}})
    keep = set(held)
    share.set(keep)
    only = getattr(feed, "only", False)
    if only is not False:  # (the headless service's StoppableFeed)
        feed.only = share.only  # type: ignore[attr-defined]
    await runtime.drop_symbols([s for s in universe if s not in keep])
    runtime.set_watch(held)
    sharding = Sharding(shard, share, held, keeper, listeners)
    sharding.bars = bars
    return sharding


def watched(held: Sequence[str], watch: Sequence[str], universe: Sequence[str]) -> list[str]:
    """What the snapshots carry after a change of the share: the share, and the symbols watched from
    outside the feed's list (a held position's, ``engine.positions.portfolio.follow``), which no share
    filters out and every engine carries."""
    listed = {*universe, *held}
    return [*held, *(s for s in watch if s not in listed)]


async def _keeper(config: Config, runtime: Runtime, share: Share,
                  listeners: list[Listener]) -> tuple[ShardKeeper, BusBars | None]:
    from engine.bus.bus_bars import BusBars
    from engine.bus.publisher import default_engine_name
    from engine.bus.shard_keeper import ShardKeeper, ShardTiming

    bus = config.bus
    interval = config.engine.interval

    async def apply(gained: list[str], lost: list[str]) -> None:
        share.set(keeper.held)  # first: ticks of the symbols gained go on, of those lost no further
        runtime.set_watch(watched(keeper.held, runtime.watch, share.universe))
        for listener in listeners:  # what the snapshots carry from the next frame on
            try:
                listener(runtime.watch)
            except Exception:  # a listener's fault must not keep the feed from following the share
                log.exception("shard: a listener of the share's changes failed")
        if gained:
            await runtime.add_symbols(gained)
        if lost:
            await runtime.drop_symbols(lost)
            slots = share.slots(lost)
            await runtime.call(share.drop_forming, slots)
            await asyncio.sleep(AGAIN_S)  # batches queued before the change have gone through by now
            await runtime.call(share.drop_forming, slots)

    keeper = ShardKeeper(settings_of(config), feed=runtime.feed.name, interval=interval,
                         engine=bus.engine or default_engine_name(), symbols=share.universe,
                         timing=ShardTiming(bus.shard_ttl, bus.shard_renew, bus.shard_check), apply=apply)
    loader = getattr(getattr(runtime.feed, "inner", runtime.feed), "history", None)
    bars = None
    if loader is None:
        log.warning("shard: the %s feed loads no history (history.fetch and history.store are off): a "
                    "symbol taken over starts its indicators anew", runtime.feed.name)
    else:
        bars = BusBars(asyncio.get_running_loop(), lambda: keeper.js, interval, loader.bars,
                       fallback=loader.store)
        loader.store = bars
    return keeper, bars
