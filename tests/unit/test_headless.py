"""``tickdeck --headless``: signals on stdout and in the sinks, status and a summary on stderr, and a stop
on SIGTERM/SIGINT that drains the queue through the engine and loses nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from console.cli import main as cli_main
from engine.config import load_config
from engine.feeds.base import Feed, FeedStatus
from engine.feeds.sim import SimFeed
from engine.headless import Headless, StoppableFeed
from engine.runtime import Runtime, build_engine
from engine.signals.events import Signal
from engine.sinks.base import SinkGroup
from engine.sinks.jsonl import JsonlSink
from engine.ticks import SymbolTable, make_ticks
from tests.data import BUSY_RULE, random_walk

ROOT = Path(__file__).resolve().parents[2]
SEC = 1_000_000_000
T0 = 1_800_000_000 * SEC
SUMMARY_KEYS = {"ticks", "bars", "signals", "bad_messages", "reconnects", "runtime_s"}
STATUS_KEYS = {"ticks_per_s", "signals", "lag_p99_ms", "rss_mb", "reconnects", "bad_messages"}
BUSY_RULES = BUSY_RULE + """
[[rules]]
id = "close_x_sma"
kind = "cross"
a = "close"
b = "sma_20"
direction = "both"
"""


pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def summary_of(stderr: str) -> dict[str, Any]:
    last = stderr.rstrip("\n").splitlines()[-1]
    summary = json.loads(last)
    assert summary["event"] == "summary" and set(summary) >= SUMMARY_KEYS, summary
    return dict(summary)


def ohlcv_csv(path: Path) -> Path:
    bars = random_walk(1500, seed=3)
    rows = "".join(",".join(str(x) for x in row) + "\n" for row in bars.rows())
    path.write_text("timestamp,open,high,low,close,volume\n" + rows, encoding="utf-8")
    return path


def headless(*args: str) -> list[str]:
    return [sys.executable, "-m", "console", "--headless", *args]


# --- end to end, in a subprocess --------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_replay_to_its_end_writes_every_signal_to_stdout_and_the_file(tmp_path: Path,
                                                                        log_format: str) -> None:
    data = ohlcv_csv(tmp_path / "ACME.csv")
    out = tmp_path / "signals.jsonl"
    done = subprocess.run(headless("--feed", "replay", "--file", str(data), "--speed", "max",
                                   "--signals-out", str(out), "--log-format", log_format),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from_file = read_lines(out)
    from_stdout = [json.loads(line) for line in done.stdout.splitlines()]
    assert from_file == from_stdout and len(from_file) > 10
    signals = [Signal.from_dict(d) for d in from_file]
    assert {s.symbol for s in signals} == {"ACME"}
    summary = summary_of(done.stderr)
    assert summary["signals"] == len(from_file)
    assert (summary["ticks"], summary["bad_messages"], summary["bars"]) == (4 * 1500, 0, 1500)
    assert summary["stopped_by"] == "end" and summary["exit_code"] == 0
    if log_format == "json":
        assert all(isinstance(json.loads(line), dict) for line in done.stderr.splitlines())


@pytest.mark.parametrize(("name", "log_format"), [("SIGTERM", "json"), ("SIGINT", "text")])
def test_a_stop_signal_mid_stream_drains_and_exits_0_within_5_s(tmp_path: Path, name: str,
                                                                 log_format: str) -> None:
    signum = signal.Signals[name]
    rules = tmp_path / "rules.toml"
    rules.write_text(BUSY_RULES, encoding="utf-8")
    out = tmp_path / "signals.jsonl"
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "TICKDECK_FEEDS_SIM_RATE": "50000"}
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(headless("--feed", "sim", "--config", str(rules), "--interval", "1s",
                                         "--status-every", "0.2", "--log-format", log_format,
                                         "--signals-out", str(out)),
                                cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 240

            def wait_for(what: str, ready: Callable[[], bool]) -> None:
                while not ready():
                    assert proc.poll() is None, stderr_path.read_text()
                    assert time.monotonic() < deadline, f"no {what}"
                    time.sleep(0.05)

            wait_for("status line", lambda: b"ticks/s" in stderr_path.read_bytes())  # backfill is done
            size = out.stat().st_size
            wait_for("signals from the live stream", lambda: out.stat().st_size > size + 2_000)
            proc.send_signal(signum)
            code = proc.wait(timeout=5.0)  # the requirement: drained and gone within 5 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = stderr_path.read_text()
    assert code == 0, err
    from_file = read_lines(out)
    from_stdout = [json.loads(line) for line in stdout_path.read_text().splitlines()]
    summary = summary_of(err)
    assert summary["signals"] == len(from_file) == len(from_stdout)
    assert from_file == from_stdout
    assert summary["stopped_by"] == name
    assert summary["ticks"] > 0 and summary["sinks"]["signals-out"]["dropped"] == 0
    status = [line for line in err.splitlines() if "status" in line and "ticks/s" in line]
    assert status
    if log_format == "json":
        records = [json.loads(line) for line in err.splitlines()]
        assert all(set(r) >= STATUS_KEYS for r in records if r.get("event") == "status")
        assert any(r.get("event") == "status" for r in records)


# --- the drain, in process ---------------------------------------------------------------------------

class ScriptedSim(Feed):
    """The sim's ticks, one second per batch, on a clock of their own; asks the service to stop after
    ``stop_after`` batches, then would go on for ever."""

    name = "sim"

    def __init__(self, symbols: SymbolTable, stop_after: int) -> None:
        super().__init__(symbols)
        self.sim = SimFeed(symbols, n_symbols=12, seed=5)
        self.stop_after = stop_after
        self.clock = T0
        self.service: Headless | None = None
        self.yielded = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        try:
            yield FeedStatus(self.name, "live")
            k = 0
            while True:
                k += 1
                if k == self.stop_after + 1:
                    await asyncio.sleep(0)  # let the consumer run a little: part of the queue is processed
                    assert self.service is not None
                    self.service.request_stop("SIGTERM")
                    await asyncio.Event().wait()  # a live feed waiting for its next message
                batch = self.sim.next_batch(400, T0 + k * SEC, 1.0)
                self.clock = int(batch["ts"].max())
                self.yielded += len(batch)
                yield batch
        finally:
            self.closed = True

    def now_ns(self) -> int:
        return self.clock


def test_a_stop_puts_everything_the_feed_delivered_through_the_engine_and_the_sinks(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(BUSY_RULES, encoding="utf-8")
    config = load_config(str(rules), {"engine.interval": "1s"}, env={})
    engine = build_engine(config)
    inner = ScriptedSim(engine.symbols, stop_after=150)  # more than the runtime's queue holds
    feed = StoppableFeed(inner)
    runtime = Runtime(config, engine=engine, feed=feed)
    out = tmp_path / "signals.jsonl"
    sinks = SinkGroup([JsonlSink(out, name="file")])
    service = Headless(runtime, feed, sinks, status_every=0)
    inner.service = service

    async def go() -> int:
        await sinks.start()
        return await service.run()

    assert asyncio.run(go()) == 0
    summary = service.summary()
    assert inner.closed and feed.stopped
    assert summary["ticks"] == inner.yielded == 150 * 400  # every batch handed over was processed
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["signals"] == len(read_lines(out)) > 0
    assert summary["sinks"]["file"]["written"] == summary["signals"]


class GatheringFeed(Feed):
    """Yields one batch, then has read three more trades and waits for more to fill the next batch."""

    name = "sim"

    def __init__(self, symbols: SymbolTable) -> None:
        super().__init__(symbols)
        self.pending: np.ndarray | None = None

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield make_ticks(2)
        self.pending = make_ticks(3)
        await asyncio.Event().wait()  # the batch window: stopped here, the three must not be lost
        yield make_ticks(1)

    def take_pending(self) -> np.ndarray | None:
        pending, self.pending = self.pending, None
        return pending


def test_a_stop_in_the_middle_of_a_batch_hands_over_what_was_already_read() -> None:
    feed = StoppableFeed(GatheringFeed(SymbolTable(4)))

    async def go() -> list[int]:
        sizes = []
        async for item in feed.stream():
            assert isinstance(item, np.ndarray)
            sizes.append(len(item))
            if len(sizes) == 1:
                asyncio.get_running_loop().call_later(0.05, feed.stop)
        return sizes

    assert asyncio.run(go()) == [2, 3]  # the first batch, then the gathered trades; nothing after the stop


class FailingFeed(Feed):
    name = "sim"

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "failed", reason="gave up")
        raise ConnectionError("the exchange went away for good")


def test_a_feed_that_fails_ends_the_run_with_status_1_and_says_why_in_the_summary(tmp_path: Path) -> None:
    config = load_config(overrides={"engine.interval": "1s"}, env={})
    engine = build_engine(config)
    feed = StoppableFeed(FailingFeed(engine.symbols))
    out = tmp_path / "signals.jsonl"
    sinks = SinkGroup([JsonlSink(out, name="file")])
    service = Headless(Runtime(config, engine=engine, feed=feed), feed, sinks, status_every=0)

    async def go() -> int:
        await sinks.start()
        return await service.run()

    assert asyncio.run(go()) == 1
    summary = service.summary()
    assert summary["stopped_by"] == "error" and summary["exit_code"] == 1
    assert summary["error"] == "ConnectionError: the exchange went away for good"
    assert out.exists() and read_lines(out) == []


class GappyFeed(Feed):
    """Sim batches, counting gaps and duplicates as a feed that checks trade ids does; once a status line
    has shown them, asks the service to stop."""

    name = "sim"

    def __init__(self, symbols: SymbolTable) -> None:
        super().__init__(symbols)
        self.sim = SimFeed(symbols, n_symbols=4, seed=3)
        self.service: Headless | None = None
        self.seen_in_status: Callable[[], bool] = lambda: False

    async def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        yield FeedStatus(self.name, "live")
        for k in range(1, 10_000):
            self.counters.gaps += 3  # three trades missing before this batch
            self.counters.duplicates += 2  # and two resent ones dropped
            yield self.sim.next_batch(50, T0 + k * SEC, 1.0)
            if k >= 5 and self.seen_in_status():
                assert self.service is not None
                self.service.request_stop("SIGTERM")
                await asyncio.Event().wait()
            await asyncio.sleep(0.01)  # a live feed's pace

    def now_ns(self) -> int:
        return T0


def test_gaps_and_duplicates_are_in_the_status_lines_the_summary_and_the_metrics(
        caplog: pytest.LogCaptureFixture) -> None:
    from engine.sinks.metrics import MetricsSink

    config = load_config(overrides={"engine.interval": "1s", "feeds.sim.backfill": 0}, env={})
    engine = build_engine(config)
    inner = GappyFeed(engine.symbols)
    feed = StoppableFeed(inner)
    metrics = MetricsSink("127.0.0.1", 0)
    service = Headless(Runtime(config, engine=engine, feed=feed), feed, SinkGroup([metrics]),
                       status_every=0.05)
    metrics.figures = service.figures
    inner.service = service
    caplog.set_level("INFO", logger="tickdeck.headless")

    def status_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "status"]

    inner.seen_in_status = lambda: any(r.__dict__["fields"]["gaps"] > 0 for r in status_lines())

    async def go() -> int:
        await service.sinks.start()
        return await service.run()

    assert asyncio.run(go()) == 0
    summary = service.summary()
    gaps, duplicates = inner.counters.gaps, inner.counters.duplicates
    assert gaps > 0 and duplicates > 0 and (summary["gaps"], summary["duplicates"]) == (gaps, duplicates)
    line = next(r for r in status_lines() if r.__dict__["fields"]["gaps"] > 0)
    fields = line.__dict__["fields"]
    assert f"{fields['gaps']} gaps, {fields['duplicates']} duplicates" in line.getMessage()
    assert fields["duplicates"] * 3 == fields["gaps"] * 2
    text = metrics.render()  # what /metrics served last
    assert "# TYPE tickdeck_gaps_total counter" in text and "# TYPE tickdeck_duplicates_total counter" in text
    assert f"\ntickdeck_gaps_total {gaps}\n" in text and f"\ntickdeck_duplicates_total {duplicates}\n" in text


# --- the command line --------------------------------------------------------------------------------

def test_the_headless_options_are_listed_and_need_headless(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    text = capsys.readouterr().out
    for option in ("--headless", "--signals-out", "--log-format", "--status-every"):
        assert option in text
    assert cli_main(["--signals-out", str(tmp_path / "s.jsonl")]) == 2
    assert "--signals-out works with --headless only" in capsys.readouterr().err


def test_a_bad_sink_is_one_line_naming_the_sink_file_and_key(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text('[[sinks]]\ntype = "jsonl"\npath = "s.jsonl"\nbackups = "many"\n', encoding="utf-8")
    assert cli_main(["--headless", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"tickdeck: {path}: sink #1 (jsonl), key 'backups': must be an integer from 0 "
                           "to 1000, got 'many'")


def test_a_sink_that_cannot_open_its_file_is_a_start_up_error(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    data = ohlcv_csv(tmp_path / "ACME.csv")
    target = tmp_path / "missing-dir" / "s.jsonl"
    assert cli_main(["--headless", "--file", str(data), "--signals-out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"cannot open the signal sink {target}" in err.splitlines()[-1]
