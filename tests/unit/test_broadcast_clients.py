"""The ``websocket`` sink against slow and hostile clients: the close frame a cut-off client gets, the
connection cap, shared snapshot encodings and the cap on distinct subscriptions, refused handshakes
(logged once a minute per address, throttled), short tokens, and loopback decided on addresses. Real
servers and ``websockets`` clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine import addresses
from engine.sinks import admission, broadcast, defaults
from engine.sinks import config as sink_config
from engine.sinks.admission import Admission
from engine.sinks.broadcast import BroadcastSink
from engine.sinks.frames import SnapshotFrames, dumps, snapshot_frame
from engine.snapshot import PipelineHealth
from tests.unit.test_broadcast import (
    T0,
    TOKEN,
    client,
    make_signal,
    make_snapshot,
    recv,
    recv_type,
    serving,
    signals_of,
    small_receive_buffer,
    until,
    websocket_sinks,
)

PAUSE_S = 2.0  # a client busy elsewhere: longer than the 1 s the server used to wait, well inside the grace


async def cut_off_while_not_reading(sink: BroadcastSink, **kw: Any) -> Any:
    """A client (tiny receive buffer, one-frame queue) that reads nothing until the sink cuts it off."""
    sock = small_receive_buffer()
    sock.connect(("127.0.0.1", sink.port))
    ws = await connect(sink.url, sock=sock, max_queue=1, open_timeout=5, compression=None, **kw)
    assert (await recv(ws))["type"] == "hello"
    sent = 0
    while sink.dropped_clients == 0:
        assert sent < 100_000, "the slow client was never cut off"
        sink.deliver(make_signal(sent, pad=600))  # about 15 kB a frame
        sent += 1
        if sent % 16 == 0:
            await asyncio.sleep(0)  # let the writer hand frames to the kernel until its buffer is full
    return ws


async def read_to_the_end(ws: Any) -> tuple[int, ConnectionClosed]:
    frames = 0
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
            frames += 1
    return frames, closed.value


async def test_a_client_cut_off_gets_the_1013_close_frame_when_it_reads_again() -> None:
    async with serving(max_queue=64) as sink:
        ws = await cut_off_while_not_reading(sink)
        await asyncio.sleep(PAUSE_S)  # the client's own pause (it is busy): not a wait for the server
        frames, closed = await read_to_the_end(ws)
        assert frames > 0  # what was on its way, whole frames, then the close frame
        assert closed.rcvd is not None, "no close frame: the connection was reset (1006)"
        assert closed.rcvd.code == broadcast.CLOSE_TOO_SLOW and "too slow" in closed.rcvd.reason
        await until(lambda: not sink._cut, "the cut-off connection to close")
        assert sink.stats()["dropped_clients"] == 1 and sink.stats()["reset_clients"] == 0
    assert broadcast.CUT_GRACE_S > 2 * PAUSE_S


async def test_a_client_that_reads_nothing_for_the_whole_grace_is_reset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README says such a client sees: the connection ends with no close frame (1006)."""
    monkeypatch.setattr(broadcast, "CUT_GRACE_S", 0.3)
    async with serving(max_queue=64) as sink:
        ws = await cut_off_while_not_reading(sink)
        await until(lambda: sink.stats()["reset_clients"] == 1, "the server to give up on the client")
        _, closed = await read_to_the_end(ws)
        assert closed.rcvd is None and ws.close_code == 1006


async def test_past_max_clients_the_handshake_is_refused_with_503_saying_why() -> None:
    async with serving(max_clients=2) as sink, client(sink) as a, client(sink):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(sink.url, open_timeout=5):
                pass
        response = refused.value.response
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "too many clients" in response.body.decode() and "max_clients" in response.body.decode()
        stats = sink.stats()
        assert (stats["refused"], stats["refused_full"], stats["clients"]) == (1, 1, 2)
        assert stats["max_clients"] == 2
        await a.close()
        await until(lambda: sink.stats()["clients"] == 1, "a client to leave")
        async with client(sink) as c:  # a place is free again
            sink.deliver(make_signal(1))
            assert await signals_of(c, 1) == [1]


