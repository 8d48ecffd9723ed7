"""``tickdeck bench --fleet`` starts a real ``nats-server -js``, headless engines publishing to it and a
``tickdeck attach nats://`` console timing what reaches its screen, reports every figure, and says by its
exit status whether every check passed. Timings are never asserted: the figures are checked for presence
and for agreeing with each other."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import fleet as bench_fleet

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("engines", "symbols_per_engine", "window_s", "engines_alive", "signals", "signals_per_s", "bars",
           "bars_per_s", "signal_samples", "signal_latency_p50_ms", "signal_latency_p99_ms",
           "snapshot_samples", "snapshot_latency_p50_ms", "snapshot_latency_p99_ms", "screen_signal_samples",
           "screen_signal_latency_p50_ms", "screen_signal_latency_p99_ms", "screen_snapshot_samples",
           "screen_snapshot_latency_p50_ms", "screen_snapshot_latency_p99_ms", "bus_cpu_pct", "bus_rss_mb")

pytestmark = pytest.mark.usefixtures("clean_env")


def test_quick_run_reports_every_figure_through_a_real_bus() -> None:
    command = [sys.executable, "-m", "console", "bench", "--fleet", "--quick", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    figures = {key: f["value"] for key, f in result["figures"].items()}
    assert set(FIGURES) <= set(figures), set(FIGURES) - set(figures)
    quick = bench_fleet.QUICK
    assert result["quick"] is True
    assert figures["engines"] == quick.engines and figures["symbols_per_engine"] == quick.symbols
    assert figures["engines_alive"] == quick.engines  # no engine died in the window
    window = figures["window_s"]
    assert window >= quick.window_s
    for count, rate in (("signals", "signals_per_s"), ("bars", "bars_per_s")):
        assert figures[count] > 0, count
        assert math.isclose(figures[rate], figures[count] / window, rel_tol=1e-3, abs_tol=0.01), rate
    # at most one bar per symbol per 1 s bar, plus the bars that closed on the window's edges
    assert figures["bars"] <= quick.engines * quick.symbols * (window + 2)
    for kind in ("signal", "snapshot", "screen_signal", "screen_snapshot"):  # at a subscriber, on screen
        assert figures[f"{kind}_samples"] > 0, kind
        p50, p99 = figures[f"{kind}_latency_p50_ms"], figures[f"{kind}_latency_p99_ms"]
        assert p50 is not None and p99 is not None and p50 <= p99, kind
    assert figures["bus_cpu_pct"] >= 0 and figures["bus_rss_mb"] > 0
    assert result["pass"] is True and result["failed"] == [] and done.returncode == 0, done.stderr


def test_an_engine_that_dies_fails_the_run(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_fleet, "engine_command",
                        lambda url: [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    code = bench_fleet.main(argparse.Namespace(quick=True, json=True))
    err = capsys.readouterr().err
    assert code == 1
    assert "engine 0 exited with 3 before publishing: boom" in err or "engine 1 exited with 3" in err, err
