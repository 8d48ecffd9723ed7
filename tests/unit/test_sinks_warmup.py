"""Warm-up signals (fired on history) reach a sink only when its ``[[sinks]]`` table says ``warmup = true``:
every sink type, built from its table and fed through a ``SinkGroup`` as the headless service feeds them,
checked at the receiving end (a file, a pipe, a webhook server, Telegram's API, /metrics, a WebSocket
client and ``tickdeck attach``'s decoder)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from engine.remote import RemoteRuntime
from engine.signals.events import Signal
from engine.sinks.base import SignalFilter, Sink, SinkGroup
from engine.sinks.broadcast import BroadcastSink
from engine.sinks.config import SinkError, build_sinks, load_sinks
from engine.sinks.jsonl import JsonlStreamSink
from engine.sinks.metrics import MetricsSink
from engine.sinks.telegram import TelegramSink
from engine.sinks.webhook import WebhookSink
from engine.snapshot import Update
from tests.servers.hooks import TelegramServer, WebhookServer
from tests.unit.test_sinks_net import get, parse_prometheus

T0 = 1_800_000_000_000_000_000
TOKEN = "123456789:AAHtestTOKENvalue-for_tickdeck"
ENV = {"TICKDECK_TELEGRAM_TOKEN": TOKEN}
WAIT_S = 10.0


def make_signal(i: int, *, warmup: bool) -> Signal:
    return Signal(symbol="AAPL", rule="rsi_oversold", direction="up", bar_time=T0 + i * 60_000_000_000,
                  price=100.0 + i, values={"rsi_14": 29.5, "level": 30.0}, detected_ns=T0 + i, warmup=warmup)


HISTORY = [make_signal(i, warmup=True) for i in range(3)]  # a restart's past bars
NEWS = [make_signal(i, warmup=False) for i in range(3, 5)]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def specs(tmp_path: Path, tables: list[dict[str, Any]]) -> list[Sink]:
    """The sinks of ``tables`` as the headless service builds them (one with and one without warmup)."""
    file = tmp_path / "service.toml"
    file.write_text("", encoding="utf-8")
    loaded = load_sinks([(t, str(file)) for t in tables], rule_ids=["rsi_oversold"], env=ENV)
    return build_sinks(loaded, env=ENV)


def both(table: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """``table`` twice: by default (no warm-up signals) and with ``warmup = true``."""
    return [{**table, "name": f"{name}-news"}, {**table, "name": f"{name}-all", "warmup": True}]


async def deliver(sinks: list[Sink]) -> SinkGroup:
    group = SinkGroup(sinks)
    await group.start()
    for s in [*HISTORY, *NEWS]:  # history first, as a restart delivers it
        group.deliver(s)
    assert await group.drain(WAIT_S)
    return group


def expect_counts(sink: Sink, everything: bool) -> None:
    assert (sink.delivered, sink.filtered) == ((5, 0) if everything else (2, 3)), sink.name


def test_the_key_is_a_validated_boolean_that_defaults_to_off(tmp_path: Path) -> None:
    file = str(tmp_path / "service.toml")
    plain, opted = load_sinks([({"type": "jsonl", "path": "a.jsonl"}, file),
                               ({"type": "jsonl", "path": "b.jsonl", "warmup": True}, file)])
    assert plain.filter.warmup is False and opted.filter.warmup is True
    assert "warm-up" not in plain.filter.describe() and "warm-up" in opted.filter.describe()
    for value in ("true", 1, None):
        with pytest.raises(SinkError, match=r"sink #1 \(jsonl\), key 'warmup': must be true or false"):
            load_sinks([({"type": "jsonl", "path": "a.jsonl", "warmup": value}, file)])
    for kind, extra in (("webhook", {"url": "https://h.example.com/x"}), ("telegram", {"chat_id": 1}),
                        ("metrics", {"port": 0}), ("websocket", {"port": 0})):
        (spec,) = load_sinks([({"type": kind, **extra, "warmup": True}, file)], env=ENV)
        assert spec.filter.warmup is True
    assert SignalFilter().matches(NEWS[0]) and not SignalFilter().matches(HISTORY[0])
    assert SignalFilter(warmup=True).matches(HISTORY[0])


async def test_jsonl_files_and_stdout(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        stdout = JsonlStreamSink(write_fd)  # what the headless service writes to standard output
        files = specs(tmp_path, [{"type": "jsonl", "name": "file-news", "path": "x.jsonl"},
                                 {"type": "jsonl", "name": "file-all", "path": "y.jsonl", "warmup": True}])
        group = await deliver([stdout, *files])
        await group.close(1.0)
        written = os.read(read_fd, 1 << 16).decode().splitlines()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert [json.loads(line) for line in written] == [s.to_dict() for s in NEWS]
    news, everything = (tmp_path / "x.jsonl").read_text().splitlines(), (tmp_path / "y.jsonl").read_text()
    assert [json.loads(line) for line in news] == [s.to_dict() for s in NEWS]
    every = [json.loads(line) for line in everything.splitlines()]
    assert every == [s.to_dict() for s in [*HISTORY, *NEWS]]
    assert [d["warmup"] for d in every] == [True, True, True, False, False]
    expect_counts(stdout, False)
    expect_counts(files[0], False)
    expect_counts(files[1], True)


async def test_webhooks(tmp_path: Path) -> None:
    async with WebhookServer() as server:
        hook = {"type": "webhook", "url": server.url}
        sinks = specs(tmp_path, [{**hook, "name": "news", "url": server.url + "/news"},
                                 {**hook, "name": "all", "url": server.url + "/all", "warmup": True}])
        assert all(isinstance(s, WebhookSink) for s in sinks)
        group = await deliver(sinks)
        await group.close(1.0)
    by_path: dict[str, list[Any]] = {}
    for r in server.received:
        by_path.setdefault(r.path, []).append(r.json())
    assert by_path["/news"] == [s.to_dict() for s in NEWS]
    assert by_path["/all"] == [s.to_dict() for s in [*HISTORY, *NEWS]]


async def test_telegram(tmp_path: Path) -> None:
    async with TelegramServer(TOKEN, chats=(42, 43)) as server:
        sinks = specs(tmp_path, [{"type": "telegram", "name": "news", "chat_id": 42, "base_url": server.url},
                                 {"type": "telegram", "name": "all", "chat_id": 43, "base_url": server.url,
                                  "warmup": True}])
        assert all(isinstance(s, TelegramSink) for s in sinks)
        group = await deliver(sinks)
        await group.close(1.0)
    chats = [m["chat_id"] for m in server.messages]
    assert chats.count(42) == len(NEWS) and chats.count(43) == len(HISTORY) + len(NEWS)


async def test_metrics(tmp_path: Path) -> None:
    sinks = specs(tmp_path, both({"type": "metrics", "port": 0}, "metrics"))
    assert all(isinstance(s, MetricsSink) for s in sinks)
    group = await deliver(sinks)
    try:
        counts = []
        for sink in sinks:
            assert isinstance(sink, MetricsSink)
            status, _, text = await get(sink.url + "/metrics")
            assert status == 200
            _, samples = parse_prometheus(text)
            counts.append(sum(v for name, _, v in samples if name == "tickdeck_signals_total"))
    finally:
        await group.close(1.0)
    assert counts == [len(NEWS), len(HISTORY) + len(NEWS)]


async def test_websocket_frames_and_attach_carry_the_field(tmp_path: Path) -> None:
    sinks = specs(tmp_path, both({"type": "websocket", "port": 0}, "ws"))
    news_sink, all_sink = sinks
    assert isinstance(news_sink, BroadcastSink) and isinstance(all_sink, BroadcastSink)
    group = SinkGroup(sinks)
    await group.start()
    try:
        await news_sink.started()
        await all_sink.started()
        async with connect(news_sink.url) as news_ws, connect(all_sink.url) as all_ws:
            remote = RemoteRuntime(all_sink.url)  # what ``tickdeck attach`` runs
            updates: list[Update] = []
            attached = asyncio.create_task(remote.run(updates.append, lambda status: None))
            try:
                await until(lambda: news_sink.stats()["clients"] == 1 and all_sink.stats()["clients"] == 2)
                for s in [*HISTORY, *NEWS]:
                    group.deliver(s)
                frames = {}
                for name, ws in (("news", news_ws), ("all", all_ws)):
                    got: list[dict[str, Any]] = []
                    while len(got) < (2 if name == "news" else 5):
                        async with asyncio.timeout(WAIT_S):
                            frame = json.loads(await ws.recv())
                        if frame["type"] == "signal":
                            got.append(frame)
                    frames[name] = got
                await until(lambda: sum(len(u.signals) for u in updates) == 5)
            finally:
                attached.cancel()
                await asyncio.gather(attached, return_exceptions=True)
    finally:
        await group.close(1.0)
    assert [f["warmup"] for f in frames["news"]] == [False, False]
    assert [f["warmup"] for f in frames["all"]] == [True, True, True, False, False]
    assert frames["all"] == [{"type": "signal", **s.to_dict()} for s in [*HISTORY, *NEWS]]
    decoded = [s for u in updates for s in u.signals]
    assert decoded == [*HISTORY, *NEWS]  # warmup survives the trip to an attached console
