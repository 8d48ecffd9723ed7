"""The presence view of ``--shard auto`` without a server: presences aged on the server's clock as the
bucket's ``max_age`` ages them (an expiry sends a watch nothing), delete and purge markers, and a view
rebuilt from the initial values of a re-opened watch, never kept from the one before."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest

from engine.bus.connection import BusError, settings_from
from engine.bus.presence import PresenceView, PresenceWatch, stored_ns
from engine.bus.shard_keeper import ShardKeeper, ShardTiming, presence_key, presence_pattern

S = 10**9


class Clock:
    """This machine's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def presence(engine: str, symbols: int = 3) -> bytes:
    return json.dumps({"engine": engine, "symbols": symbols, "started": 1}).encode()


def test_a_presence_ages_on_the_servers_clock_and_goes_when_max_age_would_remove_it() -> None:
    clock = Clock()
    view = PresenceView(ttl=10.0, clock=clock)
    server = 5_000 * S  # the server's clock, far from this machine's: only durations are compared
    view.update("presence.f.i.a", presence("a"), server - 9 * S)  # an initial value, put 9 s ago
    view.update("presence.f.i.me", presence("me"), server)  # this engine's own, just put
    assert sorted(view.live()) == ["a", "me"]
    clock.now += 0.999
    assert sorted(view.live()) == ["a", "me"]  # 9.999 s old
    clock.now += 0.001
    assert sorted(view.live()) == ["me"]  # 10 s: the server's max_age removes it now, silently
    assert list(view.records) == ["presence.f.i.me"]  # dropped, not only hidden
    clock.now += 9.0
    view.update("presence.f.i.me", presence("me"), server + 9 * S + S // 100)  # renewed (10 ms latency)
    clock.now += 9.5
    assert sorted(view.live()) == ["me"]


def test_the_estimate_of_the_servers_clock_never_runs_ahead() -> None:
    """A slow delivery (an entry received long after its store) cannot make others look older: the
    estimate is the best of the entries held, each a lower bound of the server's clock."""
    clock = Clock()
    view = PresenceView(ttl=10.0, clock=clock)
    view.update("presence.f.i.a", presence("a"), 100 * S)
    view.update("presence.f.i.b", presence("b"), 95 * S)  # stored 5 s before a, delivered only now
    assert view.server_now_ns() == 100 * S
    clock.now += 4.0
    assert view.server_now_ns() == 104 * S
    assert sorted(view.live()) == ["a", "b"]  # b is 9 s old
    clock.now += 1.0
    assert sorted(view.live()) == ["a"]


@pytest.mark.parametrize("operation", ["DEL", "PURGE"])
def test_delete_and_purge_markers_remove_an_engine_at_once(operation: str) -> None:
    view = PresenceView(ttl=10.0, clock=Clock())
    view.update("presence.f.i.a", presence("a"), 100 * S)
    view.update("presence.f.i.b", presence("b"), 100 * S)
    view.update("presence.f.i.a", b"", 100 * S + 1, operation)  # a marker has no value
    assert sorted(view.live()) == ["b"]
    view.update("presence.f.i.c", None, 100 * S, operation)  # a marker for a key never seen
    assert sorted(view.live()) == ["b"]


def test_an_unreadable_presence_replaces_the_keys_last_one() -> None:
    view = PresenceView(ttl=10.0, clock=Clock())
    view.update("presence.f.i.a", presence("a"), 100 * S)
    view.update("presence.f.i.a", b"{not json", 101 * S)
    view.update("presence.f.i.b", b'{"no": "engine"}', 101 * S)
    assert view.live() == {}


def test_the_store_time_of_an_entry() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=dt.UTC)
    assert stored_ns(when) == round(when.timestamp() * S)
    assert stored_ns(None) == 0


# --- the watch, on a stand-in for nats-py's KeyWatcher ---------------------------------------------------

@dataclass
class Entry:  # nats-py's KeyValue.Entry, the fields the view reads
    key: str
    value: bytes | None
    revision: int
    created: dt.datetime
    operation: str | None = None