async def test_clients_with_the_same_symbols_share_one_encoding_per_snapshot() -> None:
    symbols = ("AAA", "BBB", "CCC")
    async with serving(fps=1000) as sink:
        sink.publish(make_snapshot(0, symbols))  # before anyone subscribes: nothing is encoded
        assert sink.stats()["frames_built"] == 0
        clients = [await connect(sink.url, open_timeout=5) for _ in range(5)]
        try:
            for ws in clients:
                assert (await recv(ws))["type"] == "hello"
                await ws.send(json.dumps({"op": "subscribe", "symbols": ["AAA", "BBB"], "snapshots": True}))
                await recv_type(ws, "subscribed")
                assert (await recv_type(ws, "snapshot"))["at_ns"] == T0  # the latest, at once
            for i in range(1, 4):
                sink.publish(make_snapshot(i, symbols))
                for ws in clients:
                    assert (await recv_type(ws, "snapshot"))["at_ns"] == T0 + i
            stats = sink.stats()  # four snapshots, five clients: one frame built, two quotes encoded, each
            assert (stats["frames_built"], stats["quotes_encoded"], stats["subscriptions"]) == (4, 8, 1)
        finally:
            for ws in clients:
                await ws.close()


def test_a_shared_snapshot_frame_is_the_same_text_as_encoding_it_whole() -> None:
    frames = SnapshotFrames()
    snapshot = make_snapshot(3, ("AAA", "BBB", "CCC"))
    health = PipelineHealth(lag_p99_ms=float("nan"), gaps=4, duplicates=2, feed="binance")
    frames.reset(snapshot, health)
    for symbols in (None, frozenset({"BBB"}), frozenset({"AAA", "CCC"}), frozenset({"ZZZ"}), frozenset()):
        assert frames.frame(symbols) == dumps(snapshot_frame(snapshot, health, symbols))
        assert frames.frame(symbols) is frames.frame(symbols)  # built once, then shared
    assert frames.quotes_encoded == 3 and frames.frames_built == 5  # each quote once, whatever the lists
    frames.reset(snapshot, None)
    assert frames.cached(None) is None and frames.frame(None) == dumps(snapshot_frame(snapshot, None))


async def test_past_max_subscriptions_a_new_symbol_list_is_refused_and_the_old_one_kept() -> None:
    async with (serving(fps=1000, max_subscriptions=2) as sink,
                client(sink, {"symbols": ["AAA"], "snapshots": True}) as a,
                client(sink, {"symbols": ["BBB"], "snapshots": True}) as b,
                client(sink, {"symbols": ["AAA"], "snapshots": True}),  # a list in use: shared, allowed
                client(sink, {"symbols": ["CCC"]}),  # signals only: no snapshot to encode, allowed
                client(sink, {"symbols": ["AAA"]}) as c):
        await c.send(json.dumps({"op": "subscribe", "symbols": ["CCC"], "snapshots": True}))
        refused = await recv(c)
        assert refused["type"] == "error" and refused["error"] == "too_many_subscriptions"
        assert "2 different symbol lists at most" in refused["message"]
        sink.deliver(make_signal(1, symbol="CCC"))
        sink.deliver(make_signal(2, symbol="AAA"))
        assert await signals_of(c, 1) == [2]  # its subscription is the one it had: AAA, signals only
        stats = sink.stats()
        assert (stats["subscriptions"], stats["refused_subscriptions"], stats["bad_messages"]) == (2, 1, 0)
        # b moves to AAA: BBB is free, and CCC now fits
        await b.send(json.dumps({"op": "subscribe", "symbols": ["AAA"]}))
        await recv_type(b, "subscribed")
        await c.send(json.dumps({"op": "subscribe", "symbols": ["CCC"], "snapshots": True}))
        assert (await recv_type(c, "subscribed"))["symbols"] == ["CCC"]
        sink.publish(make_snapshot(1, ("AAA", "BBB", "CCC")))
        assert [q["symbol"] for q in (await recv_type(c, "snapshot"))["quotes"]] == ["CCC"]
        assert [q["symbol"] for q in (await recv_type(a, "snapshot"))["quotes"]] == ["AAA"]
        assert sink.stats()["subscriptions"] == 2


