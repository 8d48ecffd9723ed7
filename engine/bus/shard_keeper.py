"""``--shard auto``: the engines of one feed and interval share its symbols through a JetStream key-value
bucket, ``TICKDECK_SHARDS`` (its stream is ``KV_TICKDECK_SHARDS``), and take over the symbols of an engine
that stops.

Keys (each part a key token: letters, digits, ``_`` and ``-`` as they are, any other byte ``=XX``)::

    presence.<feed>.<interval>.<engine>     {"engine", "feed", "interval", "symbols", "started", "renewed",
                                             "ttl"}
    assignment.<feed>.<interval>.<engine>   {"engine", "feed", "interval", "engines", "symbols", "updated"}

Each engine puts its ``presence`` every ``shard_renew`` seconds. The bucket's ``max_age`` is
``shard_ttl``: the server removes the presence of an engine that stopped renewing (killed, frozen, cut
off) ``shard_ttl`` seconds after its last renewal, on the server's clock. Each engine keeps one watch open
on the presence keys of its feed and interval, and their latest values in memory, aged on the server's
clock as ``max_age`` ages them (``engine.bus.presence``: an expiry sends a watch nothing), so no two
machines' clocks are compared. Every ``shard_check`` seconds it reads that view (the live engines, itself
always among them; no request to the server) and computes the assignment of the feed's symbols over them
(``engine.bus.shards.assign``, rendezvous hashing: the same on every engine, and a departure moves only
the departed engine's symbols). It subscribes what it gained (each warmed up from the bars on the bus,
``engine.bus.bus_bars``, then the service's REST history to now) and unsubscribes what it lost, and
writes the result under its ``assignment`` key, renewed with its presence, for an operator to read.

So an engine killed at ``k`` has its symbols subscribed by the others by ``k + shard_ttl + shard_check``
(its last renewal was at most at ``k``; plus one delivery's latency on the watch, by which the view's
estimate of the server's clock trails it); their warm-up follows. An engine stopped by SIGTERM deletes
its keys: the others take over at their next check. Joining: a new engine takes its share at once; the
others give it up at their next check (meanwhile both publish it: the bus's de-duplication keeps one
copy). Every engine of a fleet must list the same symbols (``symbols`` in the presence is their count,
checked, with a warning, against one's own) and age presences alike (``ttl``, ``shard_ttl``, likewise).

While the bus is away the engine keeps the symbols it holds (the others may take them over meanwhile:
the same bars and signals, de-duplicated) and reconnects with the usual backoff; the view is rebuilt from
the new watch's initial values, never kept from before. A watch that stops delivering is a lost bus too:
each renewal of this engine's presence must come back on it within ``stall_s``, and a renewal stored
under a sequence the watch had already passed means the bucket's stream was recreated (its sequences
start again at 1, where the ordered consumer would resume after the last one it delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.bus.connection import BusError, BusSettings, connect
from engine.bus.presence import PresenceWatch
from engine.bus.shards import assign
from engine.feeds.backoff import Backoff

log = logging.getLogger("tickdeck.bus")

BUCKET = "TICKDECK_SHARDS"
OP_S = 5.0  # one request to the bucket
STALL_S = 4.0  # a renewal of this engine's presence not delivered by the watch within this: it stopped
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

Apply = Callable[[list[str], list[str]], Awaitable[None]]
"""``apply(gained, lost)``: subscribe ``gained``, unsubscribe ``lost``."""


def key_token(name: str) -> str:
    """``name`` as one token of a bucket key (KV keys allow ``[-/_=.a-zA-Z0-9]``; ``.`` separates)."""
    if name and all(c in _PLAIN for c in name):
        return name
    return "".join(c if c in _PLAIN else "".join(f"={b:02X}" for b in c.encode("utf-8")) for c in name) or "="


def presence_key(feed: str, interval: str, engine: str) -> str:
    return f"presence.{key_token(feed)}.{key_token(interval)}.{key_token(engine)}"


def assignment_key(feed: str, interval: str, engine: str) -> str:
    return f"assignment.{key_token(feed)}.{key_token(interval)}.{key_token(engine)}"


@dataclass(frozen=True)
class ShardTiming:
    ttl: float = 10.0  # bus.shard_ttl
    renew: float = 2.0  # bus.shard_renew
    check: float = 1.0  # bus.shard_check

    def checked(self) -> ShardTiming:
        if not self.renew < self.ttl:
            raise BusError(f"bus.shard_renew ({self.renew:g} s) must be less than bus.shard_ttl "
                           f"({self.ttl:g} s): an engine would expire between two renewals")
        return self

    @property
    def takeover_s(self) -> float:
        """From an engine's kill to its symbols subscribed by the others, at most."""
        return self.ttl + self.check


