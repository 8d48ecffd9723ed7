"""``tickdeck attach nats://``: the console over a fleet, on a real ``nats-server -js`` on 127.0.0.1.

The engines are ``BusPublisher`` s in this process (what ``tickdeck --headless --publish`` runs: the same
subjects, frames, message ids and stream), each republishing its snapshot as an engine does once a
second (here every 50 ms, to be quick); the console is built by ``build_app`` with a ``FleetRuntime``
after its handshake, as the CLI does, and driven with Pilot. Every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from console import cli
from console.app import TickdeckApp, build_app
from engine.bus import attach as attach_module
from engine.bus.attach import FleetRuntime
from engine.bus.buffer import DiskBuffer
from engine.bus.connection import Retention, connect, settings_from
from engine.bus.merge import FleetMerge
from engine.bus.publisher import BusPublisher
from engine.config import CONFIG_DIR_VAR, load_config
from engine.signals.events import Signal
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote
from tests.functional.support import wait_for
from tests.servers.hooks import closed_port
from tests.servers.nats import NatsServer
from tests.waits import until
from widgets.perf_panel import line_text, perf_lines

T0 = 1_800_000_000 * 1_000_000_000
GONE_S = 1.5  # the test's threshold (the console's is engine.bus.merge.GONE_S)

pytestmark = pytest.mark.usefixtures("clean_env")


def signal(i: int, symbol: str = "BBB") -> Signal:
    return Signal(symbol=symbol, rule="r", direction="up", bar_time=T0 + i * 60 * 10**9, price=1.0 + i,
                  values={"close": 1.0 + i}, detected_ns=i)


class Engine:
    """A publishing engine: its symbols' quotes in a snapshot republished every 50 ms."""

    def __init__(self, url: str, name: str, symbols: tuple[str, ...], work: Path) -> None:
        settings = settings_from(url, connect_timeout=2.0, max_backoff=0.5)
        self.pub = BusPublisher(settings, DiskBuffer(work / f"{name}.jsonl"), feed="sim", interval="1m",
                                engine=name, retention=Retention(), snapshot_every=0.05)
        self.symbols = symbols
        self.health = PipelineHealth(lag_p99_ms=7.0, signal_p99_ms=9.0, feed="sim")
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> MarketSnapshot:
        quotes = tuple(Quote(s, 10.0 + i, 0.1, 1.0, 5.0, np.array([9.0, 10.0 + i]), {"rsi_14": 55.0}, T0)
                       for i, s in enumerate(self.symbols))
        return MarketSnapshot(time.time_ns(), quotes, 100, 10)

    async def start(self) -> Engine:
        await self.pub.open()

        async def beat() -> None:
            while True:
                self.pub.publish(self.snapshot(), self.health)
                await asyncio.sleep(0.05)  # an engine's pace, not a wait for a condition

        self._task = asyncio.create_task(beat())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pub.close(1.0)


