"""The headless service's exit contract with every sink type: exit 0 and the summary as the last line on
stderr, after SIGTERM (within 5 s, even with a broadcast client that stopped reading) and at the end of a
replay. ``python -m console --headless`` in a subprocess, every server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.signals.events import Signal
from engine.sinks.base import Sink, SinkGroup
from engine.sinks.jsonl import JsonlSink
from tests.service_stop import ROOT, StopRun, run_once
from tests.unit.test_headless import ohlcv_csv

pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)


def stderr_tail(run: StopRun) -> str:
    return "\n".join(run.stderr.splitlines()[-15:])


async def test_sigterm_with_every_sink_type_and_a_client_that_stopped_reading_exits_0_within_5_s(
        tmp_path: Path) -> None:
    run = await run_once(tmp_path)
    assert run.code == 0, f"{run.notes}\n{stderr_tail(run)}"  # None: still running 5 s after SIGTERM
    summary = run.summary  # the last line on stderr
    assert summary["event"] == "summary" and summary["stopped_by"] == "SIGTERM" and summary["exit_code"] == 0
    n = summary["signals"]
    sinks = summary["sinks"]
    assert set(sinks) == {"stdout", "file", "hook", "tg", "metrics", "ws"}
    assert n > 0 and all(s["delivered"] == n for s in sinks.values())
    assert sinks["stdout"]["written"] == len(run.stdout.splitlines()) == n
    assert sinks["file"]["written"] == run.signals_in_file == n
    for name, received in (("hook", run.webhook_posts), ("tg", run.telegram_messages)):
        s = sinks[name]  # every signal sent, or in the dead-letter file: none lost
        assert s["sent"] + s["dead_lettered"] == n and s["pending"] == 0 and s["dropped"] == 0, s
        assert received >= s["sent"] > 0
    assert sinks["metrics"]["requests"] >= 1 and sinks["metrics"]["address"].startswith("127.0.0.1:")
    assert not sinks["metrics"]["address"].endswith(":0")
    ws = sinks["ws"]
    assert ws["clients_total"] >= 3 and ws["frames"] > 0 and ws["clients"] == 0
    # the scrape taken before the stop had the feed's gaps and duplicates as counters
    assert "# TYPE tickdeck_gaps_total counter" in run.metrics_text
    assert "\ntickdeck_duplicates_total 0\n" in run.metrics_text


async def test_sigterm_with_a_webhook_receiver_that_never_answers_still_exits_0_within_5_s(
        tmp_path: Path) -> None:
    """The webhook sink cannot drain: the stop takes its whole budget, and what it held is dead-lettered."""
    run = await run_once(tmp_path, hung_webhook=True)
    assert run.code == 0, f"{run.notes}\n{stderr_tail(run)}"
    summary = run.summary
    hook = summary["sinks"]["hook"]
    assert hook["sent"] == 0 and hook["delivered"] == summary["signals"] > 0
    assert hook["dead_lettered"] == hook["delivered"] and hook["pending"] == 0, hook
    dead = [json.loads(line) for line in (tmp_path / "hook.dead.jsonl").read_text().splitlines()]
    assert len(dead) == hook["dead_lettered"]
    assert summary["sinks"]["tg"]["sent"] + summary["sinks"]["tg"]["dead_lettered"] == summary["signals"]


def test_a_replay_to_its_end_with_every_listening_sink_exits_0_with_the_summary(tmp_path: Path) -> None:
    data = ohlcv_csv(tmp_path / "ACME.csv")
    config = tmp_path / "config.toml"
    config.write_text('[[sinks]]\ntype = "metrics"\nport = 0\n\n[[sinks]]\ntype = "websocket"\nport = 0\n',
                      encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "console", "--headless", "--config", str(config), "--file",
                           str(data), "--speed", "max"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stderr.splitlines()[-1])
    assert summary["event"] == "summary" and summary["stopped_by"] == "end"
    metrics, ws = summary["sinks"]["metrics-1"], summary["sinks"]["websocket-2"]
    assert metrics["type"] == "metrics" and not metrics["address"].endswith(":0")
    assert ws["type"] == "websocket" and ws["delivered"] == summary["signals"] > 0


# --- the building blocks, in process ------------------------------------------------------------------

class StuckSink(Sink):
    """A sink whose close never ends by itself, and whose figures cannot be read."""

    type = "stuck"

    def __init__(self) -> None:
        super().__init__("stuck")
        self.cancelled = False

    def start(self) -> None:
        pass

    def enqueue(self, signal: Signal) -> None:
        pass

    async def close(self, timeout: float = 2.0) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def stats(self) -> dict[str, Any]:
        raise OSError(9, "Bad file descriptor")


async def test_a_sink_that_overruns_its_close_is_cancelled_and_cannot_lose_the_summary(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stuck, file = StuckSink(), JsonlSink(tmp_path / "s.jsonl", name="file")
    group = SinkGroup([stuck, file])
    await group.start()
    async with asyncio.timeout(30):  # a guard against a hang, not a measurement
        await group.close(0.05)
    assert stuck.cancelled and "had not closed" in caplog.text
    stats = group.stats()  # what the summary reads: the stuck sink's failure does not hide the others
    assert stats["stuck"] == {"type": "stuck", "stats_error": "OSError: [Errno 9] Bad file descriptor"}
    assert stats["file"]["type"] == "jsonl" and "cannot read its figures" in caplog.text
    assert any(r.levelno == logging.ERROR and "stuck" in r.getMessage() for r in caplog.records)
