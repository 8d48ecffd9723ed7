"""What the position columns, the totals row and the portfolio pane draw, as pure functions."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.config_model import POSITION_COLUMNS as CONFIG_COLUMNS
from engine.positions.book import Lot, PositionBook
from engine.positions.valuation import holdings, price_decimals, value
from widgets.portfolio import SESSION_SAMPLES, Allocation, SessionPnl, allocation_lines, bar
from widgets.position_columns import POSITION_COLUMNS, PositionFrame, position_cell, totals_text
from widgets.watchlist_layout import GAP, SCROLLBAR, ordered, positions_layout, sort_choices, sort_keys


def frame(lots: dict[str, list[tuple[str, str]]], last: dict[str, float],
          previous: dict[str, float] | None = None) -> PositionFrame:
    book = PositionBook.of({s: [Lot(Decimal(q), Decimal(p)) for q, p in ls] for s, ls in lots.items()})
    symbols = tuple(last)
    prices = np.array([last[s] for s in symbols])
    prev = np.array([(previous or {}).get(s, math.nan) for s in symbols])
    decimals = price_decimals(prices)
    return PositionFrame.of(value(holdings(book, symbols), prices, prev, decimals), decimals.tolist())


def test_the_config_and_the_columns_name_the_same_position_columns() -> None:
    assert tuple(key for key, _, _ in POSITION_COLUMNS) == CONFIG_COLUMNS


def test_a_five_dollar_stocks_small_move_shows_at_its_own_precision() -> None:
    f = frame({"PENNY": [("1", "5.120")]}, {"PENNY": 5.124}, {"PENNY": 5.123}).get("PENNY")
    assert f is not None
    assert position_cell("pnl", f, 9) == ("+0.004", "up")  # never +0.00
    assert position_cell("day_pnl", f, 9) == ("+0.001", "up")
    assert position_cell("value", f, 10) == ("5.124", "value")
    assert position_cell("avg_cost", f, 9) == ("5.120", "value")


def test_a_row_without_a_position_is_blank_and_an_unknown_figure_a_dash() -> None:
    f = frame({"A": [("-2", "10")]}, {"A": 11.0, "B": 3.0})
    assert f.get("B") is None and position_cell("pnl", None, 9) == ("", "muted")
    a = f.get("A")
    assert a is not None
    assert position_cell("day_pnl", a, 9) == ("—", "muted")  # no previous close
    assert position_cell("quantity", a, 9) == ("-2", "value")
    assert position_cell("pnl", a, 9) == ("-2.00", "down")  # a short that rose
    assert position_cell("weight", a, 6) == ("-100.0", "value")


def test_the_totals_row_says_the_sums_of_the_rows_coloured_by_sign() -> None:
    f = frame({"A": [("3", "1.10")], "B": [("1", "200")]}, {"A": 1.234, "B": 190.0})
    text = totals_text(f.totals, 120, {"up": "green", "down": "red", "label": "dim"})
    assert "Value 193.702" in text.plain and "Cost 203.300" in text.plain
    assert "P&L -9.598" in text.plain  # 0.402 - 10.00, at the finest row's decimals
    pnl = text.plain.index("-9.598")
    assert any(span.style == "red" and span.start <= pnl < span.end for span in text.spans)
    assert "Val" in totals_text(f.totals, 80).plain and "Realized" not in totals_text(f.totals, 80).plain
    assert "Day —" in text.plain  # no row has a previous close: not a zero
    partly = frame({"A": [("3", "1.10")], "B": [("1", "200")]}, {"A": 1.234, "B": 190.0}, {"A": 1.2})
    assert "Day +0.102" in totals_text(partly.totals, 120).plain


def test_the_position_layout_keeps_whole_columns_in_the_width() -> None:
    keys = [k for k, _, _ in POSITION_COLUMNS]
    for width in (60, 80, 100, 160):
        specs = positions_layout(width, keys, 6)
        assert sum(s.width + GAP for s in specs) <= width - SCROLLBAR
        assert [s.key for s in specs][:3] == ["symbol", "last", "change_pct"]
    wide = [s.key for s in positions_layout(160, keys, 6)]
    assert wide[3:10] == keys and wide[-2:] == ["spark", "signal"]
    assert [s.key for s in positions_layout(80, keys, 6)][3:] == keys[:5]  # the rest left out whole


def test_rows_sort_by_pnl_and_rows_without_a_position_go_last() -> None:
    f = frame({"A": [("1", "10")], "B": [("1", "5")], "C": [("1", "20")]},
              {"A": 12.0, "B": 12.0, "C": 12.0, "D": 12.0})
    assert ordered(("D", "A", "B", "C"), {}, {}, "pnl", True, positions=f) == ["B", "A", "C", "D"]
    assert ordered(("D", "A", "B", "C"), {}, {}, "pnl", False, positions=f) == ["C", "A", "B", "D"]
    assert ("pnl", "P&L") in sort_choices((), ("pnl",)) and ("pnl", "P&L") not in sort_choices(())
    assert {"pnl", "pnl_pct", "day_pnl", "value", "weight"} <= set(sort_keys(()))  # saved sorts stay valid


def test_allocation_bars_largest_first_in_the_height_and_scaled_to_the_largest() -> None:
    rows = [Allocation("A", 100.0, 10.0, 2), Allocation("B", -500.0, -50.0, 2),
            Allocation("C", 400.0, 40.0, 2)]
    lines = allocation_lines(rows, 60, 2)
    assert [line[0].strip() for line in lines] == ["B", "… 2 more"]
    full = allocation_lines(rows, 60, 5)
    assert [line[0].strip() for line in full] == ["B", "C", "A"]
    assert full[0][1].strip() == "█" * len(full[0][1])  # the largest fills its bar
    assert "-50.0%" in full[0][2] and "-500.00" in full[0][2]
    assert bar(0.5, 4) == "██  " and bar(0.5, 1) == "▌" and bar(0.001, 3) == "▏  " and bar(0, 2) == "  "


def test_the_session_pnl_is_sampled_once_a_second_and_bounded() -> None:
    s = SessionPnl()
    assert s.add(1, 5.0) and not s.add(1, 6.0) and not s.add(2, math.nan)
    for second in range(2, SESSION_SAMPLES + 10):
        s.add(second, float(second))
    assert len(s.samples) == SESSION_SAMPLES and s.samples[-1] == SESSION_SAMPLES + 9
    s.reset()
    assert not s.samples


def test_ui_position_columns_names_a_wrong_column_and_its_key(tmp_path: Path) -> None:
    from engine.config import CONFIG_DIR_VAR, ConfigError, load_config

    env = {CONFIG_DIR_VAR: str(tmp_path)}
    assert load_config(overrides={"ui.position_columns": ["pnl", "quantity", "pnl"]},
                       env=env).ui.position_columns == ("pnl", "quantity")
    with pytest.raises(ConfigError, match=r"ui\.position_columns.*must be one of quantity, .*, got 'profit'"):
        load_config(overrides={"ui.position_columns": ["pnl", "profit"]}, env=env)
