"""``tickdeck attach``: the console on a publisher's WebSocket broadcast, end to end on 127.0.0.1.

The publisher is what ``tickdeck --headless`` with a ``websocket`` sink runs: a ``Runtime`` on the fast
seeded sim whose signals go to a ``BroadcastSink`` and whose frames (snapshot and health) and feed
statuses are published through it. The console is built by ``build_app`` with a ``RemoteRuntime``, as
the CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from console import cli
from console.app import TickdeckApp, build_app
from engine import remote as remote_module
from engine.config import CONFIG_DIR_VAR, Config, load_config
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.remote import AttachError, RemoteRuntime
from engine.runtime import Runtime
from engine.signals.events import Signal
from engine.sinks.broadcast import BroadcastSink
from engine.sinks.frames import decode_snapshot, snapshot_frame
from engine.snapshot import MarketSnapshot, Quote, Update
from tests.data import BUSY_RULE
from tests.functional.conftest import FAST
from tests.functional.support import wait_for
from widgets import formatting as fmt

SIZE = (100, 30)
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "attach-s3cret-0f-24-chars"
BUSY_RULES = BUSY_RULE


@pytest.fixture
def busy_config(tmp_path: Path) -> Config:
    """The fast sim with a rule that fires every few seconds on some symbol."""
    path = tmp_path / "busy.toml"
    path.write_text(BUSY_RULES, encoding="utf-8")
    return load_config(str(path), overrides=FAST, env={CONFIG_DIR_VAR: str(tmp_path)})


class Publisher:
    """What the headless runner does with a websocket sink: signals to the sink, each frame's snapshot
    and health to ``publish``, feed statuses to ``publish_status``. Remembers what it published."""

    def __init__(self, config: Config, token: str | None = None) -> None:
        self.config = config
        self.runtime = Runtime(config)
        self.sink = BroadcastSink("127.0.0.1", 0, token=token, fps=20)
        self.snapshots: dict[int, MarketSnapshot] = {}
        self.signals: list[Signal] = []
        self._task: asyncio.Task[None] | None = None

    def on_update(self, update: Update) -> None:
        for signal in update.signals:
            self.signals.append(signal)
            self.sink.deliver(signal)
        if update.snapshot is not None:
            self.snapshots[update.snapshot.at_ns] = update.snapshot
            self.sink.publish(update.snapshot, update.health)

    async def __aenter__(self) -> Publisher:
        self.sink.start()
        await self.sink.started()
        runtime = self.runtime
        self.sink.set_source(runtime.feed.name, runtime.watch, runtime.outputs, self.config.engine.interval)
        self._task = asyncio.create_task(runtime.run(self.on_update, self.sink.publish_status))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sink.close(1.0)


def rows(app: TickdeckApp) -> dict[str, list[str]]:
    return app.watchlist.rows_text()


def same_quotes(a: MarketSnapshot, b: MarketSnapshot) -> bool:
    def key(s: MarketSnapshot) -> list[tuple[Any, ...]]:
        return [(q.symbol, q.last, q.change, q.change_pct, q.volume, q.bar_time,
                 [None if math.isnan(c) else c for c in q.closes.tolist()],
                 {k: None if math.isnan(v) else v for k, v in q.values.items()}) for q in s.quotes]

    return (a.at_ns, a.ticks, a.bars) == (b.at_ns, b.ticks, b.bars) and key(a) == key(b)


async def test_the_console_shows_the_publishers_symbols_prices_and_signals(busy_config: Config) -> None:
    async with Publisher(busy_config) as publisher:
        remote = RemoteRuntime(publisher.sink.url)
        await remote.handshake()  # as ``tickdeck attach`` does before the console opens
        assert remote.watch == publisher.runtime.watch and len(remote.watch) == busy_config.feeds.sim.symbols
        assert remote.outputs == publisher.runtime.outputs and remote.interval == "1s"
        app = build_app(busy_config, remote)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: list(rows(app)) == list(publisher.runtime.watch), "the rows")
            await wait_for(pilot, lambda: all(r[1] != fmt.MISSING for r in rows(app).values()), "prices")
            await wait_for(pilot, lambda: app.header.state == "live", "the attached feed to be live")
            assert app.header.feed == "attach" and "sim" in app.header.reason
            await wait_for(pilot, lambda: math.isfinite(app.header.tick_rate), "a tick rate")

            await pilot.press("space")  # hold one frame still and compare it with what was published
            shown = app.watchlist.snapshot
            assert shown is not None and shown.at_ns in publisher.snapshots
            assert same_quotes(shown, publisher.snapshots[shown.at_ns])
            table = rows(app)
            for quote in publisher.snapshots[shown.at_ns].quotes:
                assert table[quote.symbol][1] == fmt.price(quote.last)
            await pilot.press("space")

            await wait_for(pilot, lambda: len(app.signal_log.signals) >= 2, "signals in the log")
            published = [s.to_dict() for s in publisher.signals]
            for signal in app.signal_log.signals:
                assert signal.to_dict() in published
            assert app.header.health.lag_p99_ms >= 0.0
            assert remote.feed.counters.bad_total == 0

            await pilot.press("b")  # no local engine: a backtest says there is no history, and no crash
            assert app.is_running


async def test_a_wrong_token_shows_the_401_on_the_header(config: Config) -> None:
    sink = BroadcastSink("127.0.0.1", 0, token=TOKEN)
    sink.start()
    await sink.started()
    try:
        with pytest.raises(AttachError, match="HTTP 401: bad token"):
            await RemoteRuntime(sink.url, "wrong").handshake()
        remote = RemoteRuntime(sink.url, "wrong")
        app = build_app(config, remote)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "HTTP 401: bad token" in app.header.reason, "the 401 on the header")
            assert app.header.state == "reconnecting" and app.is_running
            assert TOKEN not in app.header.reason and "wrong" not in app.header.reason
        assert sink.stats()["refused"] >= 1
        assert "wrong" not in repr(remote)
        await RemoteRuntime(sink.url, TOKEN).handshake()
    finally:
        await sink.close(1.0)


async def test_the_publisher_going_away_is_reported_and_the_console_reconnects() -> None:
    sink = BroadcastSink("127.0.0.1", 0)
    sink.start()
    await sink.started()
    port = sink.port
    statuses: list[FeedStatus] = []
    remote = RemoteRuntime(sink.url, backoff=Backoff(0.05, 0.2))
    run = asyncio.create_task(remote.run(lambda update: None, statuses.append))
    try:
        await until(lambda: [s.state for s in statuses] == ["connecting", "live"], "live")
        await sink.close(1.0)
        await until(lambda: statuses[-1].state in ("reconnecting", "connecting"), "reconnecting")
        lost = next(s for s in statuses if s.state == "reconnecting")
        assert "1001" in lost.reason and lost.retry_in > 0
        sink = BroadcastSink("127.0.0.1", port)  # the publisher is back
        sink.start()
        await until(lambda: statuses[-1].state == "live", "live again")
        assert remote.feed.counters.reconnects >= 1
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await sink.close(1.0)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def quote(symbol: str, last: float) -> dict[str, Any]:
    return {"symbol": symbol, "last": last, "change": 0.5, "change_pct": 0.25, "volume": 3.0,
            "closes": [last - 0.5, None, last], "values": {"rsi_14": None, "cci_20": 12.5}, "bar_time": 7}


@contextlib.asynccontextmanager
async def scripted_publisher(frames: list[str | bytes]) -> AsyncIterator[str]:
    """A server that speaks the broadcast protocol from a script: hello, then ``frames``, then waits."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "feed": "sim", "symbols": ["AAA"],
                                  "outputs": ["rsi_14"], "interval": "1m", "fps": 10}))
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def test_malformed_frames_are_counted_and_skipped() -> None:
    good = {"type": "snapshot", "at_ns": 5, "ticks": 9, "bars": 2, "quotes": [quote("AAA", 10.0)],
            "health": {"lag_p99_ms": 2.5, "reconnects": 1, "from_a_newer_version": 3}}
    frames: list[str | bytes] = [
        "not json", "[]", json.dumps({"type": "snapshot", "quotes": "x"}),
        json.dumps({"type": "signal", "symbol": "AAA"}), json.dumps({"type": "status", "state": "dancing"}),
        json.dumps({"type": "from_the_future"}), json.dumps(good),
        json.dumps({"type": "status", "feed": "sim", "state": "stale", "reason": "no data for 15 s",
                    "symbols": ["AAA"]}),
    ]
    updates: list[Update] = []
    statuses: list[FeedStatus] = []
    async with scripted_publisher(frames) as url:
        remote = RemoteRuntime(url)
        run = asyncio.create_task(remote.run(updates.append, statuses.append))
        try:
            await until(lambda: bool(updates) and statuses[-1].state == "stale", "the good frames")
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    assert remote.feed.counters.bad_total == 5  # the unknown type is skipped quietly, not counted
    told, *updates = updates  # run without a handshake: the console is told hello's symbols first
    assert told == Update((), None, new_symbols=("AAA",))
    assert len(updates) == 1 and updates[0].snapshot is not None and updates[0].health is not None
    snapshot = updates[0].snapshot
    q = snapshot.quotes[0]
    assert (snapshot.at_ns, snapshot.ticks, q.symbol, q.last, q.bar_time) == (5, 9, "AAA", 10.0, 7)
    assert math.isnan(q.closes[1]) and not q.closes.flags.writeable and math.isnan(q.values["rsi_14"])
    assert updates[0].health.lag_p99_ms == 2.5 and updates[0].health.reconnects == 1
    assert statuses[-1].feed == "attach" and statuses[-1].reason == "sim: no data for 15 s"
    assert statuses[-1].symbols == ("AAA",)


