"""A set runs on its own compiled kernel once it was compiled ahead, and on the plan interpreter at once
until then; compiling a new set (the console's chart sets for its config) counts into the same progress
the first compile shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import precompile
from engine.compile_progress import CompileProgress
from engine.indicators import codegen
from engine.indicators.bank import IndicatorBank


def test_a_new_chart_set_compiles_with_its_progress_counted_then_runs_specialised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codegen, "directory", lambda: tmp_path)  # generated modules and markers: fresh
    names = ("sma_17",)
    chart = precompile.chart_sets(names)[1]
    before = IndicatorBank(chart, 2)
    assert before.kernel is None  # not compiled ahead: the interpreter, no compile on first use
    progress = CompileProgress(10)
    precompile.compile_chart_sets(names, progress)
    now = progress.now()
    assert now.finished and now.done > 0  # the compile was counted, as the console shows it
    assert now.total == precompile.CHART_SET_COMPILES  # out of the chart sets' count, not the first run's
    after = IndicatorBank(chart, 2)
    assert after.kernel is not None
    for bank in (before, after):
        for i in range(40):
            bank.commit(1, i, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i % 7, 100.0)
        bank.preview(1, 40, 50.0, 51.0, 49.0, 50.5, 100.0)
    np.testing.assert_array_equal(after.buffer, before.buffer)
    again = CompileProgress(10)
    precompile.compile_chart_sets(names, again)
    assert not again.started  # compiled already: nothing to watch
