"""Compile and cache every kernel once, so the first run of the console starts at full speed.

``make run`` and ``make test`` call this after installing: numba's first compile of the indicator
interpreter takes about a minute on a small machine; afterwards every process loads it from the
cache in well under a second. Run by hand with ``python -m engine.precompile``. The console, the
headless service and the ``indicators`` and ``backtest`` commands call :func:`compile_kernels` too when
the cache is not complete, so a first run that skipped ``make run`` shows its progress as well.

While it compiles, a progress line says which kernel, how many of how many, the time so far and, after
a few, an estimate of the time left (``engine.compile_progress``). The cache is complete once a marker
file is written at the very end, so a compile that was interrupted is finished by the next start, with
its progress shown, instead of being taken for done.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engine.compile_progress import CompileProgress, Progress, ProgressReport
from engine.files import write_atomically

if TYPE_CHECKING:
    import logging

# Light at import (no numpy, no numba): the console imports this on its event loop to learn the figures.

KERNEL_COMPILES = 374
"""Kernel compiles (one per kernel and signature, callees included) that :data:`STEPS` take on a cold
cache: the "N" of the progress line. Counted by this module; it prints the count at the end of a cold
compile ("kernels ready in 58 s: 113 compiled"), so update this figure when that count moves."""
TIME_SHARES = (0.05, 0.07, 0.09, 0.12, 0.15, 0.18, 0.2, 0.22, 0.25, 0.28, 0.4, 0.43, 0.46, 0.48, 0.52, 0.55,
               0.59, 0.75, 0.83, 1.0)
"""The share of a cold compile's time spent once 5 %, 10 %, ... 100 % of its compiles are done, for the
estimate of the time left: the indicator interpreter's specialisations finish late and take long.
Measured in thread CPU time (two runs on a loaded 2-core machine agreed within 0.01)."""
CHART_SET_COMPILES = 20
"""Compiles that a config's two new chart sets take once the catalogue's step functions are in the cache
(each set's entry points, and steps of kinds the precompiled sets do not use): the "N" of the progress
line while the console compiles them. Measured: 20 for ``sma_41`` and ``rsi_5``."""
MARKER = "complete.json"
"""Written in the cache directory when every step has run: its presence means the cache is complete."""
REPORT_EVERY_S = 5.0
"""Not on a terminal: seconds between progress lines."""


def compiled() -> bool:
    """True when this source's kernels are all in the cache (its directory is keyed by them)."""
    from engine.jit import cache_dir

    return (Path(cache_dir()) / MARKER).is_file()


def _engines() -> None:
    """The runtime's engines: the default config's, and one with a live-checked rule."""
    from engine.config import Config
    from engine.indicators.catalogue import DEFAULT_OUTPUTS
    from engine.runtime import build_engine
    from engine.signals.rules import load_rules
    from engine.ticks import make_ticks

    rules = load_rules([({"id": "live", "kind": "price", "above": 1.0}, "precompile")])
    engine = build_engine(Config())
    live = type(engine)(list(DEFAULT_OUTPUTS), 60_000_000_000, capacity=2, depth=4, rules=rules)
    for e in (engine, live):
        slot = e.add_symbol("X")
        ticks = make_ticks(3)
        ticks["sym"] = slot
        ticks["ts"] = [0, 1, 120_000_000_000]
        ticks["price"] = [1.0, 2.0, 1.5]
        ticks["size"] = 1.0
        e.ingest(ticks)
        e.close_due(10**12)
        e.refill(slot, 60_000_000_000, ticks[2:])  # replays the ring's first bar
        e.history.append(slot, 0, 1.0, 1.0, 1.0, 1.0, 1.0)


BENCH_SET: tuple[str, ...] = (
    "sma_20", "ema_20", "rsi_14", "macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
    "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2", "atr_14",
)
"""The six indicators ``tickdeck bench`` measures (its ``SIX``)."""


def chart_sets(outputs: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The indicator sets the detail pane's chart computes for an engine of ``outputs``
    (``engine.chart_data.compute_series``: its series alone, and with the engine's outputs)."""
    from engine.chart_data import SERIES

    return (tuple(SERIES), (*SERIES, *outputs))


def compile_sets(sets: Sequence[Sequence[str]]) -> None:
    """Compile (or load) every entry point of each indicator set's kernel (``engine.indicators.specialised``
    compiles one kernel per set)."""
    import numpy as np

    from engine.indicators import specialised
    from engine.indicators.bank import IndicatorBank

    one = np.zeros(1, dtype=np.int64)
    for outputs in sets:
        bank = IndicatorBank(outputs, 1, specialise=True)
        if specialised.is_compiled(bank.kernel_source):
            continue
        bank.commit(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
        bank.preview(0, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
        bank.commit_many(one, one, *(np.ones(1) for _ in range(5)))
        specialised.mark_compiled(bank.kernel_source)


def compile_chart_sets(outputs: Sequence[str], progress: CompileProgress) -> None:
    """Compile the chart's sets for an engine of ``outputs`` when they are not compiled yet, counting into
    ``progress`` (the console, at start-up, for its own config; see ``engine.indicators.specialised``)."""
    from engine.indicators import specialised
    from engine.indicators.bank import IndicatorBank

    sets = chart_sets(outputs)
    if all(specialised.is_compiled(IndicatorBank(s, 1, specialise=False).kernel_source) for s in sets):
        return
    progress.total, progress.shares = CHART_SET_COMPILES, ()  # steps of equal weight, not a first run
    with progress.watching():
        compile_sets(sets)


def _bank() -> None:
    """The indicator sets the program itself uses: ``tickdeck indicators`` (the whole catalogue), the
    bench's six, the default config's engine (its bar path), its charts, and its rules' outputs (the engine
    ``tickdeck backtest`` replays through)."""
    from engine.backtest import select_rules
    from engine.config import Config
    from engine.indicators.catalogue import DEFAULT_OUTPUTS
    from engine.runtime import build_engine
    from engine.signals.rules import required_outputs

    config = Config()
    engine_set = build_engine(config).bank.names
    backtest_set = tuple(required_outputs(select_rules(config.rules)))
    compile_sets((DEFAULT_OUTPUTS, BENCH_SET, engine_set, backtest_set, *chart_sets(engine_set)))


STEPS: tuple[Callable[[], None], ...] = (_engines, _bank)
"""Calls that compile (or load) every kernel the program uses, with every signature it uses."""


def new_progress() -> CompileProgress:
    """A counter for a compile of :data:`STEPS`."""
    return CompileProgress(KERNEL_COMPILES, shares=TIME_SHARES)


def compile_kernels(progress: CompileProgress | None = None) -> CompileProgress:
    """Run :data:`STEPS`, counting compiles into ``progress``, then mark the cache complete."""
    from engine.jit import cache_dir

    progress = progress or new_progress()
    with progress.watching():
        for step in STEPS:
            step()
    now = progress.now()
    marker = Path(cache_dir()) / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(marker, lambda fh: json.dump({"compiles": now.done, "seconds": round(now.elapsed_s, 1)},
                                                  fh))
    return progress


def compile_with_report(stream: TextIO | None = None) -> None:
    """Compile (when the cache is not complete) with a progress line on ``stream`` (standard error)."""
    if compiled():
        return
    err = stream if stream is not None else sys.stderr
    print("tickdeck: compiling the engine's kernels (once per version, about a minute)", file=err, flush=True)
    progress = new_progress()
    with ProgressReport(progress, err, every_s=REPORT_EVERY_S):
        compile_kernels(progress)
    now = progress.now()
    print(f"tickdeck: kernels ready in {now.elapsed_s:.0f} s: {now.done} compiled", file=err, flush=True)


def compile_logged(log: logging.Logger) -> None:
    """As :func:`compile_with_report`, as log records (the headless service's stderr, text or JSON)."""
    if compiled():
        return
    log.info("compiling the engine's kernels (once per version, about a minute)",
             extra={"event": "compile", "fields": {"total": KERNEL_COMPILES}})
    progress = new_progress()

    def emit(now: Progress) -> None:
        log.info("%s", now.text(), extra={"event": "compile", "fields": now.fields()})

    with ProgressReport(progress, emit=emit, every_s=REPORT_EVERY_S):
        compile_kernels(progress)
    now = progress.now()
    log.info("kernels ready in %.0f s: %d compiled", now.elapsed_s, now.done,
             extra={"event": "compile", "fields": now.fields()})


def main(argv: list[str] | None = None) -> int:
    """``--if-needed``: only when the cache is not complete; without it, every step runs again (loading
    what the cache holds)."""
    args = sys.argv[1:] if argv is None else argv
    if "--if-needed" not in args:
        from engine.jit import cache_dir

        (Path(cache_dir()) / MARKER).unlink(missing_ok=True)
    compile_with_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
