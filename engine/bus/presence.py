"""The live engines of one feed and interval as this engine sees them: one key-value watch on their
presence keys, kept open, and the latest presence of each engine kept in memory and aged here.

Why one watch kept open: each ``kv.watch`` is an ephemeral JetStream consumer, created and deleted by
the cluster's meta leader; opening one per check made ``shard_check`` cost a consumer creation a second
per engine. Kept open, it costs one at start (and one at each re-open).

Why the presences are aged here: the bucket's ``max_age`` removes an expired message silently. A watch
sees no delete marker for it: the server writes one only for a stream with ``subject_delete_marker_ttl``
set (KV "limit markers", nats-server 2.11+, ADR-48 of nats-io/nats-architecture-and-design; nats-py turns
such a marker, ``Nats-Marker-Reason: MaxAge``, into a purge), and the bucket is created without it, so a
long-lived watch would keep a dead engine forever. So :class:`PresenceView` drops a presence once its
age reaches ``ttl``, the bucket's ``max_age``: when the server removes it.

Whose clock: the age is measured on the server's clock, as ``max_age`` is. Each entry carries its
message's store time (nats-py's ``Entry.created``: the time stamp of the delivery's ack subject, which
nats-server fills from the stored message, ``consumer.go`` ``deliverMsg``; nats-py's docstring calls it
the delivery time, the server's source says otherwise). The server's "now" is estimated as the newest
store time seen plus the time elapsed since it was received (local ``time.monotonic``: only durations of
this machine's clock are used, never its wall clock against the server's). Each delivery comes after its
store, so the estimate trails the server's clock by one delivery's latency at most: a presence is
dropped at most that late (milliseconds), never early. The engine's own renewal, every ``shard_renew``
seconds, keeps the estimate fresh.

Delete and purge markers (an engine withdrawing on SIGTERM, an operator's ``nats kv del``) remove an
engine at once. The view holds one record per presence key of the feed and interval: the live engines
and those gone within ``ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tickdeck.bus")

DELETE, PURGE = "DEL", "PURGE"  # nats-py's KV_DEL and KV_PURGE (``Entry.operation``)


@dataclass(frozen=True)
class Presence:
    value: dict[str, Any]
    stored_ns: int  # the message's store time, on the server's clock
    received: float  # when it reached this view, on this machine's monotonic clock (s)


class PresenceView:
    """The latest presence under each key, aged on the server's clock (module docstring)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_ns = round(ttl * 1e9)
        self.clock = clock
        self.records: dict[str, Presence] = {}

    def update(self, key: str, value: bytes | None, stored_ns: int, operation: str | None = None) -> None:
        """One entry of the watch: a put replaces the key's presence; a delete or a purge marker, or a
        value that cannot be read, removes it."""
        if operation in (DELETE, PURGE) or not value:
            self.records.pop(key, None)
            return
        try:
            presence = json.loads(value)
            str(presence["engine"])
        except (ValueError, KeyError, TypeError):
            log.debug("bus: an unreadable presence %s skipped", key)
            self.records.pop(key, None)
            return
        self.records[key] = Presence(presence, stored_ns, self.clock())

    def server_now_ns(self) -> int | None:
        """The server's clock now, estimated from the entries held (module docstring); ``None`` if none."""
        if not self.records:
            return None
        now = self.clock()
        return max(p.stored_ns + round((now - p.received) * 1e9) for p in self.records.values())

    def live(self) -> dict[str, dict[str, Any]]:
        """The presence values younger than ``ttl``, by engine name; the older ones are dropped."""
        now = self.server_now_ns()
        if now is None:
            return {}
        for key in [k for k, p in self.records.items() if now - p.stored_ns >= self.ttl_ns]:
            del self.records[key]
        return {str(p.value["engine"]): p.value for p in self.records.values()}

    def clear(self) -> None:
        self.records.clear()


def stored_ns(created: Any) -> int:
    """``Entry.created`` (a UTC datetime in nats-py) in nanoseconds since the epoch."""
    if isinstance(created, dt.datetime):
        return round(created.timestamp() * 1e9)
    return int(created or 0)


class PresenceWatch:
    """One watch on ``pattern`` feeding a fresh :class:`PresenceView`. ``open`` returns once the current
    values are in (the watch's initial values, then the marker nats-py sends after them); a task then
    applies every update as it comes. ``revision`` is the highest stream sequence delivered, for the
    keeper's check that the watch still delivers (``ShardKeeper``)."""

    def __init__(self, kv: Any, pattern: str, ttl: float) -> None:
        self.kv = kv
        self.pattern = pattern
        self.view = PresenceView(ttl)
        self.revision = 0
        self.ready = False
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, timeout: float) -> PresenceWatch:
        # every key's last message, deletes included (a key's last message may be its delete marker);
        # include_history would replay older values the view would only overwrite
        self._watcher = await self.kv.watch(self.pattern)
        self._task = asyncio.create_task(self._read(), name="shard-presence-watch")
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self._task.done():
                self._task.result()  # its exception, if it failed
                raise RuntimeError("the presence watch ended before its initial values")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the presence watch gave no initial values within {timeout:g} s")
            await asyncio.sleep(0.005)
        return self

    async def _read(self) -> None:
        async for entry in self._watcher:  # ends when the watcher is stopped
            if entry is None:  # nats-py: the initial values are all delivered
                self.ready = True
                continue
            self.view.update(entry.key, entry.value, stored_ns(entry.created), entry.operation)
            self.revision = max(self.revision, int(entry.revision or 0))

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher.stop(), 1.0)
        self.view.clear()
        self.ready = False
