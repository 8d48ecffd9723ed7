"""The total P&L over the stored bars: today's holdings valued at each sample time's last close, a
position counting from its entry (its earliest dated lot), realized P&L added throughout; bounded."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np

from engine.positions.book import Lot, PositionBook
from engine.positions.history import POINTS, entries, pnl_series, span_text
from engine.positions.valuation import holdings

DAY = 86_400_000_000_000
D0 = dt.date(2026, 11, 30)
T0 = 20_787 * DAY  # 2026-11-30 00:00 UTC


def test_positions_count_from_their_entry_at_the_last_close_before_each_sample() -> None:
    book = PositionBook()
    book.add("OLD", Lot(Decimal(2), Decimal(10), date=D0))  # held since the first day
    book.add("NEW", Lot(Decimal(-1), Decimal(50), date=D0 + dt.timedelta(days=2)))  # a short, two days on
    book.add("FLAT", Lot(Decimal(1), Decimal(5), date=D0))
    book.add("FLAT", Lot(Decimal(-1), Decimal(8), date=D0))  # realized +3, held throughout as flat
    h = holdings(book, ("OLD", "NEW", "FLAT", "NONE"))
    times = T0 + np.arange(5) * DAY  # a daily bar at each midnight, days 0..4
    bars = {"OLD": (times, np.array([10.0, 11.0, 12.0, 13.0, 14.0])),
            "NEW": (times[1:], np.array([48.0, 49.0, 47.0, 45.0]))}  # its first bar on day 1
    out = pnl_series(h, bars, entries(book, h.symbols), points=9)  # a sample every half day
    assert out is not None and len(out.t) == 9 and out.symbols == 2 and out.span_ns == 4 * DAY
    old = 2 * np.array([10, 10, 11, 11, 12, 12, 13, 13, 14]) - 20.0
    new = np.array([0, 0, 0, 0, 50 - 49, 50 - 49, 50 - 47, 50 - 47, 50 - 45], dtype=float)  # from day 2
    assert out.pnl.tolist() == (old + new + 3.0).tolist()
    assert out.pnl[-1] == (2 * 14 - 20) + (50 - 45) + 3  # the total the pane shows at the last close


def test_undated_lots_count_from_the_first_bar_and_nothing_to_span_gives_no_line() -> None:
    book = PositionBook()
    book.add("A", Lot(Decimal(1), Decimal(100)))
    h = holdings(book, ("A",))
    assert entries(book, h.symbols)[0] == np.iinfo(np.int64).min
    t = T0 + np.arange(50_000, dtype=np.int64) * 60_000_000_000  # more bars than points: sampled
    out = pnl_series(h, {"A": (t, 100.0 + np.arange(50_000) / 1000)}, entries(book, h.symbols))
    assert out is not None and len(out.pnl) == POINTS and out.pnl[0] == 0.0
    assert out.pnl[-1] == 100.0 + 49_999 / 1000 - 100.0
    assert pnl_series(h, {"A": (t[:1], np.array([1.0]))}, entries(book, h.symbols)) is None
    assert pnl_series(h, {}, entries(book, h.symbols)) is None


def test_the_span_label() -> None:
    assert span_text(6 * DAY + 1) == "6 d" and span_text(5 * 3_600_000_000_000) == "5 h"
    assert span_text(40 * 60_000_000_000) == "40 min"


def test_the_bars_read_are_bounded_in_all() -> None:
    from engine.positions.history import HISTORY_BARS, TOTAL_BARS, bars_per_symbol

    assert bars_per_symbol(1) == bars_per_symbol(10) == HISTORY_BARS
    assert bars_per_symbol(1_000) == 2_000 and bars_per_symbol(5_000) * 5_000 <= TOTAL_BARS
