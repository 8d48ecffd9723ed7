"""The ``websocket`` sink: a real server on 127.0.0.1 and real WebSocket clients (the ``websockets``
client, as any subscriber would use it). Signals in order to every client, per-client filters, a slow
client cut off without holding up the others, token checks, malformed messages, coalesced snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine import headless
from engine.config import CONFIG_DIR_VAR, load_config
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.remote import AttachError, RemoteRuntime
from engine.signals.events import Signal
from engine.sinks import broadcast
from engine.sinks import config as sink_config
from engine.sinks.base import SignalFilter
from engine.sinks.broadcast import BroadcastSink
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote, Update
from tests.data import BUSY_RULE

T0 = 1_800_000_000_000_000_000
TOKEN = "s3cret-t0ken-of-24-chars"
WAIT_S = 10.0


def make_signal(i: int, symbol: str = "AAA", rule: str = "r1", pad: int = 0) -> Signal:
    values = {"rsi_14": 29.5, "level": 30.0, **{f"pad_{k}": float(k) for k in range(pad)}}
    return Signal(symbol=symbol, rule=rule, direction="up", bar_time=T0 + i, price=100.0 + i, values=values,
                  detected_ns=T0 + i)


def make_quote(symbol: str, last: float, closes: int = 5) -> Quote:
    series = np.linspace(last - 1.0, last, closes)
    series.flags.writeable = False
    return Quote(symbol=symbol, last=last, change=1.0, change_pct=1.0, volume=10.0, closes=series,
                 values={"rsi_14": 55.0, "ema_20": float("nan")}, bar_time=T0)


def make_snapshot(i: int, symbols: tuple[str, ...] = ("AAA", "BBB"), closes: int = 5) -> MarketSnapshot:
    return MarketSnapshot(at_ns=T0 + i, quotes=tuple(make_quote(s, 100.0 + i, closes) for s in symbols),
                          ticks=10 * i, bars=i)


@contextlib.asynccontextmanager
async def serving(**kw: Any) -> AsyncIterator[BroadcastSink]:
    sink = BroadcastSink("127.0.0.1", 0, **kw)
    sink.start()
    await sink.started()
    try:
        yield sink
    finally:
        await sink.close(1.0)


async def recv(ws: ClientConnection, timeout: float = WAIT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout):  # not wait_for, which can swallow a cancellation on 3.11
        frame = json.loads(await ws.recv())
    assert isinstance(frame, dict)
    return frame


async def recv_type(ws: ClientConnection, kind: str, timeout: float = WAIT_S) -> dict[str, Any]:
    """The next frame of type ``kind`` (frames of other types are skipped)."""
    while (frame := await recv(ws, timeout))["type"] != kind:
        pass
    return frame


@contextlib.asynccontextmanager
async def client(sink: BroadcastSink, subscribe: dict[str, Any] | None = None,
                 **kw: Any) -> AsyncIterator[ClientConnection]:
    """A connected client that has read its hello (and, with ``subscribe``, the server's reply)."""
    async with connect(kw.pop("url", sink.url), open_timeout=5, compression=None, **kw) as ws:
        hello = await recv(ws)
        assert hello["type"] == "hello" and hello["protocol"] == broadcast.PROTOCOL
        if subscribe is not None:
            await ws.send(json.dumps({"op": "subscribe", **subscribe}))
            await recv_type(ws, "subscribed")
        yield ws


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def signals_of(ws: ClientConnection, n: int) -> list[int]:
    """The next ``n`` signals' indices (their ``detected_ns - T0``)."""
    return [(await recv_type(ws, "signal"))["detected_ns"] - T0 for _ in range(n)]


async def test_every_client_receives_every_signal_in_order() -> None:
    async with serving() as sink:
        sink.set_source("sim", ("AAA", "BBB"), ("rsi_14",), "1s")
        async with client(sink) as a, client(sink) as b, client(sink) as c:
            for i in range(200):
                sink.deliver(make_signal(i))
            got = await asyncio.gather(*(signals_of(ws, 200) for ws in (a, b, c)))
            assert got == [list(range(200))] * 3
            frame = json.loads(json.dumps(make_signal(7).to_dict()))
            assert Signal.from_dict(frame) == make_signal(7)
            stats = sink.stats()
            assert stats["clients"] == 3 and stats["clients_total"] == 3 and stats["delivered"] == 200
            assert stats["sent"] >= 3 * 201  # hello and 200 signals each
        async with client(sink, url=sink.url + "/any/path") as d:
            await d.send(json.dumps({"op": "ping", "id": 4}))
            assert await recv_type(d, "pong") == {"type": "pong", "id": 4}


async def test_hello_describes_the_source() -> None:
    async with serving(fps=4) as sink:
        sink.set_source("binance", ("BTCUSDT", "ETHUSDT"), ("rsi_14", "macd_hist_12_26_9"), "1m")
        async with connect(sink.url) as ws:
            assert await recv(ws) == {"type": "hello", "protocol": 1, "feed": "binance",
                                      "symbols": ["BTCUSDT", "ETHUSDT"],
                                      "outputs": ["rsi_14", "macd_hist_12_26_9"], "interval": "1m",
                                      "fps": 4.0}


async def test_subscriptions_filter_signals_and_snapshot_quotes() -> None:
    async with (serving(fps=1000, filter=SignalFilter(directions=frozenset({"up"}))) as sink,
                client(sink, {"symbols": ["AAA"]}) as only_aaa,
                client(sink, {"rules": ["r2"]}) as only_r2,
                client(sink, {"symbols": ["BBB"], "rules": None, "snapshots": True}) as bbb_frames,
                client(sink) as everything):
        plan = [("AAA", "r1"), ("BBB", "r2"), ("AAA", "r2"), ("CCC", "r1"), ("BBB", "r1")]
        for i, (symbol, rule) in enumerate(plan):
            sink.deliver(make_signal(i, symbol, rule))
        down = Signal("AAA", "r1", "down", T0, 1.0, {}, T0 + 99)
        sink.deliver(down)  # the sink's own filter: up only
        assert sink.filtered == 1
        assert await signals_of(only_aaa, 2) == [0, 2]
        assert await signals_of(only_r2, 2) == [1, 2]
        assert await signals_of(bbb_frames, 2) == [1, 4]
        assert await signals_of(everything, 5) == [0, 1, 2, 3, 4]

        sink.publish(make_snapshot(1), PipelineHealth(lag_p99_ms=1.5, reconnects=2))
        frame = await recv_type(bbb_frames, "snapshot")
        assert [q["symbol"] for q in frame["quotes"]] == ["BBB"]
        quote = frame["quotes"][0]
        assert quote["closes"] == [100.0, 100.25, 100.5, 100.75, 101.0]
        assert quote["values"] == {"rsi_14": 55.0, "ema_20": None}  # NaN is null: strict JSON
        assert frame["health"]["lag_p99_ms"] == 1.5 and frame["health"]["reconnects"] == 2
        assert (frame["at_ns"], frame["ticks"], frame["bars"]) == (T0 + 1, 10, 1)

        # a client that asked for no snapshots gets none; one that subscribes now gets the latest
        await everything.send(json.dumps({"op": "ping"}))
        assert (await recv(everything))["type"] == "pong"
        await everything.send(json.dumps({"op": "subscribe", "snapshots": True}))
        reply = await recv(everything)
        assert reply == {"type": "subscribed", "symbols": None, "rules": None, "snapshots": True}
        frame = await recv(everything)
        assert frame["type"] == "snapshot" and [q["symbol"] for q in frame["quotes"]] == ["AAA", "BBB"]


def small_receive_buffer() -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that stops reading is full quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_client_that_stops_reading_is_cut_off_and_never_slows_the_others() -> None:
    async with serving(max_queue=64) as sink:
        sock = small_receive_buffer()
        sock.connect(("127.0.0.1", sink.port))
        async with client(sink, sock=sock, max_queue=1) as slow, client(sink) as a, client(sink) as b:
            received: dict[str, list[int]] = {"a": [], "b": []}

            async def read(ws: ClientConnection, into: list[int]) -> None:
                while True:
                    into.append((await recv_type(ws, "signal"))["detected_ns"] - T0)

            readers = [asyncio.create_task(read(ws, received[key])) for key, ws in (("a", a), ("b", b))]
            sent = 0

            async def send_16(pad: int) -> None:
                nonlocal sent
                for _ in range(16):
                    sink.deliver(make_signal(sent, pad=pad))
                    sent += 1
                # the readers keep up: every signal so far reached both of them
                await until(lambda: len(received["a"]) == len(received["b"]) == sent, "the fast readers")

            while sink.dropped_clients == 0:
                assert sent < 100_000, "the slow client was never disconnected"
                await send_16(pad=600)  # about 15 kB a frame
            for _ in range(8):  # the others keep receiving after the slow one is gone
                await send_16(pad=0)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            assert received["a"] == received["b"] == list(range(sent))
            stats = sink.stats()
            assert stats["dropped_clients"] == 1 and stats["clients"] == 2

            # what the slow client got is a prefix, in order, then a close frame saying why
            seen: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = await recv(slow)
                    if frame["type"] == "signal":
                        seen.append(frame["detected_ns"] - T0)
            assert seen == list(range(len(seen))) and len(seen) < sent
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == broadcast.CLOSE_TOO_SLOW
            assert "too slow" in closed.value.rcvd.reason
        await until(lambda: not sink._cut, "the cut-off client's connection to close")
        assert sink.stats()["reset_clients"] == 0  # it answered the close frame


async def test_with_a_token_a_client_without_it_is_refused_with_401(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("websockets").setLevel(logging.DEBUG)
    try:
        async with serving(token=TOKEN, token_env="TICKDECK_WS_TOKEN") as sink:
            for headers, why in ((None, "missing token"), ({"Authorization": "Bearer nope"}, "bad token"),
                                 ({"Authorization": f"Basic {TOKEN}"}, "missing token")):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(sink.url, additional_headers=headers, open_timeout=5):
                        pass
                assert refused.value.response.status_code == 401
                assert refused.value.response.body.decode().strip() == why
            with pytest.raises(InvalidStatus):
                async with connect(sink.url + "/?token=nope", open_timeout=5):
                    pass
            async with client(sink, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                sink.deliver(make_signal(1))
                assert await signals_of(ws, 1) == [1]
            async with client(sink, url=f"{sink.url}/?token={TOKEN}") as ws:
                sink.deliver(make_signal(2))
                assert await signals_of(ws, 1) == [2]
            assert sink.stats()["refused"] == 4 and sink.stats()["token"] is True
            assert TOKEN not in repr(sink) and TOKEN not in json.dumps(sink.stats())
    finally:
        logging.getLogger("websockets").setLevel(logging.NOTSET)
    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert any("refused a client" in r.getMessage() for r in server_side)
    assert not any(TOKEN in r.getMessage() for r in server_side)


async def test_malformed_client_messages_are_counted_and_answered() -> None:
    async with serving() as sink, client(sink) as ws:
        bad: list[str | bytes] = [
            "not json", b"\xff\xfe", "[1, 2]", json.dumps({"op": "unsubscribe"}), json.dumps({"no": "op"}),
            json.dumps({"op": "subscribe", "symbols": "AAA"}),
            json.dumps({"op": "subscribe", "symbols": ["AAA", 3]}),
            json.dumps({"op": "subscribe", "snapshots": 1}),
            json.dumps({"op": "subscribe", "colour": "red"}),
        ]
        for message in bad:
            await ws.send(message)
            answer = await recv(ws)
            assert answer["type"] == "error" and answer["error"] == "bad_message", message
            assert answer["message"]
        assert sink.stats()["bad_messages"] == len(bad)
        # the connection still works, and the bad subscriptions changed nothing
        sink.deliver(make_signal(5, symbol="ZZZ"))
        assert await signals_of(ws, 1) == [5]


async def test_a_client_that_keeps_sending_garbage_is_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broadcast, "MAX_BAD_MESSAGES", 3)
    async with serving() as sink, client(sink) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await ws.send("garbage")
                await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == broadcast.CLOSE_POLICY
        assert sink.stats()["dropped_clients"] == 0  # counted as bad messages, not as too slow
        assert sink.stats()["bad_messages"] == 4


async def test_snapshots_are_coalesced_to_the_frame_rate() -> None:
    async with serving(fps=5) as sink, client(sink, {"snapshots": True}) as ws:
        for i in range(100):  # a burst: one frame goes out at once, the newest one 1/fps later
            sink.publish(make_snapshot(i))
        seen: list[int] = []
        while not seen or seen[-1] != 99:
            seen.append((await recv_type(ws, "snapshot"))["at_ns"] - T0)
        assert seen == sorted(set(seen)) and len(seen) <= 3
        assert sink.stats()["published"] == 100 and sink.stats()["frames"] == len(seen)


async def test_a_client_that_reads_slowly_gets_the_newest_snapshot_not_a_backlog() -> None:
    frames = 100  # about 150 kB each: far more than the socket buffers between server and client hold
    async with serving(fps=1000) as sink:
        sock = small_receive_buffer()
        sock.connect(("127.0.0.1", sink.port))
        async with client(sink, {"snapshots": True}, sock=sock, max_queue=1, max_size=2**24) as ws:
            symbols = tuple(f"S{k:03d}" for k in range(50))
            for i in range(frames):  # the client reads nothing meanwhile
                sink.publish(make_snapshot(i, symbols, closes=60))
                await asyncio.sleep(0.002)
            seen: list[int] = []
            while not seen or seen[-1] != frames - 1:
                seen.append((await recv_type(ws, "snapshot"))["at_ns"] - T0)
            assert seen == sorted(set(seen)) and len(seen) < frames
            assert sink.stats()["frames_coalesced"] > 0


async def test_status_goes_to_every_client_and_the_latest_to_newcomers() -> None:
    async with serving() as sink:
        async with client(sink) as ws:
            sink.publish_status(FeedStatus("binance", "reconnecting", "HTTP 503", retry_in=1.5))
            frame = await recv(ws)
            assert frame["type"] == "status" and frame["state"] == "reconnecting"
            assert (frame["feed"], frame["reason"], frame["retry_in"]) == ("binance", "HTTP 503", 1.5)
        sink.publish_status(FeedStatus("binance", "live"))
        async with connect(sink.url) as late:
            assert (await recv(late))["type"] == "hello"
            frame = await recv(late)
            assert frame["type"] == "status" and frame["state"] == "live"


async def test_close_sends_what_is_queued_then_says_goodbye() -> None:
    sink = BroadcastSink("127.0.0.1", 0)
    sink.start()
    await sink.started()
    async with client(sink) as ws:
        for i in range(50):
            sink.deliver(make_signal(i))
        closing = asyncio.create_task(sink.close(2.0))
        assert await signals_of(ws, 50) == list(range(50))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await closing
    sink.deliver(make_signal(99))
    assert sink.stats()["undelivered"] == 1


async def test_a_port_in_use_fails_at_start() -> None:
    async with serving() as first:
        second = BroadcastSink("127.0.0.1", first.port)
        with pytest.raises(OSError, match=f"websocket sink websocket: cannot listen on {first.url}"):
            second.start()
        await second.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="fps"):
        BroadcastSink(fps=0)
    with pytest.raises(ValueError, match="max_queue"):
        BroadcastSink(max_queue=0)


# --- wiring: the [[sinks]] table and the headless service ----------------------------------------------

BUSY = BUSY_RULE


def websocket_sinks(*tables: dict[str, Any], env: dict[str, str] | None = None) -> list[BroadcastSink]:
    specs = sink_config.load_sinks([(t, "cfg.toml") for t in tables], env=env or {})
    sinks = sink_config.build_sinks(specs, env=env or {})
    assert all(isinstance(s, BroadcastSink) for s in sinks)
    return [s for s in sinks if isinstance(s, BroadcastSink)]


def test_websocket_sink_tables() -> None:
    (sink,) = websocket_sinks({"type": "websocket"})
    assert (sink.host, sink.port, sink.fps, sink.max_queue, sink.name) == ("127.0.0.1", 8765, 10.0, 1024,
                                                                          "websocket-1")
    assert sink.stats()["token"] is False
    env = {"TICKDECK_WS_TOKEN": TOKEN}
    (sink,) = websocket_sinks({"type": "websocket", "host": "0.0.0.0", "port": 0, "fps": 2, "max_queue": 8,
                               "token_env": "TICKDECK_WS_TOKEN", "symbols": ["AAA"]}, env=env)
    assert (sink.host, sink.port, sink.fps, sink.max_queue) == ("0.0.0.0", 0, 2.0, 8)
    assert sink.stats()["token"] is True and TOKEN not in repr(sink)
    two_on_any_port = [{"type": "websocket", "name": f"w{i}", "port": 0} for i in range(2)]
    assert len(websocket_sinks(*two_on_any_port)) == 2
    mistakes = [
        ({"type": "websocket", "token_env": "NO_SUCH_VAR"}, "token_env", "NO_SUCH_VAR"),
        ({"type": "websocket", "token_env": "1BAD"}, "token_env", "name of an environment variable"),
        ({"type": "websocket", "host": "0.0.0.0"}, "token_env", "required when host is '0.0.0.0'"),
        ({"type": "websocket", "fps": 0}, "fps", "> 0"),
        ({"type": "websocket", "fps": 1000}, "fps", "<= 60"),
        ({"type": "websocket", "max_queue": 0}, "max_queue", ">= 1"),
        ({"type": "websocket", "port": 70000}, "port", "from 0 to 65535"),
        ({"type": "websocket", "token": TOKEN}, "token", "allowed:"),
    ]
    for table, key, says in mistakes:
        with pytest.raises(sink_config.SinkError) as error:
            websocket_sinks(table)
        assert error.value.key == key and says in str(error.value), str(error.value)
        assert TOKEN not in str(error.value)
    with pytest.raises(sink_config.SinkError, match=r"127\.0\.0\.1:8765 is also the address of"):
        websocket_sinks({"type": "websocket"}, {"type": "websocket", "name": "again"})


async def test_the_headless_service_broadcasts_its_frames_signals_and_status(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "config.toml"
    path.write_text(f'{BUSY}\n[[sinks]]\ntype = "websocket"\nname = "ws"\nport = {port}\n', encoding="utf-8")
    config = load_config(str(path), {"feeds.sim.rate": 2000.0, "engine.interval": "1s"},
                         env={CONFIG_DIR_VAR: str(tmp_path)})
    service = asyncio.create_task(headless.serve(config, stdout_fd=None, status_every=0))
    remote = RemoteRuntime(f"ws://127.0.0.1:{port}", backoff=Backoff(0.05, 0.2))
    updates: list[Update] = []
    statuses: list[FeedStatus] = []
    run: asyncio.Task[None] | None = None
    try:
        for _ in range(1200):  # the first engine build in a fresh checkout compiles the kernels
            try:
                await remote.handshake()
                break
            except AttachError:
                assert not service.done(), service.result()
                await asyncio.sleep(0.1)
        assert remote.watch and remote.outputs == tuple(config.ui.columns) and remote.interval == "1s"
        run = asyncio.create_task(remote.run(updates.append, statuses.append))
        # a signal and a frame, in either order: a live signal can come before the first frame
        await until(lambda: any(u.signals for u in updates), "a signal", timeout=60)
        # a frame quotes the symbols that have traded: the first ones may not hold every watched symbol yet
        watched = set(remote.watch)
        await until(lambda: any(u.snapshot is not None and {q.symbol for q in u.snapshot.quotes} == watched
                                for u in updates), "a snapshot frame with every watched symbol", timeout=60)
        frames = [u.snapshot for u in updates if u.snapshot is not None]
        assert all({q.symbol for q in f.quotes} <= watched for f in frames)  # never a symbol not asked for
        assert any(u.health is not None for u in updates)
        assert any(s.state == "live" and s.reason.startswith("sim") for s in statuses)
    finally:
        if not service.done():  # its handler is installed while it runs; without it this would end pytest
            os.kill(os.getpid(), signal.SIGTERM)  # the service's own handler: drain and stop
        code, summary = await asyncio.wait_for(service, 10)
        if run is not None:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert code == 0 and summary["stopped_by"] == "SIGTERM"
    stats = summary["sinks"]["ws"]
    assert stats["clients_total"] == 2 and stats["frames"] > 0 and stats["delivered"] == summary["signals"]
