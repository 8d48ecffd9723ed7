"""The headless service's share of its feed (``--shard K/N`` or ``--shard auto``, ``[bus] shard``): the
feed's other symbols are unsubscribed before the run starts, and with ``auto`` a ``ShardKeeper``
(``engine.bus.shard_keeper``) moves symbols in and out while it runs.

Sharding needs a feed that subscribes symbols one by one (binance, coinbase, yahoo, ccxt): a simulation
or a replay delivers every symbol it has. With ``auto`` the feed's history loader also reads the bars
on the bus first (``engine.bus.bus_bars``), so a symbol taken over continues the indicators of the engine
that held it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from engine.bus.connection import BusError, settings_of
from engine.bus.shards import Shard, ShardError, parse_shard, static_share

if TYPE_CHECKING:
    from engine.bus.bus_bars import BusBars
    from engine.bus.shard_keeper import ShardKeeper
    from engine.config import Config
    from engine.runtime import Runtime

log = logging.getLogger("tickdeck.bus")


class Sharding:
    """One run's share: ``start`` the keeper (auto) with the run, ``close`` it after."""

    def __init__(self, shard: Shard, universe: list[str], held: list[str],
                 keeper: ShardKeeper | None = None) -> None:
        self.shard = shard
        self.universe = universe
        self.held = held
        self.keeper = keeper
        self.bars: BusBars | None = None  # the history loader's reader of the bars on the bus (auto)
        self._task: asyncio.Task[None] | None = None

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


async def open_sharding(config: Config, runtime: Runtime) -> Sharding | None:
    """The share ``config`` asks for, applied to ``runtime``'s feed before its run (None: every symbol);
    ``BusError`` (one line, exit status 2) when it cannot be had."""
    try:
        shard = parse_shard(config.bus.shard)
    except ShardError as exc:  # (the config's own check says this first; a Config built in code)
        raise BusError(f"bus.shard {exc}") from None
    if shard is None:
        return None
    feed = runtime.feed
    if feed.closed_universe:
        raise BusError(f"--shard needs a feed that subscribes symbols (binance, coinbase, yahoo, ccxt); the "
                       f"{feed.name} feed delivers every symbol it has")
    universe = list(feed.universe())
    keeper, bars = None, None
    if shard.auto:
        if not config.bus.url:
            raise BusError("--shard auto keeps the assignment on the bus: it needs --publish "
                           "nats://HOST:4222 (bus.url)")
        keeper, bars = await _keeper(config, runtime, universe)
        held = await keeper.open()
    else:
        held = static_share(universe, shard)
        log.info("shard %s: %d of %d symbols", shard, len(held), len(universe),
                 extra={"event": "shard", "fields": {"shard": str(shard), "held": len(held),
                                                     "symbols": len(universe)}})
    keep = set(held)
    await runtime.drop_symbols([s for s in universe if s not in keep])
    runtime.set_watch(held)
    sharding = Sharding(shard, universe, held, keeper)
    sharding.bars = bars
    return sharding


async def _keeper(config: Config, runtime: Runtime,
                  universe: list[str]) -> tuple[ShardKeeper, BusBars | None]:
    from engine.bus.bus_bars import BusBars
    from engine.bus.publisher import default_engine_name
    from engine.bus.shard_keeper import ShardKeeper, ShardTiming

    bus = config.bus
    interval = config.engine.interval

    async def apply(gained: list[str], lost: list[str]) -> None:
        if lost:
            await runtime.drop_symbols(lost)
        if gained:
            await runtime.add_symbols(gained)
        runtime.set_watch(keeper.held)

    keeper = ShardKeeper(settings_of(config), feed=runtime.feed.name, interval=interval,
                         engine=bus.engine or default_engine_name(), symbols=universe,
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
