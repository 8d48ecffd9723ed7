"""A first-run kernel compile says what it is doing: which kernel, n of N, elapsed, an estimate.

The whole compile takes 30-60 s, so these tests compile a few small kernels: real engine kernels on a
cold cache directory in a subprocess (``engine.precompile`` with a subset of steps), and kernels of
this module for the numba event hook.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numba
import pytest

from engine.compile_progress import ESTIMATE_AFTER, CompileProgress, Progress, ProgressReport

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_line_counts_names_and_estimates_once_a_few_are_done() -> None:
    clock = FakeClock()
    progress = CompileProgress(20, clock=clock)
    assert not progress.started
    progress.start()
    progress.began("ingest")
    progress.began("sma_step")  # a callee compiles inside its caller
    clock.t += 2.0
    progress.ended()
    now = progress.now()
    assert (now.done, now.total, now.kernel) == (1, 20, "ingest")
    assert now.text() == "compiling kernels: 1 of 20, 2 s (ingest)"  # what compiles now
    for _ in range(ESTIMATE_AFTER - 1):
        progress.began("ema_step")
        clock.t += 2.0
        progress.ended()
    now = progress.now()
    assert now.done == ESTIMATE_AFTER
    assert now.left_s == pytest.approx(2.0 * (20 - ESTIMATE_AFTER))  # 2 s a kernel so far
    assert now.text() == f"compiling kernels: {ESTIMATE_AFTER} of 20, 10 s, about 30 s left (ingest)"
    assert now.fields() == {"done": 5, "total": 20, "kernel": "ingest", "elapsed_s": 10.0, "left_s": 30}


def test_the_estimate_follows_the_share_of_time_the_steps_take() -> None:
    """When the first half of the steps takes a fifth of the time (the big kernels finish last), 6 of 10
    done after 30 s means 36 % of the time spent (interpolated), so 53 s are left, not the 20 s that
    equal steps would give."""
    slow_end = (0.2, 1.0)
    assert Progress(6, 10, "k", 30.0, False, slow_end).left_s == pytest.approx(30.0 * 0.64 / 0.36)
    assert Progress(6, 10, "k", 30.0, False).left_s == pytest.approx(20.0)
    assert Progress(10, 10, "k", 90.0, False, slow_end).left_s == pytest.approx(0.0)
    assert Progress(4, 10, "k", 30.0, False, slow_end).left_s is None  # too few done to say


def test_a_stale_total_never_shows_more_done_than_expected() -> None:
    progress = CompileProgress(2, clock=FakeClock())
    progress.start()
    for name in ("a", "b", "c"):
        progress.began(name)
        progress.ended()
    assert "3 of 3" in progress.now().text()


@numba.njit(cache=False)
def _double(x: float) -> float:
    return 2.0 * x


@numba.njit(cache=False)
def _calls_double(x: float) -> float:
    return _double(x) + 1.0


def test_numba_compiles_are_counted_with_their_names() -> None:
    progress = CompileProgress(2, prefix=__name__)
    seen: list[tuple[int, str]] = []
    progress.on_step.append(lambda now: seen.append((now.done, now.kernel)))
    with progress.watching():
        assert _calls_double(1.5) == 4.0
    assert seen == [(1, "_double"), (2, "_calls_double")]  # the callee first, inside its caller
    assert progress.now().finished
    with progress.watching():
        _calls_double(2.0)  # compiled already: no event, nothing counted
    assert progress.now().done == 2


def test_precompile_on_a_cold_cache_prints_a_line_per_step_then_nothing(tmp_path: Path) -> None:
    """A subset of real engine kernels compiled into an empty cache directory: each step's line says
    n of N and the kernel; the cache is then complete, and ``--if-needed`` prints nothing."""
    script = (
        "import numpy as np\n"
        "from engine import precompile\n"
        "from engine.indicators.kernels.common import neumaier, ring_count, ring_get\n"
        "precompile.STEPS = (lambda: neumaier(1.0, 0.0, 2.0), lambda: ring_count(np.zeros((4, 1)), 0, 0),\n"
        "                    lambda: ring_get(np.zeros((4, 1)), 0, 0, 2, 1))\n"
        "precompile.KERNEL_COMPILES = 3\n"
        "precompile.REPORT_EVERY_S = 0.0\n"
        "raise SystemExit(precompile.main(['--if-needed']))\n"
    )
    env = {**os.environ, "TICKDECK_NUMBA_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0] == "tickdeck: compiling the engine's kernels (once per version, about a minute)"
    steps = [line for line in lines if "compiling kernels:" in line]
    assert [line.split(": ", 2)[2].split(",")[0] for line in steps] == ["1 of 3", "2 of 3", "3 of 3"]
    assert [line.rsplit("(", 1)[1] for line in steps] == ["neumaier)", "ring_count)", "ring_get)"]
    assert lines[-1].startswith("tickdeck: kernels ready in ") and lines[-1].endswith(": 3 compiled")
    assert "\r" not in first.stderr  # not a terminal: lines, never a rewritten one
    markers = list((tmp_path / "cache").glob("numba-*/complete.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["compiles"] == 3

    again = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and again.stderr == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_rewritten_within_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    progress = CompileProgress(113, clock=FakeClock())
    progress.start()
    progress.began("a_kernel_with_a_long_name_for_a_narrow_terminal")
    stream = Terminal()
    written = threading.Event()
    write = stream.write

    def spy(text: str) -> int:
        if "1 of 113" in text:
            written.set()
        return write(text)

    stream.write = spy  # type: ignore[method-assign]
    with ProgressReport(progress, stream):
        progress.ended()
        assert written.wait(10), "no progress line within 10 s"
    out = stream.getvalue()
    assert "\n" not in out
    shown = [part.removeprefix("\x1b[K") for part in out.split("\r") if part]
    assert shown[-1] == ""  # cleared at the end, for what follows
    assert all(len(line) <= 49 for line in shown)  # never wraps
    assert "tickdeck: compiling kernels: 1 of 113, 0 s (a_ker" in shown


def test_the_headless_service_logs_the_progress_as_json(tmp_path: Path) -> None:
    """``--log-format json``: one record per step (every 0 s here), ``"event": "compile"`` with the
    figures, then the closing record; the compile is a subset of real engine kernels on a cold cache."""
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from engine import headless, precompile\n"
        "from engine.indicators.kernels.common import neumaier, ring_count\n"
        "precompile.STEPS = (lambda: neumaier(1.0, 0.0, 2.0), lambda: ring_count(np.zeros((4, 1)), 0, 0))\n"
        "precompile.KERNEL_COMPILES = 2\n"
        "precompile.REPORT_EVERY_S = 0.0\n"
        "restore = headless.install_logging('json', sys.stderr)\n"
        "precompile.compile_logged(headless.log)\n"
        "restore()\n"
    )
    env = {**os.environ, "TICKDECK_NUMBA_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert {r["event"] for r in records} == {"compile"}
    steps = [r for r in records if "of 2" in r["message"]]
    assert [(r["done"], r["total"], r["kernel"]) for r in steps] == [(1, 2, "neumaier"), (2, 2, "ring_count")]
    assert records[0]["message"].startswith("compiling the engine's kernels")
    assert records[-1]["message"].endswith(": 2 compiled")
