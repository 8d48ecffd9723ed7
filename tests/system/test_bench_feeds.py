"""``tickdeck bench --feeds`` runs both paths end to end, reports every figure and checks itself; its exit
status says whether every target and check passed. Timings are never asserted: targets are made
impossible by monkeypatching them, and the exit status is only checked against the figures."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import feeds as bench_feeds

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_figure() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.feeds", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    for key in ("sim_engine_ticks_per_s", "engine_only_ticks_per_s", "ws_messages_per_s",
                "ws_latency_p50_ms", "ws_latency_p99_ms"):
        assert result[key] > 0, key
    assert result["ws_messages"] == result["ws_messages_sent"] == 5_000  # every frame reached the engine
    assert result["sim_ticks"] >= 50_000
    assert result["ccxt_skipped"] == ""  # ccxt is installed by make test, and the stand-in is here
    for key in ("ccxt_messages_per_s", "ccxt_latency_p50_ms", "ccxt_latency_p99_ms", "ccxt_vs_binance"):
        assert result[key] > 0, key
    assert result["ccxt_messages"] == result["ccxt_messages_sent"] == 2_000  # through ccxt, none lost
    assert result["failed"] == bench_feeds.failures(result)
    assert done.returncode == (0 if result["pass"] else 1), done.stderr
    for line in result["failed"]:
        assert f"tickdeck bench --feeds: {line}" in done.stderr


def test_the_websocket_run_loads_every_kernel_before_its_clock_starts() -> None:
    """Alone in a fresh interpreter (``--feeds`` runs the sim first, which would load the kernels for
    it): the warm-up ingests real ticks, and no kernel is loaded once the clock runs."""
    code = ("import asyncio, json\nfrom bench.ws import bench_ws\n"
            "from bench.feeds import SIX\nprint(json.dumps(asyncio.run(bench_ws(500, SIX))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=True)
    result = json.loads(done.stdout)
    assert result["ws_warmup_ticks"] > 0
    assert result["ws_kernels_loaded_in_window"] == 0
    assert result["ws_messages"] == 500


def test_missed_targets_exit_1_and_are_named(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_feeds, "TARGET_SIM", math.inf)
    monkeypatch.setattr(bench_feeds, "TARGET_WS", math.inf)
    status = bench_feeds.main(argparse.Namespace(json=True, quick=True))
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert status == 1
    assert (result["sim_target_met"], result["ws_target_met"], result["pass"]) == (False, False, False)
    assert [line.split(" = ")[0] for line in result["failed"]] == [
        "target missed: sim -> engine", "target missed: Binance-protocol WS -> engine"]
    assert captured.err.splitlines() == [f"tickdeck bench --feeds: {line}" for line in result["failed"]]


def passing() -> dict[str, Any]:
    return {"sim_target_met": True, "ws_target_met": True, "ws_messages": 10.0, "ws_messages_sent": 10.0,
            "sim_kernels_loaded_in_window": 0.0, "ws_kernels_loaded_in_window": 0.0}


def test_a_run_cut_short_or_paying_for_kernels_fails_its_checks() -> None:
    assert bench_feeds.failures(passing()) == []
    short = bench_feeds.failures({**passing(), "ws_messages": 7.0})
    assert short == ["check failed: 7 of the 10 frames the server sent reached the engine (the connection "
                     "dropped)"]
    lost = bench_feeds.failures({**passing(), "ccxt_messages": 9.0, "ccxt_messages_sent": 10.0})
    assert lost == ["check failed: 9 of the 10 trades the Kraken stand-in sent reached the engine through "
                    "ccxt"]
    [loaded] = bench_feeds.failures({**passing(), "ws_kernels_loaded_in_window": 1.0})
    assert "1 kernels were compiled or loaded inside the timed window of WS -> engine" in loaded


def test_the_table_names_a_miss(capsys: pytest.CaptureFixture[str]) -> None:
    r = {**passing(), "sim_engine_ticks_per_s": 1.0, "engine_only_ticks_per_s": 2.0, "ws_messages_per_s": 3.0,
         "ws_latency_p50_ms": 1.0, "ws_latency_p99_ms": 2.0, "ws_target_met": False, "pass": False}
    bench_feeds._render(r)
    text = capsys.readouterr().out
    assert "missed" in text and "some targets missed" in text