@contextlib.asynccontextmanager
async def console(url: str, tmp_path: Path) -> AsyncIterator[tuple[TickdeckApp, Any]]:
    runtime = FleetRuntime(settings_from(url, connect_timeout=2.0, max_backoff=0.5),
                           merge=FleetMerge(gone_s=GONE_S))
    await runtime.handshake(gather=10.0, settle=0.3)
    config = load_config(overrides={"ui.columns": list(runtime.outputs), "engine.interval": runtime.interval},
                         env={CONFIG_DIR_VAR: str(tmp_path / "config")})  # the engines' columns, as the CLI
    app = build_app(config, runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        yield app, pilot


def rows(app: TickdeckApp) -> dict[str, str]:
    """The performance panel's engine lines as drawn, by engine name."""
    sample = app.perf_panel.sample
    if sample is None:
        return {}
    lines = [line_text(line) for line in perf_lines(sample, app.perf_panel.history, 160)]
    return {v.name: next(t for t in lines if t.startswith(v.name + " ")) for v in sample.engines}


def logged(app: TickdeckApp) -> list[tuple[str, int]]:
    return [(s.symbol, s.bar_time) for s in app.signal_log.signals]


async def test_one_console_over_two_redundant_engines(nats_server: NatsServer, tmp_path: Path) -> None:
    a = await Engine(nats_server.url, "a", ("AAA", "BBB"), tmp_path).start()
    b = await Engine(nats_server.url, "b", ("BBB", "CCC"), tmp_path).start()
    for s in [signal(i) for i in range(5)]:  # before the console: its history; both engines saw them
        a.pub.deliver(s)
        b.pub.deliver(s)
    async with console(nats_server.url, tmp_path) as (app, pilot):
        await wait_for(pilot, lambda: set(app.watchlist.symbols) == {"AAA", "BBB", "CCC"},
                       "both engines' symbols in the watchlist")
        await wait_for(pilot, lambda: app.watchlist.snapshot is not None
                       and {q.symbol for q in app.watchlist.snapshot.quotes} == {"AAA", "BBB", "CCC"},
                       "a merged snapshot")
        for s in [signal(i) for i in range(5, 12)]:  # live, both engines again
            a.pub.deliver(s)
            b.pub.deliver(s)
        await wait_for(pilot, lambda: len(logged(app)) >= 12, "the twelve signals")
        await pilot.pause(0.3)
        assert sorted(logged(app)) == [("BBB", signal(i).bar_time) for i in range(12)]  # each once
        await wait_for(pilot, lambda: set(rows(app)) == {"a", "b"}, "a row per engine")
        assert all(" live " in line and "2 sym" in line for line in rows(app).values()), rows(app)
        assert app.header.state == "live" and "2 engines" in app.header.reason

        await a.stop()  # one engine goes away: its row says so, the app keeps going
        await wait_for(pilot, lambda: " gone " in rows(app).get("a", ""), "a's row gone")
        assert " live " in rows(app)["b"]
        assert app.header.state == "stale" and "(a)" in app.header.reason
        b.pub.deliver(signal(12))
        await wait_for(pilot, lambda: len(logged(app)) == 13, "a signal from the survivor")

        c = await Engine(nats_server.url, "c", ("DDD",), tmp_path).start()  # a new one appears
        await wait_for(pilot, lambda: " live " in rows(app).get("c", ""), "c's row")
        runtime = app.runtime
        assert runtime is not None and "DDD" in runtime.watch
        await wait_for(pilot, lambda: app.watchlist.symbols[-1:] == ("DDD",), "c's symbol listed")
        assert app.is_running and app.header.state == "stale"
        await c.stop()
    await b.stop()


async def test_the_console_rides_out_a_lost_bus(nats_server: NatsServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attach_module, "HISTORY", 3)  # the log opens with the last 3 signals stored
    a = await Engine(nats_server.url, "a", ("AAA",), tmp_path).start()
    for i in range(5):
        a.pub.deliver(signal(i, "AAA"))
    await until(lambda: a.pub.published == 5, "the first signals stored", 30.0)
    async with console(nats_server.url, tmp_path) as (app, pilot):
        await wait_for(pilot, lambda: len(logged(app)) == 3, "the recent signals")
        assert sorted(logged(app)) == [("AAA", signal(i).bar_time) for i in (2, 3, 4)]
        runtime = app.runtime
        assert isinstance(runtime, FleetRuntime)
        client = await connect(settings_from(nats_server.url))
        await client.publish("tickdeck.snapshots.sim.1m.x", b"{not json")  # counted and skipped
        await client.publish("tickdeck.status.sim.x", b'{"type":"pong","id":1}')
        await client.flush()
        await client.close()
        await wait_for(pilot, lambda: sum(runtime.feed.counters.bad.values()) == 2, "bad messages counted")
        assert [v.name for v in runtime.merge.views(0.0)] == ["a"]
        nats_server.kill()
        await wait_for(pilot, lambda: app.header.state == "reconnecting", "the header to say reconnecting")
        for i in range(5, 8):
            a.pub.deliver(signal(i, "AAA"))  # buffered by the engine while the bus is away
        nats_server.start()
        await wait_for(pilot, lambda: app.header.state == "live", "live again")
        await wait_for(pilot, lambda: len(logged(app)) == 6, "the signals of the outage")
        await pilot.pause(0.3)
        assert sorted(logged(app)) == [("AAA", signal(i).bar_time) for i in range(2, 8)]  # once each
        assert app.is_running and app.runtime is not None and app.runtime.feed.counters.reconnects >= 1
    await a.stop()


async def test_a_console_opened_before_any_engine(nats_server: NatsServer, tmp_path: Path) -> None:
    runtime = FleetRuntime(settings_from(nats_server.url, connect_timeout=2.0),
                           merge=FleetMerge(gone_s=GONE_S))
    await runtime.handshake(gather=0.1, settle=0.0)  # nothing to hear: an empty console
    app = build_app(load_config(env={CONFIG_DIR_VAR: str(tmp_path / "config")}), runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.header.state == "stale" and "no engine" in app.header.reason,
                       "the header to say no engine publishes")
        assert app.watchlist.message == "waiting for the publisher's first snapshot…"  # not "starting engine"
        a = await Engine(nats_server.url, "a", ("AAA",), tmp_path).start()  # it creates the streams
        a.pub.deliver(signal(0, "AAA"))
        await wait_for(pilot, lambda: " live " in rows(app).get("a", ""), "a's row")
        await wait_for(pilot, lambda: logged(app) == [("AAA", signal(0).bar_time)], "its signal")
        assert app.header.state == "live" and runtime.watch == ("AAA",)
        await a.stop()


def shown(app: TickdeckApp) -> set[str]:
    """The symbols of the newest snapshot the watchlist holds."""
    snapshot = app.watchlist.snapshot
    return {q.symbol for q in snapshot.quotes} if snapshot is not None else set()


async def test_engines_started_later_list_their_symbols_by_themselves(nats_server: NatsServer,
                                                                     tmp_path: Path) -> None:
    runtime = FleetRuntime(settings_from(nats_server.url, connect_timeout=2.0),
                           merge=FleetMerge(gone_s=GONE_S, forget_s=GONE_S))
    await runtime.handshake(gather=0.1, settle=0.0)  # an empty bus: an empty list
    app = build_app(load_config(env={CONFIG_DIR_VAR: str(tmp_path / "config")}), runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.book is not None, "the watchlists")
        assert app.watchlist.symbols == ()
        a = await Engine(nats_server.url, "a", ("AAA", "BBB"), tmp_path).start()
        await wait_for(pilot, lambda: app.watchlist.symbols == ("AAA", "BBB"), "a's symbols listed")
        b = await Engine(nats_server.url, "b", ("BBB", "CCC", "DDD"), tmp_path).start()
        await wait_for(pilot, lambda: app.watchlist.symbols == ("AAA", "BBB", "CCC", "DDD"),
                       "b's new symbols listed after a's")
        app.watchlist.select("BBB")
        await pilot.press("d")  # the user deletes one
        assert app.watchlist.symbols == ("AAA", "CCC", "DDD")
        await a.stop()
        await b.stop()
        await wait_for(pilot, lambda: runtime.watch == (), "both engines forgotten")
        # a comes back with one symbol more: every one of its symbols is news to the runtime again
        a = await Engine(nats_server.url, "a", ("AAA", "BBB", "EEE"), tmp_path).start()
        await wait_for(pilot, lambda: "EEE" in shown(app), "a's snapshot on screen again")
        assert app.watchlist.symbols == ("AAA", "CCC", "DDD", "EEE")  # BBB stays deleted, once each
        book = app.book
        assert book is not None and book.lists[0].symbols == ["AAA", "CCC", "DDD", "EEE"]
        await a.stop()


def test_an_unreachable_bus_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    assert cli.main(["attach", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tickdeck: cannot reach the bus at {url}: ConnectionRefusedError") and \
        err.count("\n") == 1, err
    assert cli.main(["attach", url, "--token-file", "x"]) == 2
    assert "[bus] creds_file or token_env" in capsys.readouterr().err
    assert cli.main(["attach", "ws://127.0.0.1:1", "--feed", "sim"]) == 2
    assert "nats:// only" in capsys.readouterr().err
