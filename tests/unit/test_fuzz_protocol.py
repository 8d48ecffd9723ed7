"""Fuzzing both ends of the signal broadcast: the server's handling of client messages, and the attached
console's decoding of the server's frames.

Server side: a ``BroadcastSink`` serving on 127.0.0.1 (in a thread with its own event loop) gets random
bytes and text, random JSON, JSON nested past the recursion limit and valid ``subscribe``/``ping``
messages with one field replaced, from a real WebSocket client; after every message the client pings
and must get its pong, so a handler that died (close code 1011) or a writer that died (no pong) fails
the test. ``_take`` is also fuzzed directly, many more times, with a stand-in connection.

Client side: ``RemoteRuntime._take`` gets the same kinds of input, derived from valid ``hello``,
``snapshot``, ``signal``, ``status`` and ``error`` frames: it must count a frame it cannot use and never
raise, and what it hands on must be well-typed. The tests over a real connection come last: the
server's thread (kept for the rest of the module) draws from the global ``random`` for its pings, which
hypothesis would report as randomness inside a strategy of whatever test ran meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from engine.feeds.base import FeedStatus
from engine.remote import RemoteRuntime
from engine.signals.events import Signal
from engine.sinks.broadcast import MAX_BAD_MESSAGES, BroadcastSink
from engine.sinks.clients import Client
from engine.snapshot import MarketSnapshot, PipelineHealth, Update
from tests.fuzz_settings import deep_json, dumps, fuzz, invalid_utf8, json_values, mutated, tried

SUBSCRIBE: dict[str, Any] = {"op": "subscribe", "symbols": ["AAA", "BBB"], "rules": None, "snapshots": True}
PING: dict[str, Any] = {"op": "ping", "id": 7}
REPLIES = {"error", "pong", "subscribed", "snapshot", "status", "signal", "hello"}


def client_messages() -> st.SearchStrategy[str | bytes]:
    return st.one_of(st.binary(max_size=200), st.text(max_size=200), json_values.map(dumps), deep_json,
                     st.sampled_from([SUBSCRIBE, PING]).flatmap(mutated),
                     st.sampled_from([SUBSCRIBE, PING]).flatmap(invalid_utf8))


def _sent(ws: ClientConnection, raw: str | bytes) -> None:
    if isinstance(raw, str):
        try:
            raw.encode()
        except UnicodeEncodeError:  # a text frame must be UTF-8: send the lone surrogate as bytes
            raw = raw.encode("utf-8", "surrogatepass")
    ws.send(raw)


# --- the attached console's decoding ---------------------------------------------------------------------

QUOTE: dict[str, Any] = {"symbol": "AAA", "last": 101.5, "change": 1.5, "change_pct": 1.5, "volume": 10.0,
                         "closes": [100.0, None, 101.5], "values": {"rsi_14": 55.0, "ema_20": None},
                         "bar_time": 1_800_000_000}
SERVER_FRAMES: list[dict[str, Any]] = [
    {"type": "hello", "protocol": 1, "feed": "sim", "symbols": ["AAA", "BBB"], "outputs": ["rsi_14"],
     "interval": "1m", "fps": 10.0},
    {"type": "snapshot", "at_ns": 1_800_000_000_000, "ticks": 10, "bars": 1, "quotes": [QUOTE],
     "health": {"queue_depth": 1, "dropped": 0}},
    {"type": "signal", "symbol": "AAA", "rule": "r1", "direction": "up", "bar_time": 1_800_000_000,
     "price": 101.5, "values": {"rsi_14": 29.5, "level": None}, "detected_ns": 1_800_000_001},
    {"type": "status", "feed": "binance", "state": "reconnecting", "reason": "closed", "retry_in": 1.5,
     "at_ns": 1_800_000_000, "symbols": ["AAA"]},
    {"type": "error", "error": "bad_message", "message": "not JSON"},
    {"type": "subscribed", "symbols": None, "rules": None, "snapshots": True},
    {"type": "symbols", "symbols": ["AAA", "CCC"], "added": ["CCC"], "removed": ["BBB"]},
]


def server_frames() -> st.SearchStrategy[str | bytes]:
    frames = st.sampled_from(SERVER_FRAMES)
    return st.one_of(st.binary(max_size=200), st.text(max_size=200), json_values.map(dumps), deep_json,
                     frames.flatmap(mutated), frames.map(dumps), frames.flatmap(invalid_utf8))


def _is_object(raw: str | bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


@fuzz(500)
@given(raws=st.lists(server_frames(), min_size=1, max_size=4))
def test_fuzz_attach_frames(raws: list[str | bytes]) -> None:
    tried("test_fuzz_attach_frames")
    remote = RemoteRuntime("ws://127.0.0.1:9")
    updates: list[Update] = []
    statuses: list[FeedStatus] = []
    for raw in raws:
        counters = remote.feed.counters
        bad, messages = counters.bad_total, counters.messages
        remote._take(raw, updates.append, statuses.append)
        assert counters.messages == messages + 1
        if not _is_object(raw):
            assert counters.bad_total == bad + 1
    for update in updates:
        assert isinstance(update, Update)
        if update.snapshot is not None:
            assert isinstance(update.snapshot, MarketSnapshot) and isinstance(update.snapshot.at_ns, int)
            for q in update.snapshot.quotes:
                assert q.closes.dtype.kind == "f" and not q.closes.flags.writeable
                assert isinstance(q.bar_time, int) and all(isinstance(v, float) for v in q.values.values())
        assert update.health is None or isinstance(update.health, PipelineHealth)
        for signal in update.signals:
            assert isinstance(signal, Signal) and signal.direction in ("up", "down")
    for status in statuses:
        assert status.feed == "attach" and isinstance(status.reason, str)
    assert all(isinstance(s, str) for s in remote.watch)


@pytest.mark.parametrize("raw", [
    '{"type": "snapshot", "at_ns": Infinity, "quotes": []}',
    '{"type": "snapshot", "at_ns": 1, "quotes": [{"symbol": "A", "last": 1, "change": 1, "change_pct": 1, '
    '"volume": 1, "closes": [' + "9" * 400 + '], "values": {}, "bar_time": 1}]}',
    '{"type": "signal", "symbol": "A", "rule": "r", "direction": "up", "bar_time": -Infinity, "price": 1, '
    '"values": {}, "detected_ns": 1}',
    "[" * 5000 + "]" * 5000,
])
def test_attach_counts_overflowing_or_deep_frames(raw: str) -> None:
    """Regression: Infinity or a 400-digit number where an int or float goes raised OverflowError out of
    ``_take``, and deep nesting RecursionError; either ended the attached console's connection loop."""
    remote = RemoteRuntime("ws://127.0.0.1:9")
    updates: list[Update] = []
    remote._take(raw, updates.append, lambda s: None)
    assert updates == [] and remote.feed.counters.bad_total == 1


