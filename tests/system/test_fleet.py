"""The fleet on a real NATS server (``nats-server -js`` on 127.0.0.1, ``tests.servers.nats``): redundant
engines, a sink process killed and restarted, a bus taken away and brought back.

Every wait is on a condition (a count in the stream, a request received, a state) with a timeout;
``make soak`` runs the long variant (the bus away for 30 s), marked ``soak``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.bus.buffer import DiskBuffer
from engine.bus.connection import BusError, Retention, connect, settings_from
from engine.bus.consumer import IDEMPOTENCY_HEADER
from engine.bus.publisher import BusPublisher
from engine.bus.subjects import MSG_ID, SIGNALS_STREAM, signal_id
from engine.signals.events import Signal
from tests import waits
from tests.data import random_walk
from tests.servers.hooks import WebhookServer, closed_port
from tests.servers.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000 * 1_000_000_000
WAIT_S = 120.0  # the first engine start in a fresh checkout compiles kernels; elsewhere seconds
CLOSE_RULES = """
[[rules]]
id = "close_x_ema"
kind = "cross"
a = "close"
b = "ema_20"
direction = "both"
on = "close"
"""

pytestmark = pytest.mark.usefixtures("clean_env")


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> None:
    await waits.until(condition, what, timeout)


async def stream_ids(url: str, stream: str = SIGNALS_STREAM) -> list[str]:
    """The message id of every message in ``stream``, in stream order."""
    from nats.js.api import AckPolicy, ConsumerConfig

    client = await connect(settings_from(url))
    try:
        js = client.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("tickdeck.>", stream=stream,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        ids: list[str] = []
        while len(ids) < total:
            for msg in await sub.fetch(min(total - len(ids), 500), timeout=5):
                ids.append((msg.headers or {})[MSG_ID])
        return ids
    finally:
        await client.close()


async def stream_count(url: str) -> int:
    client = await connect(settings_from(url))
    try:
        return int((await client.jetstream().stream_info(SIGNALS_STREAM)).state.messages)
    except Exception:  # not created yet
        return 0
    finally:
        await client.close()


def signals(n: int, start: int = 0) -> list[Signal]:
    return [Signal(symbol=f"S{i % 7}", rule="r", direction="up", bar_time=T0 + i * 60 * 10**9, price=1.0 + i,
                   values={"close": 1.0 + i}, detected_ns=i) for i in range(start, start + n)]


def publisher(url: str, buffer: Path, *, max_backoff: float = 0.5) -> BusPublisher:
    settings = settings_from(url, connect_timeout=2.0, max_backoff=max_backoff)
    return BusPublisher(settings, DiskBuffer(buffer), feed="sim", interval="1m", engine="test",
                        retention=Retention(), snapshot_every=0)


# --- the bus taken away ------------------------------------------------------------------------------

async def take_the_bus_away(server: NatsServer, tmp_path: Path, away: Callable[[BusPublisher], Any]) -> None:
    """Publish, kill the server, publish more (buffered), restart the engine while the bus is still
    away (the buffer survives it), bring the server back on the same store: every signal is in the
    stream once."""
    buffer = tmp_path / "buffer.jsonl"
    first = publisher(server.url, buffer)
    await first.open()
    for s in signals(40):
        first.deliver(s)
    await until(lambda: first.published == 40, "the first 40 signals stored")
    server.kill()
    await until(lambda: first.state == "reconnecting", "the publisher to see the bus gone")
    for s in signals(40, start=40):
        first.deliver(s)
    await away(first)
    await first.close(0.5)  # the engine stops while the bus is away: 40 signals stay in the buffer
    assert first.stats()["buffered"] == 40 and first.stats()["overflow"] == 0
    server.start()
    again = publisher(server.url, buffer)
    await again.open()
    assert again.buffer.recovered == 40
    for s in signals(20, start=80):
        again.deliver(s)
    await until(lambda: again.stats()["pending"] == 0, "the buffered signals published")
    await again.close(1.0)
    ids = await stream_ids(server.url)
    expected = [signal_id("sim", "1m", s) for s in signals(100)]
    assert sorted(ids) == sorted(expected) and len(ids) == 100  # no gap, no duplicate
    assert again.buffer.stats()["buffered"] == 0 and buffer.read_bytes() == b""


async def test_a_bus_taken_away_loses_no_signal(nats_server: NatsServer, tmp_path: Path) -> None:
    async def briefly(pub: BusPublisher) -> None:  # a few failed reconnection attempts
        await until(lambda: pub.stats()["pending"] == 40, "the signals buffered")

    await take_the_bus_away(nats_server, tmp_path, briefly)


@pytest.mark.soak
async def test_a_bus_away_for_30_s_loses_no_signal(nats_server: NatsServer, tmp_path: Path) -> None:
    async def thirty_seconds(pub: BusPublisher) -> None:
        gone = time.monotonic()
        await until(lambda: time.monotonic() - gone >= 30.0, "30 s of outage", timeout=60)
        assert pub.state == "reconnecting" and pub.stats()["pending"] == 40

    await take_the_bus_away(nats_server, tmp_path, thirty_seconds)


async def test_a_bus_that_comes_back_while_the_engine_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    pub = publisher(nats_server.url, tmp_path / "buffer.jsonl")
    await pub.open()
    nats_server.kill()
    await until(lambda: pub.state == "reconnecting", "the publisher to see the bus gone")
    for s in signals(30):
        pub.deliver(s)
    nats_server.start()
    await until(lambda: pub.state == "live" and pub.stats()["pending"] == 0, "reconnected and published")
    assert pub.reconnects == 1 and pub.published == 30
    await pub.close(1.0)
    assert len(set(await stream_ids(nats_server.url))) == 30


async def test_an_unreachable_bus_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "ACME.csv"
    data.write_text("timestamp,open,high,low,close,volume\n1800000000,1,2,0.5,1.5,10\n", encoding="utf-8")
    url = f"nats://127.0.0.1:{closed_port()}"
    cmd = [sys.executable, "-m", "console", "--headless", "--file", str(data), "--publish", url]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TICKDECK_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tickdeck: cannot reach the bus at {url}: ConnectionRefusedError"), done.stderr
    with pytest.raises(BusError, match=r"no answer within 0\.2 s|Connect call failed"):
        await connect(settings_from(url, connect_timeout=0.2))


# --- redundant engines ----------------------------------------------------------------------------------

def engine_cmd(data: Path, rules: Path, url: str, speed: str) -> list[str]:
    return [sys.executable, "-m", "console", "--config", str(rules), "--headless", "--file", str(data),
            "--speed", speed, "--publish", url, "--status-every", "0", "--log-format", "json"]


async def test_killing_one_of_two_redundant_engines_leaves_no_gap_and_no_duplicate(
        nats_server: NatsServer, tmp_path: Path) -> None:
    bars = random_walk(1500, seed=3)
    data = tmp_path / "ACME.csv"
    data.write_text("timestamp,open,high,low,close,volume\n"
                    + "".join(",".join(str(x) for x in row) + "\n" for row in bars.rows()), encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text(CLOSE_RULES, encoding="utf-8")
    procs = {}
    for name in ("a", "b"):  # the same file, rules and pace: the same signals, published by both
        env = {**os.environ, "TICKDECK_STATE_DIR": str(tmp_path / name), "TICKDECK_BUS_ENGINE": name}
        procs[name] = await asyncio.create_subprocess_exec(
            *engine_cmd(data, rules, nats_server.url, "15000"), cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    counts = [0]

    async def poll() -> None:
        counts[0] = await stream_count(nats_server.url)

    async def stored(n: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while counts[0] < n:
            assert time.monotonic() < deadline, "timed out waiting for signals in the stream"
            await poll()
            await asyncio.sleep(0.05)

    await stored(15)
    procs["a"].kill()  # mid-stream, as a crash: no stop, no flush
    await procs["a"].wait()
    out, err = await asyncio.wait_for(procs["b"].communicate(), WAIT_S)
    assert procs["b"].returncode == 0, err.decode()[-2000:]
    survivor = [Signal.from_dict(json.loads(line)) for line in out.decode().splitlines()]
    expected = {signal_id("replay", "1m", s) for s in survivor}
    ids = await stream_ids(nats_server.url)
    assert len(expected) == len(survivor) > 30
    assert Counter(ids).most_common(1)[0][1] == 1  # no duplicate
    assert set(ids) == expected  # no gap: every signal of an uninterrupted run, and nothing else
    bus = json.loads(err.decode().strip().splitlines()[-1])["sinks"]["bus"]
    assert bus["published"] + bus["duplicates"] == len(survivor) and bus["pending"] == 0


# --- the sink process -----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[WebhookServer]:
    server = WebhookServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_a_sink_process_killed_and_restarted_delivers_every_signal_once(
        nats_server: NatsServer, tmp_path: Path) -> None:
    total = 300
    pub = publisher(nats_server.url, tmp_path / "buffer.jsonl")
    await pub.open()
    for s in signals(total):
        pub.deliver(s)
    await until(lambda: pub.published == total, "the signals stored")
    await pub.close(1.0)
    async with webhook() as hook:
        config = tmp_path / "sinks.toml"
        config.write_text(f'[[sinks]]\ntype = "webhook"\nurl = "{hook.url}/hook"\n\n[consumer]\nbatch = 16\n'
                          f'ack_wait = 5.0\n', encoding="utf-8")
        cmd = [sys.executable, "-m", "console", "sink", "--from", nats_server.url, "--config", str(config)]

        async def sink() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stderr=asyncio.subprocess.PIPE)

        first = await sink()
        await until(lambda: len(hook.received) >= total // 3, "a third of the signals delivered")
        first.kill()  # mid-stream, as a crash
        await first.wait()
        killed_at = len(hook.received)
        assert killed_at < total
        second = await sink()
        await until(lambda: len({r.headers.get(IDEMPOTENCY_HEADER) for r in hook.received}) >= total,
                    "every signal delivered")
        # the batch the killed process fetched but never acked comes back after ack_wait (5 s): the
        # second process skips what it delivered already and acks it; only then is nothing pending
        await until_async(lambda: stream_pending(nats_server.url), (0, 0), "every signal acknowledged")
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0, err.decode()[-2000:]
    summary = json.loads(err.decode().strip().splitlines()[-1])
    keys = [r.headers.get(IDEMPOTENCY_HEADER) for r in hook.received]
    expected = sorted(f'"{signal_id("sim", "1m", s)}"' for s in signals(total))
    # Every signal, each with its idempotency key. The one request the killed process had in flight
    # (the receiver got it, the answer never reached the sender) is the only one that may come again: an
    # at-least-once window no sender can close, which is what the key is for; it is the last request
    # before the kill, and it comes again with the same key.
    repeats = [k for k, n in Counter(keys).items() if n > 1]
    assert sorted(set(keys)) == expected, summary
    assert len(keys) - len(expected) == len(repeats) <= 1, (repeats, killed_at, summary)
    assert all(k == keys[killed_at - 1] for k in repeats)
    assert sorted({Signal.from_dict(r.json()).bar_time for r in hook.received}) == [
        s.bar_time for s in signals(total)]
    assert summary["bad"] == 0 and summary["delivered"] + summary["duplicates"] <= summary["received"]
    remaining = await stream_pending(nats_server.url)
    assert remaining == (0, 0), summary  # nothing left unacknowledged or undelivered


async def until_async(read: Any, wanted: Any, what: str, timeout: float = 60.0) -> None:
    """Poll the awaitable ``read()`` until it returns ``wanted``."""
    deadline = time.monotonic() + timeout
    while (got := await read()) != wanted:
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
        await asyncio.sleep(0.2)


async def stream_pending(url: str) -> tuple[int, int]:
    client = await connect(settings_from(url))
    try:
        info = await client.jetstream().consumer_info(SIGNALS_STREAM, "tickdeck-sink")
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)
    finally:
        await client.close()


async def test_a_sink_process_rides_out_a_lost_bus(nats_server: NatsServer, tmp_path: Path) -> None:
    from engine.bus.consumer import ConsumerSettings, SignalConsumer
    from engine.sinks.base import SinkGroup
    from engine.sinks.jsonl import JsonlSink

    pub = publisher(nats_server.url, tmp_path / "buffer.jsonl")
    await pub.open()
    for s in signals(50):
        pub.deliver(s)
    await until(lambda: pub.published == 50, "the first signals stored")
    out = tmp_path / "delivered.jsonl"
    sinks = SinkGroup([JsonlSink(out, name="file")])
    consumer = SignalConsumer(settings_from(nats_server.url, connect_timeout=2.0, max_backoff=0.5),
                              ConsumerSettings(delivered=tmp_path / "sink.delivered", batch=8), sinks)
    await consumer.open()
    await sinks.start()
    task = asyncio.create_task(consumer.run())

    def lines() -> int:
        return len(out.read_bytes().splitlines()) if out.exists() else 0

    try:
        await until(lambda: lines() == 50, "the first 50 delivered")
        nats_server.kill()
        await until(lambda: consumer.state == "reconnecting", "the consumer to see the bus gone")
        for s in signals(50, start=50):
            pub.deliver(s)  # buffered by the engine meanwhile
        nats_server.start()
        await until(lambda: lines() == 100, "the rest delivered after the bus came back")
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, 10)
        await sinks.close(1.0)
        await consumer.close()
        await pub.close(1.0)
    got = sorted(json.loads(line)["bar_time"] for line in out.read_bytes().splitlines())
    assert got == [s.bar_time for s in signals(100)] and consumer.reconnects >= 1
