"""The backtest table is built once (``widgets.backtest_table``): ``tickdeck backtest``'s text output and
the console's backtest window show the same header and the same rows, cell for cell, for the same
report; only the title and the notes around the table differ."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from console import backtest_cmd
from tests.functional.test_backtest_palette import hand_made_report
from widgets.backtest_view import report_table


def table_lines(text: str) -> list[str]:
    """The header and row lines of a printed table, spaces collapsed: from the header to the last row."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("rule dir signals"))
    end = max(i for i, line in enumerate(lines) if "macd_cross" in line) + 3  # its three horizons
    return [line for line in lines[start:end] if line and set(line) != {"─"}]


def test_the_command_and_the_window_show_the_same_rows() -> None:
    report = hand_made_report()
    out = io.StringIO()
    backtest_cmd._print(report, Console(file=out, width=200, color_system=None))
    window = Console(width=200, record=True, color_system=None, file=io.StringIO())
    window.print(report_table(report, "BTC-USD"))
    command_rows, window_rows = table_lines(out.getvalue()), table_lines(window.export_text())
    assert command_rows == window_rows
    assert command_rows[0] == "rule dir signals /1k bars ahead n hit % rnd mean rnd median rnd MAE20 rnd"
    assert command_rows[1] == "rsi_oversold up 4 4.00 1 4 75.0 50.0 +1.23 -0.05 +1.00 0.00 -3.10 -2.00"
    assert len(command_rows) == 1 + 3 + 3  # the header, then three horizons for each rule and direction


def test_a_column_is_declared_once_for_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renaming a column where the table is built renames it in the command's output and in the window."""
    from widgets import backtest_table

    renamed = tuple(("hits" if name == "hit %" else name, justify, style)
                    for name, justify, style in backtest_table.COLUMNS)
    monkeypatch.setattr(backtest_table, "COLUMNS", renamed)
    report = hand_made_report()
    out = io.StringIO()
    backtest_cmd._print(report, Console(file=out, width=200, color_system=None))
    window = Console(width=200, record=True, color_system=None, file=io.StringIO())
    window.print(report_table(report, "BTC-USD"))
    for text in (out.getvalue(), window.export_text()):
        header = table_lines(text)[0]
        assert header == "rule dir signals /1k bars ahead n hits rnd mean rnd median rnd MAE20 rnd"