def test_a_snapshot_survives_the_trip() -> None:
    closes = np.array([1.0, 2.0, float("nan")])
    closes.flags.writeable = False
    sent = MarketSnapshot(at_ns=11, quotes=(Quote("AAA", 2.0, 1.0, 100.0, 4.5, closes,
                                                  {"rsi_14": float("nan"), "x": 3.25}, 99),), ticks=3, bars=1)
    received, health = decode_snapshot(json.loads(json.dumps(snapshot_frame(sent, None), allow_nan=False)))
    assert health is None and same_quotes(received, sent)


# --- the command line -------------------------------------------------------------------------------

@contextlib.contextmanager
def sink_in_a_thread(**kw: Any) -> Iterator[BroadcastSink]:
    """A sink serving from its own event loop, for code that runs ``asyncio.run`` itself (the CLI)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> BroadcastSink:
        sink = BroadcastSink("127.0.0.1", 0, **kw)
        sink.start()
        sink.set_source("sim", ("AAA", "BBB"), ("rsi_14", "cci_20"), "5m")
        await sink.started()
        return sink

    sink = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield sink
    finally:
        asyncio.run_coroutine_threadsafe(sink.close(1.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv(CONFIG_DIR_VAR, str(tmp_path))


def test_attach_opens_the_console_with_the_publishers_columns(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[Config, Any]] = []
    def run_app(config: Config, runtime: Any = None, saved_theme: bool = True) -> int:
        opened.append((config, runtime))
        return 0

    monkeypatch.setattr("console.app.run_app", run_app)
    with sink_in_a_thread(token=TOKEN) as sink:
        monkeypatch.setenv(remote_module.TOKEN_VAR, TOKEN)
        assert cli.main(["--theme", "light", "attach", sink.url]) == 0
    (config, runtime), = opened
    assert isinstance(runtime, RemoteRuntime) and runtime.watch == ("AAA", "BBB")
    assert config.ui.columns == ("rsi_14", "cci_20") and config.engine.interval == "5m"
    assert config.ui.theme == "light"


def test_attach_mistakes_are_one_line(isolated: None, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("wrong\n", encoding="utf-8")
    with sink_in_a_thread(token=TOKEN) as sink:
        assert cli.main(["attach", sink.url, "--token-file", str(wrong)]) == 2
        expected = f"tickdeck: cannot attach to 127.0.0.1:{sink.port}: HTTP 401: bad token\n"
        assert capsys.readouterr().err == expected
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert cli.main(["attach", f"ws://127.0.0.1:{free}"]) == 2
    assert "connection refused by 127.0.0.1" in capsys.readouterr().err
    assert cli.main(["attach", "http://127.0.0.1:1"]) == 2
    assert "ws://HOST:PORT" in capsys.readouterr().err
    assert cli.main(["--feed", "binance", "attach", "ws://127.0.0.1:1"]) == 2
    assert "--feed does not apply to attach" in capsys.readouterr().err


def test_the_token_comes_from_a_file_or_the_environment_and_on_the_command_line_it_warns(
        isolated: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    opened: list[RemoteRuntime] = []
    monkeypatch.setattr("console.app.run_app", lambda config, runtime=None, saved_theme=True: opened.append(
        runtime) or 0)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n", encoding="utf-8")
    token_file.chmod(0o600)
    with sink_in_a_thread(token=TOKEN) as sink:
        assert cli.main(["attach", sink.url, "--token-file", str(token_file)]) == 0
        assert capsys.readouterr().err == ""  # read from the file, accepted by the publisher, no warning
        monkeypatch.setenv(remote_module.TOKEN_VAR, TOKEN)
        assert cli.main(["attach", sink.url]) == 0
        assert capsys.readouterr().err == ""
        monkeypatch.delenv(remote_module.TOKEN_VAR)
        assert cli.main(["attach", sink.url, "--token", TOKEN]) == 0  # still works, with a warning
        err = capsys.readouterr().err
        assert err.startswith("tickdeck: warning: --token shows the token to every user of this machine (ps)")
        assert "--token-file PATH or $TICKDECK_ATTACH_TOKEN" in err and TOKEN not in err
        assert len(opened) == 3 and sink.stats()["refused"] == 0

        # a token file that cannot be used is one line naming the file (never the token)
        missing, empty, folder = tmp_path / "missing", tmp_path / "empty", tmp_path
        empty.write_text("\n", encoding="utf-8")
        two = tmp_path / "two-lines"
        two.write_text(f"{TOKEN}\n{TOKEN}\n", encoding="utf-8")
        for path, says in ((missing, f"cannot read the token file {missing}: No such file or directory"),
                           (folder, f"cannot read the token file {folder}: Is a directory"),
                           (empty, f"the token file {empty} is empty"),
                           (two, f"the token file {two} holds more than one line")):
            assert cli.main(["attach", sink.url, "--token-file", str(path)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"tickdeck: {says}") and err.count("\n") == 1 and TOKEN not in err, err
        assert len(opened) == 3
    with pytest.raises(SystemExit) as both:
        cli.main(["attach", "ws://127.0.0.1:1", "--token", "x", "--token-file", str(token_file)])
    assert both.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_token_sent_over_plain_ws_beyond_this_machine_is_warned_about(
        isolated: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert RemoteRuntime("ws://10.20.30.40:8765", TOKEN).token_in_clear  # an address literal: no lookup
    assert not RemoteRuntime("wss://10.20.30.40:8765", TOKEN).token_in_clear
    assert not RemoteRuntime("ws://10.20.30.40:8765").token_in_clear  # no token, nothing to leak
    assert not RemoteRuntime("ws://127.0.0.1:8765", TOKEN).token_in_clear
    assert not RemoteRuntime("ws://[::1]:8765", TOKEN).token_in_clear
    monkeypatch.setattr("console.app.run_app", lambda config, runtime=None, saved_theme=True: 0)
    monkeypatch.setattr(remote_module, "is_loopback", lambda host: False)  # as if 127.0.0.1 were remote
    monkeypatch.setenv(remote_module.TOKEN_VAR, TOKEN)
    with sink_in_a_thread(token=TOKEN) as sink:
        assert cli.main(["attach", sink.url]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"tickdeck: warning: the token goes to 127.0.0.1:{sink.port} over ws:// in clear "
                          "text; use wss:// or an SSH tunnel") and TOKEN not in err


_NO_NUMBA = """
import asyncio, json, sys
import console.app, console.cli
from engine.remote import RemoteRuntime

async def main(url):
    remote = RemoteRuntime(url)
    await remote.handshake()
    app = console.app.build_app(console.cli.load_config(None, {}), remote)
    updates = []
    run = asyncio.create_task(remote.run(updates.append, lambda status: None))
    while not any(u.snapshot is not None for u in updates):
        await asyncio.sleep(0.01)
    run.cancel()
    quotes = next(u.snapshot for u in updates if u.snapshot is not None).quotes
    print(json.dumps({"symbols": [q.symbol for q in quotes], "app": type(app).__name__,
                      "heavy": sorted({"numba", "engine.tick_engine", "engine.jit"} & set(sys.modules))}))

asyncio.run(main(sys.argv[1]))
"""


async def test_the_attach_path_never_imports_numba(isolated: None) -> None:
    async with Publisher(load_config(overrides=FAST)) as publisher:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _NO_NUMBA, publisher.sink.url, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["symbols"] == list(publisher.runtime.watch) and result["app"] == "TickdeckApp"
    assert result["heavy"] == []