async def test_refused_handshakes_are_logged_once_a_minute_per_address_and_throttled(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tickdeck.sinks.websocket")
    now = [1000.0]
    async with serving(token=TOKEN, token_env="TICKDECK_WS_TOKEN") as sink:
        sink.admission = Admission(sink.name, TOKEN, sink.max_clients, clock=lambda: now[0])
        statuses = []
        for _ in range(12):  # a client retrying with a wrong token, in a loop
            with pytest.raises(InvalidStatus) as refused:
                async with connect(sink.url, additional_headers={"Authorization": "Bearer nope"},
                                   open_timeout=5):
                    pass
            statuses.append(refused.value.response.status_code)
        assert statuses == [401] * admission.MAX_FAILURES + [429] * (12 - admission.MAX_FAILURES)
        assert refused.value.response.headers["Retry-After"] == "60"
        with pytest.raises(InvalidStatus) as refused:  # throttled: even the right token waits
            async with connect(sink.url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                               open_timeout=5):
                pass
        assert refused.value.response.status_code == 429
        lines = [r.getMessage() for r in caplog.records if "refused a client" in r.getMessage()]
        assert len(lines) == 1 and "127.0.0.1" in lines[0] and TOKEN not in lines[0]

        now[0] += admission.WINDOW_S  # a minute later: the right token is let in again
        async with client(sink, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            sink.deliver(make_signal(1))
            assert await signals_of(ws, 1) == [1]
        with pytest.raises(InvalidStatus):
            async with connect(sink.url, open_timeout=5):
                pass
        lines = [r.getMessage() for r in caplog.records if "refused a client" in r.getMessage()]
        assert len(lines) == 2 and "missing token" in lines[1] and "12 more refusals" in lines[1]
        stats = sink.stats()
        assert (stats["refused"], stats["throttled"]) == (14, 8)


def test_the_table_of_client_addresses_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "MAX_ADDRESSES", 3)
    gate = Admission("ws", TOKEN, 10, clock=lambda: 0.0)
    for i in range(50):
        refusal = gate.check(f"10.0.0.{i}", Headers(), "/", 0)
        assert refusal is not None and refusal.status == 401
    assert gate.addresses == 3 and gate.refused == 50


def test_a_token_shorter_than_16_characters_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        BroadcastSink(token="fifteen-chars-x")
    short = "fifteen-chars-x"
    with pytest.raises(sink_config.SinkError) as error:
        websocket_sinks({"type": "websocket", "token_env": "TICKDECK_WS_TOKEN"},
                        env={"TICKDECK_WS_TOKEN": short})
    assert error.value.key == "token_env" and short not in str(error.value)
    assert "holds a token of 15 characters; use at least 16" in str(error.value)
    (sink,) = websocket_sinks({"type": "websocket", "token_env": "T"}, env={"T": "x" * 16})
    assert sink.stats()["token"] is True


def test_max_clients_is_a_validated_table_key() -> None:
    (sink,) = websocket_sinks({"type": "websocket"})
    assert sink.max_clients == defaults.DEFAULT_WEBSOCKET_CLIENTS
    (sink,) = websocket_sinks({"type": "websocket", "max_clients": 3})
    assert sink.max_clients == 3
    for value in (0, -1, "many", 1.5, True, 10**6):
        with pytest.raises(sink_config.SinkError) as error:
            websocket_sinks({"type": "websocket", "max_clients": value})
        assert error.value.key == "max_clients" and "an integer from 1 to 100000" in str(error.value)


def fake_resolver(table: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
                for a in table[host]]
    return getaddrinfo


def test_loopback_is_decided_on_the_resolved_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({
        "localhost": ["127.0.0.1", "::1"], "127.example.com": ["93.184.215.14"],
        "both.example.com": ["127.0.0.1", "93.184.215.14"], "lo.example.com": ["127.0.1.1"]}))
    loopback = ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "lo.example.com"]
    elsewhere = ["0.0.0.0", "::", "", "10.0.0.1", "127.example.com", "both.example.com", "nowhere.invalid",
                 "1.2.3.4.5"]
    assert [h for h in loopback if not addresses.is_loopback(h)] == []
    assert [h for h in elsewhere if addresses.is_loopback(h)] == []
    # the config: a host named 127.<something> is not loopback for that, and needs a token
    with pytest.raises(sink_config.SinkError) as error:
        websocket_sinks({"type": "websocket", "host": "127.example.com"})
    assert error.value.key == "token_env" and "required when host is '127.example.com'" in str(error.value)
    assert websocket_sinks({"type": "websocket", "host": "localhost"})[0].host == "localhost"
