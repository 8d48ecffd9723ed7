"""``tickdeck backtest FILE... [--config C] [--rules ID,...] [--seed N] [--json] [--csv PATH]``.

Replays OHLCV files through the live engine and signal detector (``engine.backtest``) and reports, per
rule and direction, the signals' forward returns, hit rates and adverse excursions next to a random-entry
baseline: a rich table on the terminal, or one JSON object with ``--json``. ``--csv PATH`` writes every
signal (symbol, rule, direction, bar time, price, signed forward returns, MAE) to PATH, atomically: a
temporary file next to it is renamed into place only when complete, so a failed run leaves nothing.

Rules come from the config (``[[rules]]``, layered as for the console); ``--rules`` picks some by id.
Mistakes (a bad file, an unknown rule id, a rule naming an unknown indicator) raise ``BacktestError``
with one line; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engine.backtest import (
    CSV_COLUMNS,
    MAE_BARS,
    BacktestError,
    Report,
    SignalTable,
    iso_times,
    select_rules,
)
from engine.backtest import run as run_backtest
from engine.config import load_config
from engine.files import write_atomically

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["BacktestError", "run"]


def run(args: argparse.Namespace) -> int:
    """The ``backtest`` command: 0 on success; raises BacktestError (and ConfigError) for mistakes."""
    target = _check_output(args.csv) if args.csv else None
    config = load_config(args.backtest_config or args.config)
    ids = [i.strip() for i in args.rules.split(",") if i.strip()] if args.rules else None
    rules = select_rules(config.rules, ids)
    from engine.precompile import compile_with_report

    compile_with_report()  # a first run compiles the kernels, with a progress line on stderr
    report = run_backtest(args.files, rules, args.seed)
    if target is not None:
        _write_atomically(report.signals, target)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(report)
    sys.stdout.flush()
    return 0


# --- the table (built by widgets.backtest_table, as in the console's backtest window) -----------------

NARROW_PARTS = ((0, 1, 2, 3, 4, 5, 6, 7), (0, 1, 4, 5, 8, 9, 10, 11, 12, 13))
"""When the whole table is wider than the terminal: two tables of these columns (each keeps the rule,
direction and horizon, so every row still says what it is about), instead of cut-off figures."""
PIPE_WIDTH = 10_000
"""The width a table is laid out in when standard output is no terminal: never narrower than it needs."""


def _print(report: Report, console: Console | None = None) -> None:
    """The report as a table on ``console`` (standard output by default), as wide as its content.

    On a terminal narrower than the table, it is printed as two narrower tables; nothing is ever cut
    off (a figure shown as ``+1…`` would be a wrong figure). No line has trailing spaces."""
    from rich.console import Console
    from rich.text import Text

    from widgets.backtest_table import ALL_COLUMNS, backtest_table, span

    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no width to fit, so never truncate
            console = Console(width=PIPE_WIDTH)
    title = f"{report.symbols:,} symbol(s), {span(report)}"
    whole = backtest_table(report, ALL_COLUMNS, show_edge=False)
    if _natural_width(console, whole) <= console.width:
        parts = [whole]
    else:
        parts = [backtest_table(report, columns, show_edge=False) for columns in NARROW_PARTS]
    _print_lines(console, Text(title, style="bold"))
    for i, table in enumerate(parts):
        if i:
            console.print()
        _print_lines(console, table)
    rate = report.bars / report.total_s if report.total_s > 0 else math.inf
    replay_rate = report.bars / report.replay_s if report.replay_s > 0 else math.inf
    notes = (f"returns in %, signed by direction; 'rnd': as many random entries per symbol (seed "
             f"{report.seed}); n: signals with that many bars ahead in their file; MAE: mean worst move "
             f"against the signal within {MAE_BARS} bars\n"
             f"{len(report.signals):,} signals; {report.bars:,} bars in {report.total_s:.2f} s "
             f"({rate:,.0f} bars/s): read {report.read_s:.2f} s, replay {report.replay_s:.2f} s "
             f"({replay_rate:,.0f} bars/s), figures {report.stats_s:.2f} s")
    _print_lines(console, Text(notes))


def _natural_width(console: Console, renderable: RenderableType, which: str = "maximum") -> int:
    """The width ``renderable`` takes (or needs, for "minimum") with no limit: ``console.measure`` would
    clamp it to the console's width."""
    measured = console.measure(renderable, options=console.options.update_width(PIPE_WIDTH))
    return int(measured.maximum if which == "maximum" else measured.minimum)


def _print_lines(console: Console, renderable: RenderableType) -> None:
    """Lay ``renderable`` out at the console's width (a table: at its own width, when that is more) and
    print it without trailing spaces: rich pads every line of a table, a title or a wrapped text to the
    full width, which a terminal shows as nothing but a file or a pipe keeps."""
    from rich.segment import Segment, Segments

    width = max(console.width, _natural_width(console, renderable, "minimum"))
    lines = console.render_lines(renderable, console.options.update_width(width), pad=False)
    out: list[Segment] = []
    for line in lines:
        while line and not line[-1].control and not line[-1].text.rstrip():
            line = line[:-1]
        if line:
            last = line[-1]
            line = [*line[:-1], Segment(last.text.rstrip(), last.style, last.control)]
        out += [*line, Segment.line()]
    console.print(Segments(out), crop=False, end="")


# --- the CSV --------------------------------------------------------------------------------------

def _write(signals: SignalTable, stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    times = iso_times(signals.bar_time)
    for i in range(len(signals)):
        numbers = [*signals.returns[i].tolist(), float(signals.mae[i])]
        writer.writerow([signals.symbol[i], signals.rule[i], signals.direction[i], times[i],
                         repr(float(signals.price[i])), *(repr(x) if x == x else "" for x in numbers)])


def _check_output(output: str) -> Path:
    target = Path(output)
    if not target.parent.is_dir():
        raise BacktestError(f"cannot write {output}: directory {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise BacktestError(f"cannot write {output}: it is a directory")
    return target


def _write_atomically(signals: SignalTable, target: Path) -> None:
    """Write next to ``target`` and rename into place: readers never see a partial file."""
    try:
        write_atomically(target, lambda fh: _write(signals, fh))
    except OSError as exc:
        raise BacktestError(f"cannot write {target}: {exc.strerror or exc}") from None
