"""``tickdeck bench`` on a tiny stream: every code path runs and reports every figure.

Timings and ratios are never asserted (they depend on the machine); only that each is a positive number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from console import bench

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = ("tickdeck_batched", "tickdeck_single", "talipp", "talib_window")
NUMBERS = (
    *(f"{c}_per_s" for c in CONTENDERS),
    *(f"{c}_updates" for c in CONTENDERS),
    "batched_vs_talipp", "single_vs_talipp", "batched_vs_talib_window", "single_vs_talib_window",
    "rss_total_mb", "rss_baseline_mb", "rss_data_mb", "engine_nbytes_mb",
)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """``python -m console.bench --quick --json``: stdout must be exactly one JSON object."""
    pytest.importorskip("talib")
    pytest.importorskip("talipp")
    done = subprocess.run([sys.executable, "-m", "console.bench", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_json_has_every_figure_as_a_positive_number(report: dict[str, Any]) -> None:
    for key in NUMBERS:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value > 0, key
    for key in ("batched_vs_talipp_target_met", "single_vs_talipp_target_met", "rss_target_met"):
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
    assert report["rss_total_mb"] == pytest.approx(report["rss_baseline_mb"] + report["rss_data_mb"])


def test_tables_render(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bench.render(report)
    text = capsys.readouterr().out
    for needle in ("updates/s", "talipp", "baseline", "sanity"):
        assert needle in text


def test_mismatch_is_loud(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    bench.render({**report, "sanity_ok": False, "sanity_err_talipp": 0.5})
    assert "SANITY MISMATCH" in capsys.readouterr().out


def test_memory_probe_without_the_pipeline_uses_bank_and_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "engine.pipeline", None)  # as if engine.pipeline cannot import
    probe = bench.memory_probe(5, 30)
    assert probe["engine"] == "BankAndHistory"
    assert probe["bars_filled"] == 30
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
