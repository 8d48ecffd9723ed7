"""The backtest's table, built in one place for its two front ends: ``tickdeck backtest``'s text output
(``console/backtest_cmd.py``) and the console's backtest window (``widgets/backtest_view.py``).

The cells of each row come from ``engine.backtest.group_rows``; this module decides the columns (header,
justification, style) and lays the rows out in a rich table, one section per rule and direction. What
differs between the two is only around the table: the command prints its title and notes as lines of
their own and splits the table in two on a narrow terminal; the window puts them in the table's title and
caption. Only rich is imported here (the engine when a table is built), so importing it stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

if TYPE_CHECKING:
    from engine.backtest import Report

COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("rule", "left", "bold"), ("dir", "left", None), ("signals", "right", None),
    ("/1k bars", "right", None), ("ahead", "right", None), ("n", "right", None),
    ("hit %", "right", None), ("rnd", "right", "dim"), ("mean", "right", None), ("rnd", "right", "dim"),
    ("median", "right", None), ("rnd", "right", "dim"), ("MAE", "right", None), ("rnd", "right", "dim"),
)
"""(header, justify, style) of each column, in the order of ``group_rows``' cells; "MAE" gets its bar
count (``MAE20``) when a table is built."""
ALL_COLUMNS = tuple(range(len(COLUMNS)))


def span(report: Report) -> str:
    """What the report covers: ``1,000 bars of 1s, <first bar's time> to <last bar's time>``."""
    import numpy as np

    from engine.backtest import format_interval, iso_times

    first, last = iso_times(np.array([report.first_ns, report.last_ns], dtype=np.int64))
    return f"{report.bars:,} bars of {format_interval(report.interval_ns)}, {first} to {last}"


def backtest_table(report: Report, columns: Sequence[int] = ALL_COLUMNS, *, wrap_figures: bool = False,
                   **options: Any) -> Table:
    """The figures of ``report`` per rule, direction and horizon, in ``columns`` (indices into
    ``COLUMNS``). The rule's name never wraps; the other cells wrap only with ``wrap_figures``. ``options``
    go to ``rich.table.Table`` (title, caption, edges)."""
    from engine.backtest import MAE_BARS, group_rows

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, **options)
    for i in columns:
        name, justify, style = COLUMNS[i]
        header = f"MAE{MAE_BARS}" if name == "MAE" else name
        table.add_column(header, justify=justify, style=style,  # type: ignore[arg-type]
                         no_wrap=name == "rule" or not wrap_figures)
    for g in report.groups:
        rows = group_rows(g)
        for j, row in enumerate(rows):
            table.add_row(*(row[i] for i in columns), end_section=j == len(rows) - 1)
    return table
