"""``tickdeck bench --store`` measures every backend it can and checks what each gives back; a backend
that loads other bars than it was given makes it exit 1. Timings are never asserted."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import store as bench_store
from engine.store import BarStore

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_figure_for_sqlite_and_parquet() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.store", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    names = [b["backend"] for b in result["backends"]]
    assert names[:2] == ["sqlite", "parquet"]
    q = bench_store.QUICK
    stored = bench_store.SYMBOLS * (q.history_flushes * 1_000 + q.live_flushes)  # the refill adds none
    for b in result["backends"]:
        assert b["bars_stored"] == stored and not b["wrong_loads"]
        for key in ("bytes_per_bar", "history_append_us_per_bar", "live_append_us_per_bar",
                    "refill_upsert_us_per_bar", "load_2000_ms"):
            assert b[key] > 0, (b["backend"], key)
    assert result["pass"] is True


def test_a_backend_that_loads_wrong_bars_fails_the_run(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    real = BarStore.load

    def drops_one(self: BarStore, *args: object) -> np.ndarray:
        return real(self, *args)[1:]  # type: ignore[arg-type]

    monkeypatch.setattr(BarStore, "load", drops_one)
    assert bench_store.main(argparse.Namespace(json=True, quick=True)) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pass"] is False
    assert ("tickdeck bench --store: sqlite: loaded bars differ from those written for SYM00USDT"
            in captured.err)


def test_tickdeck_bench_store_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from console.cli import main

    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(bench_store, "main", lambda args: seen.append(args) or 0)
    assert main(["bench", "--store", "--json"]) == 0
    assert len(seen) == 1 and seen[0].store and seen[0].json
