"""Faults, short: the headless service against a Binance-protocol server on 127.0.0.1 that disconnects,
drops the TCP connection, stalls, refuses handshakes and sends garbage and duplicates (the server of
``tickdeck bench --faults``). Every trade id, gap, duplicate, bad message and status is accounted for
exactly, in process and with ``python -m console --headless`` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.faults import FAULTS, REASONS, FaultServer, run_faults, wrong_transitions
from bench.servers.binance import GARBAGE

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)


def test_the_transition_check_rejects_the_steps_a_feed_must_never_take() -> None:
    good = ["connecting", "live", "stale", "reconnecting", "connecting", "reconnecting", "connecting", "live"]
    assert wrong_transitions(good) == []
    assert wrong_transitions(["connecting", "live", "connecting"]) == ["#2: live -> connecting"]
    assert wrong_transitions(["live"]) == ["starts with live"]
    assert wrong_transitions(["connecting", "stale"]) == ["#1: connecting -> stale"]


def test_every_trade_duplicate_garbage_frame_and_status_is_accounted_for_exactly() -> None:
    run = asyncio.run(run_faults(16.0, every=1.5, stall_s=1.0, rate=400.0, symbols=SYMBOLS, seed=3))
    book, c = run.book, run.counters
    assert set(book.faults) == set(FAULTS)  # every kind of fault happened at least once
    assert set(book.garbage) == set(GARBAGE) and book.duplicates > 0 and book.trades_unsent > 0
    # every trade id: processed by the engine, reported as a gap, or a bad-price trade
    assert run.engine_ticks + c["gaps"] + run.bad["bad price"] == book.trade_ids
    assert c["ticks"] == run.engine_ticks == book.trades_sent
    assert c["gaps"] == book.trades_unsent
    assert c["duplicates"] == book.duplicates
    expected_bad: Counter[str] = Counter()
    for kind, n in book.garbage.items():
        expected_bad[REASONS[kind]] += n
    assert run.bad == expected_bad
    # the status sequence: allowed steps only, as many of each as the faults caused
    assert wrong_transitions(run.statuses) == []
    assert Counter(run.statuses) == +book.expected_statuses()
    assert run.statuses[-1] == "live"
    assert c["reconnects"] == sum(book.faults.values()) + book.refused
    assert run.stayed_up and run.exit_code == 0
    assert run.summary["stopped_by"] == "SIGTERM" and run.summary["ticks"] == run.engine_ticks


async def test_the_headless_command_stays_up_through_reconnect_cycles_and_counts_them() -> None:
    async with FaultServer(SYMBOLS, rate=300.0, every=1.0, faults=("close", "abort", "refuse"),
                           garbage=2, duplicates=2, seed=5) as server:
        env = {**os.environ, "TICKDECK_FEEDS_BINANCE_URL": server.url,
               "TICKDECK_FEEDS_BINANCE_SYMBOLS": ",".join(SYMBOLS), "TICKDECK_HISTORY_FETCH": "false"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "--headless", "--feed", "binance", "--interval", "1s",
            "--log-format", "json", "--status-every", "0.5", cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        stderr = asyncio.create_task(proc.stderr.read())
        try:
            deadline = time.monotonic() + 180  # the first start may load the compiled kernels
            while not server.book.connections:
                assert proc.returncode is None and time.monotonic() < deadline, "no connection"
                await asyncio.sleep(0.05)
            server.start()
            while sum(server.book.faults.values()) < 6:
                assert proc.returncode is None, "the service stopped"
                assert time.monotonic() < deadline, "too few faults"
                await asyncio.sleep(0.05)
            await server.finish()  # returns once the service has read every frame sent
            assert proc.returncode is None  # still up after every fault
            # no pause here: a stop hands the trades already read to the engine before the summary
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 10.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        err = (await stderr).decode()
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    summary = records[-1]
    book = server.book
    assert summary["event"] == "summary" and summary["stopped_by"] == "SIGTERM"
    assert summary["ticks"] == book.trades_sent
    assert summary["bad_messages"] == book.garbage_total
    assert summary["reconnects"] == sum(book.faults.values()) + book.refused
    states = [r["state"] for r in records if r.get("event") == "feed_status"]
    assert wrong_transitions(states) == []
    assert Counter(states) == +book.expected_statuses()
    assert any(r.get("event") == "status" for r in records)
