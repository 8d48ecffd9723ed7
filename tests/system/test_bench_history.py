"""``tickdeck bench --history`` runs end to end against its stand-in and reports every figure and check;
its exit status says whether every target and check passed. Timings are never asserted: a target is
made impossible by monkeypatching it, and the exit status is checked against the figures."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import history as bench_history

ROOT = Path(__file__).resolve().parents[2]


def test_a_quick_run_reports_every_figure_and_checks_itself() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.history", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    figures = {k: v["value"] for k, v in result["figures"].items()}
    n, bars = bench_history.QUICK
    assert figures["symbols"] == figures["history_bars"] == n * bars  # every bar reached the engine
    assert figures["engine_s"] > 0 and figures["screen_s"] > 0
    assert figures["klines"] == n  # one page of klines per symbol (300 bars fit in one)
    # one page of aggregate trades per symbol from the forming minute's start, and for a symbol at most
    # two follow-ups, both legitimate and timing-dependent with a live tape of 40 trades a second: the
    # last trade before the minute when the minute turned just before the ask (no trade in it yet), and
    # the trades between the answer and the first streamed one when one fell between them
    assert n <= figures["aggs"] <= 3 * n
    assert figures["refused"] == figures["late_ticks"] == 0
    # both runs at Binance's weights, fewer when a minute (the stand-in's window) began between them:
    # klines and aggregate trades, and the symbols' tick sizes (exchangeInfo, weight 20 per 100 symbols)
    assert 0 < figures["weight"] <= 2 * (n * (2 + 4) + 20 * -(-n // 100)) and figures["weight"] % 2 == 0
    assert done.returncode == (0 if result["pass"] else 1)
    for line in result["failed"]:
        assert f"tickdeck bench --history: {line}" in done.stderr


def test_a_missed_target_exits_1_and_is_named(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_history, "TARGET_S", 0.0)
    status = bench_history.main(argparse.Namespace(json=True, quick=True))
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert status == 1 and not result["pass"]
    assert [line.split(" = ")[0] for line in result["failed"]] == [
        "target missed: headless: start -> every bar in the engine, s",
        "target missed: console: launch -> RSI 14 and SMA 200 on every row, s"]
    assert "tickdeck bench --history: target missed: headless" in captured.err