class Watcher:
    """nats-py's KeyWatcher: the initial values, then ``None``, then the updates; ``stop`` ends it."""

    STOP = object()

    def __init__(self, initial: list[Entry]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        for entry in [*initial, None]:
            self.queue.put_nowait(entry)
        self.stopped = False

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Any:
        entry = await self.queue.get()
        if entry is Watcher.STOP:
            raise StopAsyncIteration
        return entry

    async def stop(self) -> None:
        self.stopped = True
        self.queue.put_nowait(Watcher.STOP)


class Bucket:
    """A key-value bucket as the keeper uses it: ``put`` returns the stream sequence, ``watch`` opens a
    :class:`Watcher` on the keys' current values."""

    def __init__(self) -> None:
        self.values: dict[str, Entry] = {}
        self.seq = 0
        self.watchers: list[Watcher] = []

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def put(self, key: str, value: bytes) -> int:
        self.seq += 1
        entry = Entry(key, value, self.seq, self.now())
        self.values[key] = entry
        for watcher in self.watchers:
            if key.startswith("presence.") and not watcher.stopped:
                watcher.queue.put_nowait(entry)
        return self.seq

    async def delete(self, key: str) -> None:
        self.seq += 1
        self.values[key] = Entry(key, None, self.seq, self.now(), "DEL")
        for watcher in self.watchers:
            watcher.queue.put_nowait(self.values[key])

    async def watch(self, pattern: str) -> Watcher:
        prefix = pattern.rstrip("*")
        watcher = Watcher([e for k, e in sorted(self.values.items()) if k.startswith(prefix)])
        self.watchers.append(watcher)
        return watcher


def at(bucket: Bucket, key: str, engine: str) -> None:
    bucket.seq += 1
    bucket.values[key] = Entry(key, presence(engine), bucket.seq, bucket.now())


async def test_a_reopened_watch_rebuilds_the_view_from_its_initial_values() -> None:
    bucket = Bucket()
    pattern = presence_pattern("f", "1m")
    for name in ("a", "b"):
        at(bucket, presence_key("f", "1m", name), name)
    at(bucket, presence_key("other", "1m", "z"), "z")  # another feed's engine: not in this view
    first = await PresenceWatch(bucket, pattern, ttl=10.0).open(timeout=5.0)
    assert sorted(first.view.live()) == ["a", "b"] and first.revision == 2
    await bucket.put(presence_key("f", "1m", "c"), presence("c"))
    await asyncio.wait_for(_until(lambda: "c" in first.view.live()), 5.0)
    await first.close()  # the bus lost: meanwhile b withdrew and c's key was removed without a marker
    assert first.view.live() == {} and bucket.watchers[0].stopped and not first.alive
    bucket.values.pop(presence_key("f", "1m", "b"))
    bucket.values.pop(presence_key("f", "1m", "c"))
    second = await PresenceWatch(bucket, pattern, ttl=10.0).open(timeout=5.0)
    assert sorted(second.view.live()) == ["a"]  # nothing kept from before the re-read
    await bucket.delete(presence_key("f", "1m", "a"))
    await asyncio.wait_for(_until(lambda: second.view.live() == {}), 5.0)
    await second.close()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def test_a_watch_that_stopped_or_a_recreated_bucket_is_a_lost_bus() -> None:
    """The keeper reads memory only, so it must notice a watch that no longer delivers: the watch's end,
    or a renewal of its own presence stored under a sequence the watch had already passed (the bucket's
    stream recreated: its sequences start again)."""
    bucket = Bucket()

    async def apply(gained: list[str], lost: list[str]) -> None:
        pass

    keeper = ShardKeeper(settings_from("nats://127.0.0.1:9"), feed="f", interval="1m", engine="me",
                         symbols=["A", "B"], timing=ShardTiming(ttl=3.0, renew=0.5, check=0.5), apply=apply)
    keeper._kv = bucket
    await keeper._open_watch()
    await keeper.check()
    assert keeper.engines == ["me"] and keeper.held == ["A", "B"]
    bucket.seq = 0  # the stream deleted and created again
    with pytest.raises(BusError, match="was recreated"):
        await keeper._renew(force=True)
    assert keeper._watch is not None
    await keeper._watch.close()  # the watch ends (its subscription closed with the connection)
    with pytest.raises(BusError, match="the watch on the bucket TICKDECK_SHARDS stopped"):
        await keeper.check()
    await keeper._close_watch()


async def test_a_watch_that_stops_delivering_is_a_lost_bus_before_a_live_engine_could_age_out() -> None:
    bucket = Bucket()

    async def apply(gained: list[str], lost: list[str]) -> None:
        pass

    timing = ShardTiming(ttl=1.0, renew=0.2, check=0.1)
    keeper = ShardKeeper(settings_from("nats://127.0.0.1:9"), feed="f", interval="1m", engine="me",
                         symbols=["A"], timing=timing, apply=apply)
    keeper._kv = bucket
    await keeper._open_watch()
    assert keeper.stall_s == pytest.approx(0.4)  # half the margin between a renewal and the expiry
    for watcher in bucket.watchers:
        watcher.stopped = True  # (the stand-in delivers nothing more: an ordered consumer gone silent)
    await keeper._renew(force=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BusError, match=r"did not deliver this engine's presence within 0\.4 s"):
        while loop.time() - started < 5.0:
            await keeper.check()
            await asyncio.sleep(0.01)
    await keeper._close_watch()


def test_settings_that_must_agree_across_engines_are_warned_of_once_each(
        caplog: pytest.LogCaptureFixture) -> None:
    async def apply(gained: list[str], lost: list[str]) -> None:
        pass

    keeper = ShardKeeper(settings_from("nats://127.0.0.1:9"), feed="f", interval="1m", engine="me",
                         symbols=["A", "B", "C"], timing=ShardTiming(ttl=10.0), apply=apply)
    me = {"engine": "me", "symbols": 3, "started": keeper.started, "ttl": 10.0}
    live = {"me": me,
            "same": {"engine": "same", "symbols": 3, "started": 1, "ttl": 10.0},
            "older": {"engine": "older", "symbols": 3, "started": 1},  # (before presences carried a ttl)
            "fewer": {"engine": "fewer", "symbols": 2, "started": 1, "ttl": 10.0},
            "slower": {"engine": "slower", "symbols": 3, "started": 1, "ttl": 30.0}}
    with caplog.at_level("WARNING", logger="tickdeck.bus"):
        keeper.warn_about(live)
        keeper.warn_about(live)  # each once
        keeper.warn_about({**live, "me": {**me, "started": keeper.started + 1}})  # a second "me"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "engine fewer lists 2 symbols of f 1m, this one 3" in lines[0]
    assert "engine slower ages presences at bus.shard_ttl 30.0 s, this one at 10 s" in lines[1]
    assert "another engine runs under the name me" in lines[2]