async def open_bucket(js: Any, ttl: float) -> Any:
    """The bucket, created (history 1, file storage, ``max_age`` ``ttl``) or its ``max_age`` set to
    ``ttl`` (the last engine to start sets it, as for the streams)."""
    from nats.js.errors import BucketNotFoundError

    try:
        kv = await js.key_value(BUCKET)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(bucket=BUCKET, ttl=ttl, history=1,
                                             description="tickdeck: engines and their symbols")
        except Exception:  # another engine created it meanwhile
            kv = await js.key_value(BUCKET)
    info = await js.stream_info(f"KV_{BUCKET}")
    config = info.config
    if config.max_age is None or abs(float(config.max_age) - ttl) > 1e-3:
        config.max_age = ttl
        config.duplicate_window = min(float(config.duplicate_window or ttl), ttl)
        await js.update_stream(config)
    return kv


def presence_pattern(feed: str, interval: str) -> str:
    """The watch's filter: every presence key of ``feed`` and ``interval``."""
    return presence_key(feed, interval, "")[:-1] + "*"  # (the "=" of the empty name)


class ShardKeeper:
    """This engine's share of its feed's symbols, kept with the others' in the bucket (module docstring).
    ``open`` connects and returns the first share; ``run`` keeps it; ``close`` withdraws."""

    def __init__(self, settings: BusSettings, *, feed: str, interval: str, engine: str,
                 symbols: Sequence[str], timing: ShardTiming, apply: Apply) -> None:
        self.settings = settings
        self.feed = feed
        self.interval = interval
        self.engine = engine
        self.universe = list(dict.fromkeys(symbols))
        self.timing = timing.checked()
        self.apply = apply
        self.held: list[str] = []
        self.engines: list[str] = [engine]
        self.started = time.time_ns()
        self.changes = 0  # reassignments applied
        self.taken = 0  # symbols gained after the first share
        self.given = 0  # symbols given up
        self.reconnects = 0
        self.state = "connecting"
        self._client: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._watch: PresenceWatch | None = None
        self._awaited: tuple[int, float] | None = None  # (revision, deadline): a renewal the watch owes
        self._renewed = -float("inf")
        self._warned: set[str] = set()

    @property
    def js(self) -> Any:
        """The JetStream context while connected (``engine.bus.bus_bars`` reads the bars with it)."""
        return self._js

    async def open(self) -> list[str]:
        """Connect, put this engine's presence, read the others': this engine's first share (``BusError``,
        one line, when the bucket cannot be used)."""
        await self._connect()
        try:
            await self._open_watch()
            assert self._watch is not None
            live = self._watch.view.live()
            self.engines = sorted({*live, self.engine})
            self.held = assign(self.universe, self.engines)[self.engine]
            await self._renew(force=True)
        except Exception as exc:
            await self.close()
            why = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise BusError(f"the bus at {self.settings.shown}: the bucket {BUCKET} cannot be used "
                           f"({why})") from None
        self.state = "live"
        log.info("shard: engine %s holds %d of %d symbols (engines: %s); takeover within %g s",
                 self.engine, len(self.held), len(self.universe), ", ".join(self.engines),
                 self.timing.takeover_s, extra={"event": "shard", "fields": self.fields()})
        return list(self.held)

    async def _connect(self, timeout: float | None = None) -> None:
        client = await connect(self.settings, timeout=timeout)
        js = client.jetstream(timeout=OP_S)
        try:
            kv = await open_bucket(js, self.timing.ttl)
        except Exception as exc:
            await client.close()
            why = f"{type(exc).__name__}: {exc}"
            raise BusError(f"the bus at {self.settings.shown} refused the bucket {BUCKET} ({why}); is "
                           "JetStream enabled (nats-server -js)?") from None
        self._client, self._js, self._kv = client, js, kv

    async def _open_watch(self) -> None:
        """Put this engine's presence, then open the watch: its initial values hold it (and so a recent
        store time for the view's clock) and every other engine's current presence."""
        await self._close_watch()
        await self._renew(force=True)
        watch = PresenceWatch(self._kv, presence_pattern(self.feed, self.interval), self.timing.ttl)
        try:
            self._watch = await watch.open(OP_S)
        except BaseException:
            await watch.close()
            raise

    async def _close_watch(self) -> None:
        watch, self._watch, self._awaited = self._watch, None, None
        if watch is not None:
            await watch.close()

    @property
    def stall_s(self) -> float:
        """How long a renewal may take to come back on the watch: short enough that a stopped watch is
        re-opened before a live engine's presence, no longer renewed in the view, ages out of it."""
        return min(STALL_S, (self.timing.ttl - self.timing.renew) / 2)

    async def _renew(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._renewed < self.timing.renew:
            return
        at = time.time_ns()
        presence = {"engine": self.engine, "feed": self.feed, "interval": self.interval,
                    "symbols": len(self.universe), "started": self.started, "renewed": at,
                    "ttl": self.timing.ttl}
        assignment = {"engine": self.engine, "feed": self.feed, "interval": self.interval,
                      "engines": self.engines, "symbols": self.held, "updated": at}
        watch = self._watch
        passed = watch.revision if watch is not None else 0
        revision = await self._kv.put(presence_key(self.feed, self.interval, self.engine),
                                      json.dumps(presence).encode())
        if watch is not None and watch is self._watch:
            if revision <= passed:
                raise BusError(f"the bucket {BUCKET} was recreated (a new presence stored as {revision}, "
                               f"the watch had passed {passed})")
            if self._awaited is None:  # (the oldest one owed: a stopped watch is noticed by its deadline)
                self._awaited = (revision, time.monotonic() + self.stall_s)
        await self._kv.put(assignment_key(self.feed, self.interval, self.engine),
                           json.dumps(assignment).encode())
        self._renewed = now

    async def run(self) -> None:
        """Renew and check until cancelled; a lost bus is reconnected with backoff, forever."""
        backoff = Backoff(0.25, max(self.settings.max_backoff, 0.25))
        while True:
            try:
                await self._renew()
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._lost(exc, backoff)
                continue
            backoff.reset()
            wait = min(self.timing.check, max(self._renewed + self.timing.renew - time.monotonic(), 0.0))
            await asyncio.sleep(wait)

    def warn_about(self, live: dict[str, dict[str, Any]]) -> None:
        """Warn, once per engine, of settings that must agree across a feed's engines and do not."""
        twin = live.get(self.engine, {}).get("started", self.started)
        if twin != self.started and self.engine not in self._warned:
            self._warned.add(self.engine)
            log.warning("shard: another engine runs under the name %s (started at %s): engine names must be "
                        "unique (bus.engine), or both hold the same share", self.engine, twin)
        for name, value in live.items():
            if name in self._warned:
                continue
            if value.get("symbols") != len(self.universe):
                self._warned.add(name)
                log.warning("shard: engine %s lists %s symbols of %s %s, this one %d: the engines of a feed "
                            "must list the same symbols, or some are held twice or by none", name,
                            value.get("symbols"), self.feed, self.interval, len(self.universe))
            elif (ttl := value.get("ttl", self.timing.ttl)) != self.timing.ttl:  # (none: an older engine)
                self._warned.add(name)
                log.warning("shard: engine %s ages presences at bus.shard_ttl %s s, this one at %g s: the "
                            "bucket removes presences at the last started engine's, so engines with "
                            "another take over early or late; give every engine the same", name, ttl,
                            self.timing.ttl)

    def _live(self) -> dict[str, dict[str, Any]]:
        """The live engines from the watch's view: memory only; ``BusError`` if the watch stopped."""
        watch = self._watch
        if self._client is not None and self._client.is_closed:  # (nats-py does not reconnect it)
            raise BusError("the connection closed")
        if watch is None or not watch.alive:
            raise BusError(f"the watch on the bucket {BUCKET} stopped")
        if self._awaited is not None:
            revision, deadline = self._awaited
            if watch.revision >= revision:
                self._awaited = None
            elif time.monotonic() > deadline:
                raise BusError(f"the watch on the bucket {BUCKET} did not deliver this engine's presence "
                               f"within {self.stall_s:g} s")
        return watch.view.live()

    async def check(self) -> None:
        """Read the live engines (the watch's view, in memory); apply and record a changed assignment."""
        live = self._live()
        self.warn_about(live)
        engines = sorted({*live, self.engine})
        mine = assign(self.universe, engines)[self.engine]
        if engines == self.engines and mine == self.held:
            return
        keep = set(mine)
        had = set(self.held)
        gained = [s for s in mine if s not in had]
        lost = [s for s in self.held if s not in keep]
        left, joined = sorted(set(self.engines) - set(engines)), sorted(set(engines) - set(self.engines))
        self.engines, self.held = engines, mine  # (what ``apply`` reads as the share)
        if gained or lost:
            try:
                await self.apply(gained, lost)
            except Exception as exc:  # the feed's own reconnection subscribes what it was told to
                log.warning("shard: applying the new share failed (%s: %s); the feed carries on with it",
                            type(exc).__name__, exc)
            self.changes += 1
            self.taken += len(gained)
            self.given += len(lost)
        await self._renew(force=True)
        gone = f"; gone: {', '.join(left)}" if left else ""
        new = f"; joined: {', '.join(joined)}" if joined else ""
        fields = {**self.fields(), "took": gained[:100], "gave": lost[:100], "gone": left, "joined": joined}
        log.info("shard: engine %s holds %d of %d symbols (engines: %s%s%s): took %d, gave %d", self.engine,
                 len(mine), len(self.universe), ", ".join(engines), gone, new, len(gained), len(lost),
                 extra={"event": "shard", "fields": fields})

    async def _lost(self, exc: BaseException, backoff: Backoff) -> None:
        if self.state == "live":
            log.warning("shard: the bus at %s is lost (%s); keeping %d symbols, reconnecting with backoff",
                        self.settings.shown, f"{type(exc).__name__}: {exc}".rstrip(": "), len(self.held))
        self.state = "reconnecting"
        await self._disconnect()
        while True:
            delay = backoff.next()
            await asyncio.sleep(delay)
            try:
                await self._connect(timeout=min(self.settings.connect_timeout, max(delay, 1.0)))
                await self._open_watch()  # a view rebuilt from the server's values, never the one from before
            except Exception as exc2:
                why = f"{type(exc2).__name__}: {exc2}".rstrip(": ")
                log.info("shard: %s; trying again", exc2 if isinstance(exc2, BusError) else
                         f"the bus at {self.settings.shown}: the watch on {BUCKET} cannot be opened ({why})")
                await self._disconnect()
                continue
            break
        self.reconnects += 1
        self.state = "live"
        log.info("shard: the bus at %s is back", self.settings.shown)

    async def _disconnect(self) -> None:
        await self._close_watch()
        client, self._client, self._js, self._kv = self._client, None, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    async def close(self, timeout: float = 1.0) -> None:
        """Withdraw (delete this engine's keys: the others take over at their next check) and disconnect."""
        await self._close_watch()
        client, kv = self._client, self._kv
        self._client = self._js = self._kv = None
        self.state = "closed"
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._withdraw(kv), timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout)

    async def _withdraw(self, kv: Any) -> None:
        await kv.delete(presence_key(self.feed, self.interval, self.engine))
        await kv.delete(assignment_key(self.feed, self.interval, self.engine))

    def fields(self) -> dict[str, Any]:
        return {"engine": self.engine, "feed": self.feed, "interval": self.interval, "held": len(self.held),
                "symbols": len(self.universe), "engines": list(self.engines)}

    def stats(self) -> dict[str, Any]:
        return {"shard": "auto", "state": self.state, "held": len(self.held), "symbols": len(self.universe),
                "engines": list(self.engines), "changes": self.changes, "taken": self.taken,
                "given": self.given, "reconnects": self.reconnects}
