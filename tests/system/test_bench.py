"""``tickdeck bench`` on a tiny stream: every code path runs and reports every figure, and the exit
status says whether the sanity check and every target passed.

Timings and ratios are never asserted (they depend on the machine); only that each is a positive number,
and that the exit status agrees with the figures. Targets are made impossible (or trivial) by
monkeypatching them, never by relying on the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import indicators as bench

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = ("tickdeck_batched", "tickdeck_single", "talipp", "talib_window", "talib_full")
NUMBERS = (
    *(f"{c}_per_s" for c in CONTENDERS),
    *(f"{c}_updates" for c in CONTENDERS),
    "batched_vs_talipp", "single_vs_talipp", "batched_vs_talib_window", "single_vs_talib_window",
    "batched_vs_talib_full", "single_vs_talib_full",
    "rss_total_mb", "rss_baseline_mb", "rss_data_mb", "engine_nbytes_mb", "rss_llvm_mb", "rss_file_mb",
    "rss_jit_mb", "rss_released_mb", "ring_nbytes_mb",
)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """``python -m bench.indicators --quick --json``: stdout must be exactly one JSON object, and the exit
    status 0 exactly when nothing failed (each failure named on stderr)."""
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    done = subprocess.run([sys.executable, "-m", "bench.indicators", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode in (0, 1), done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["failed"] == bench.failures(out)
    assert done.returncode == (0 if out["pass"] else 1), done.stderr
    assert out["pass"] == (not out["failed"])
    for line in out["failed"]:
        assert f"tickdeck bench: {line}" in done.stderr
    return out


def quick_run(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    """``tickdeck bench --quick --json`` in this process: (exit status, the JSON, stderr)."""
    status = bench.main(argparse.Namespace(json=True, quick=True))
    captured = capsys.readouterr()
    out: dict[str, Any] = json.loads(captured.out)
    return status, out, captured.err


def trivial_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "BATCHED_TARGET", 0.0)
    monkeypatch.setattr(bench, "SINGLE_TARGET", 0.0)
    monkeypatch.setattr(bench, "RSS_TARGET_MB", math.inf)


def test_json_has_every_figure_as_a_positive_number(report: dict[str, Any]) -> None:
    for key in NUMBERS:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value > 0, key
    for key in ("batched_target_met", "single_target_met", "rss_target_met"):
        assert isinstance(report[key], bool), key


def test_every_contender_runs_and_the_counts_are_whole_bars(report: dict[str, Any]) -> None:
    for c in CONTENDERS:
        assert isinstance(report[f"{c}_updates"], int)
        assert report[f"{c}_updates"] <= report["symbols"] * report["bars_per_symbol"]


def test_final_values_agree_with_talipp_and_talib(report: dict[str, Any]) -> None:
    assert report["sanity_ok"], {k: v for k, v in report.items() if k.startswith("sanity_err_")}
    assert report["sanity_err_tickdeck_single"] == 0.0


def test_memory_probe_filled_every_symbol(report: dict[str, Any]) -> None:
    assert report["memory_bars"] == bench.QUICK.mem_bars
    assert report["memory_symbols"] == bench.QUICK.mem_symbols
    assert report["memory_ring_filled"] == min(report["memory_ring"], bench.QUICK.mem_bars)


def test_memory_is_measured_with_the_ring_a_run_keeps(report: dict[str, Any]) -> None:
    from engine.backfill.sizing import ring_bars
    from engine.config import load_config

    assert report["memory_ring"] == ring_bars(load_config(env={}))  # not the bars of history fed
    assert bench.FULL.mem_bars > report["memory_ring"]  # the full run feeds more than the ring keeps
    assert report["rss_total_mb"] == pytest.approx(report["rss_baseline_mb"] + report["rss_data_mb"])


def test_tables_render(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bench.render(report)
    text = capsys.readouterr().out
    for needle in ("updates/s", "talipp", "baseline", "sanity"):
        assert needle in text


def test_mismatch_is_loud(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bench.render({**report, "sanity_ok": False, "sanity_err_talipp": 0.5})
    assert "SANITY MISMATCH" in capsys.readouterr().out


def test_a_run_with_every_target_met_and_matching_values_exits_0(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    trivial_targets(monkeypatch)
    status, out, err = quick_run(capsys)
    assert (status, out["pass"], out["failed"], out["sanity_ok"]) == (0, True, [], True)
    assert err == ""


def test_a_sanity_mismatch_exits_1_and_names_the_reference_and_output(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    trivial_targets(monkeypatch)
    real = bench.run_talipp

    def talipp_off_by_one(stream: bench.Stream, target_s: float) -> bench.Result:
        n, secs, values = real(stream, target_s)
        values[bench.SIX.index("rsi_14")] += 1.0
        return n, secs, values

    monkeypatch.setattr(bench, "run_talipp", talipp_off_by_one)  # the sanity check's reference only
    status, out, err = quick_run(capsys)
    assert status == 1
    assert (out["sanity_ok"], out["pass"], out["sanity_worst_talipp"]) == (False, False, "rsi_14")
    assert out["sanity_err_talipp"] > bench.SANITY_TOL
    [line] = out["failed"]
    assert line.startswith("sanity check failed") and "talipp" in line and "rsi_14" in line
    assert err == f"tickdeck bench: {line}\n"


def test_each_missed_target_exits_1_and_is_named(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    monkeypatch.setattr(bench, "BATCHED_TARGET", math.inf)
    monkeypatch.setattr(bench, "SINGLE_TARGET", math.inf)
    monkeypatch.setattr(bench, "RSS_TARGET_MB", 0.0)
    status, out, err = quick_run(capsys)
    assert status == 1 and out["sanity_ok"]
    assert [line.split(" = ")[0] for line in out["failed"]] == [
        "target missed: batched / talib_full", "target missed: single",
        "target missed: engine process RSS"]
    assert err.splitlines() == [f"tickdeck bench: {line}" for line in out["failed"]]


def test_memory_probe_without_the_pipeline_uses_bank_and_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "engine.tick_engine", None)  # as if engine.tick_engine cannot import
    probe = bench.memory_probe(5, 30)
    assert probe["engine"] == "BankAndHistory"
    assert probe["bars_filled"] == probe["bars"] == 30
    assert probe["nbytes"] > 0


@pytest.mark.parametrize("missing", ["talib", "talipp"])
def test_missing_anchor_exits_2_with_install_hint(missing: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(SystemExit) as exc:
        bench.main(argparse.Namespace(json=True, quick=True))
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pip install -e '.[test]'" in captured.err


class _FakeIndicator:
    """Stands in for a nautilus_trader indicator: ``update_raw`` counts its calls."""

    calls = 0

    def __init__(self, *args: object) -> None:
        self.value = 0.0

    def update_raw(self, *values: float) -> None:
        _FakeIndicator.calls += 1
        self.value = values[-1]


def test_nautilus_is_an_anchor_when_installed_and_left_out_when_not(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    trivial_targets(monkeypatch)
    fake = argparse.Namespace(MovingAverageType=argparse.Namespace(EXPONENTIAL=1), **{
        name: _FakeIndicator for name in (
            "SimpleMovingAverage", "ExponentialMovingAverage", "RelativeStrengthIndex",
            "MovingAverageConvergenceDivergence", "BollingerBands", "AverageTrueRange")})
    monkeypatch.setattr(bench, "_nautilus", lambda: fake)
    status, out, _ = quick_run(capsys)
    assert status == 0
    assert out["nautilus_updates"] > 0 and out["nautilus_per_s"] > 0
    assert out["single_vs_nautilus"] == out["tickdeck_single_per_s"] / out["nautilus_per_s"]
    assert _FakeIndicator.calls >= 7 * out["nautilus_updates"]  # seven objects per update, every bar
    bench.render(out)
    assert "nautilus_trader (incremental)" in capsys.readouterr().out
    monkeypatch.setattr(bench, "_nautilus", lambda: None)
    status, out, _ = quick_run(capsys)
    assert status == 0 and "nautilus_per_s" not in out and "single_vs_nautilus" not in out
    bench.render(out)
    assert "nautilus_trader is not installed" in capsys.readouterr().out


def test_memory_probe_loads_nothing_the_engine_does_not() -> None:
    """The probe's RSS is the engine's own: it reads it from /proc instead of importing psutil (2 MB), and
    nothing heavy a run leaves out (pandas, plotext, the UI) comes in with it."""
    code = (
        "import importlib.util, json, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "spec = importlib.util.spec_from_file_location('tickdeck_bench_probe', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "probe = mod.memory_probe(3, 5)\n"
        "tops = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'engine': probe['engine'], 'modules': tops}))\n"
    )
    here = Path(bench.__file__).resolve()
    done = subprocess.run([sys.executable, "-c", code, str(here), str(ROOT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["engine"] == "Engine"
    assert "numba" in out["modules"]  # the probe did load the engine's kernels
    heavy = ("psutil", "pandas", "pyarrow", "plotext", "textual", "rich", "aiohttp", "websockets", "talib")
    assert [m for m in heavy if m in out["modules"]] == []