# --- the server's message handling, directly ------------------------------------------------------------

class _FakeConnection:
    remote_address = ("127.0.0.1", 1)


@fuzz(600)
@given(raws=st.lists(client_messages(), min_size=1, max_size=4))
def test_fuzz_broadcast_take(raws: list[str | bytes]) -> None:
    tried("test_fuzz_broadcast_take")
    sink = BroadcastSink("127.0.0.1", 0)
    client = Client(_FakeConnection(), 1)  # type: ignore[arg-type]
    for raw in raws:
        bad = sink.bad_messages
        sink._take(client, raw)
        assert client.bad <= MAX_BAD_MESSAGES and not client.gone
        reply = json.loads(client.queue.pop())
        if reply["type"] == "error":
            assert sink.bad_messages == bad + 1
        else:
            assert reply["type"] in ("pong", "subscribed") and sink.bad_messages == bad
        assert not client.queue
    for text in [*client.queue, client.frame or "{}"]:  # what the writer will send: UTF-8 text
        text.encode()


# --- the server, over a real connection --------------------------------------------------------------------

class Served:
    """A ``BroadcastSink`` on 127.0.0.1 run by an event loop in a thread, and one client connection."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-broadcast", daemon=True)
        self.thread.start()
        self.sink = BroadcastSink("127.0.0.1", 0)
        self._call(self._start())
        self.ws: ClientConnection | None = None
        self.probe = 0
        self.reconnects = 0
        self._stack = contextlib.ExitStack()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _start(self) -> None:
        self.sink.start()
        await self.sink.started()

    def connection(self, fresh: bool = False) -> ClientConnection:
        """The client connection; ``fresh``: a new one (its count of bad messages starts at 0)."""
        if fresh and self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.ws is None:
            self.ws = self._stack.enter_context(connect(self.sink.url, open_timeout=5, close_timeout=1))
            assert json.loads(self.ws.recv(timeout=5))["type"] == "hello"
        return self.ws

    def close(self) -> None:
        self._stack.close()
        self._call(self.sink.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    s = Served()
    try:
        yield s
    finally:
        s.close()


@fuzz(150)
@given(raws=st.lists(client_messages(), min_size=1, max_size=3))
def test_fuzz_broadcast_server_over_a_connection(served: Served, raws: list[str | bytes]) -> None:
    tried("test_fuzz_broadcast_server_over_a_connection")
    ws = served.connection()
    served.probe += 1
    probe = f"probe-{served.probe}"
    try:
        for raw in raws:
            _sent(ws, raw)
        ws.send(json.dumps({"op": "ping", "id": probe}))
        while True:
            frame = json.loads(ws.recv(timeout=5))
            assert isinstance(frame, dict) and frame.get("type") in REPLIES, frame
            if frame["type"] == "error":
                assert frame["error"] == "bad_message" and frame["message"]
            if frame["type"] == "pong" and frame["id"] == probe:
                break
    except ConnectionClosed as exc:  # only the documented policy close, after too many bad messages
        served.ws = None
        served.reconnects += 1
        assert exc.rcvd is not None and exc.rcvd.code == 1008, exc


@pytest.mark.parametrize("raw", [
    '{"op": "ping", "id": NaN}', '{"op": "ping", "id": 1e400}', '{"op": "ping", "id": "\\ud800"}',
    '{"op": "subscribe", "symbols": ["\\udfff"]}', '{"op": "subscribe", "rules": ["ok", "\\ud800x"]}',
    "[" * 5000 + "]" * 5000,
])
def test_broadcast_answers_unsendable_or_deep_messages_with_an_error(served: Served, raw: str) -> None:
    """Regression: a ping id of NaN or Infinity made ``dumps`` raise ValueError in the handler (the
    connection closed with 1011); a lone surrogate in a ping id or a subscribed name was queued and
    killed the client's writer at ``send`` (UnicodeEncodeError: the client got nothing more); deep
    nesting raised RecursionError in the handler."""
    ws = served.connection(fresh=True)
    before = served.sink.bad_messages
    ws.send(raw)
    ws.send(json.dumps({"op": "ping", "id": "after"}))
    error = json.loads(ws.recv(timeout=5))
    assert error["type"] == "error" and error["error"] == "bad_message"
    assert json.loads(ws.recv(timeout=5)) == {"type": "pong", "id": "after"}
    assert served.sink.bad_messages == before + 1
