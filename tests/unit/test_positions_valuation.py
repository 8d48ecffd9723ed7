"""Valuation per snapshot: per-row figures, totals equal to the sum of the rows as displayed, and the
previous session close per feed."""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal as D

import numpy as np
import pytest

from engine.positions.book import Lot, PositionBook
from engine.positions.session import NO_SESSION, previous_closes, session_start
from engine.positions.valuation import EXACT_UNITS, holdings, price_decimals, value
from engine.snapshot import MarketSnapshot, Quote
from widgets.formatting import decimals_for

NAN = float("nan")


def book_of(**lots: list[tuple[str, str, str]]) -> PositionBook:
    book = PositionBook()
    for symbol, items in lots.items():
        for q, p, fee in items:
            book.add(symbol, Lot(D(q), D(p), D(fee)))
    return book


def shown(x: float, decimals: int) -> D:
    """What a column prints, read back."""
    return D(f"{x:.{decimals}f}")


def test_rows_by_hand() -> None:
    book = book_of(AAPL=[("10", "100", "1")], TSLA=[("-5", "200", "0")],
                   MSFT=[("1", "10", "0"), ("-1", "12", "0")])
    h = holdings(book, ["AAPL", "NVDA", "TSLA", "MSFT"])
    v = value(h, np.array([110.0, 50.0, 190.0, 11.0]), np.array([105.0, 49.0, 195.0, NAN]),
              np.array([2, 2, 2, 2]))
    assert list(v.held) == [True, False, True, True]
    assert v.quantity[0] == 10 and np.isnan(v.quantity[1]) and v.quantity[2] == -5
    assert v.average_cost[0] == pytest.approx(100.1) and v.average_cost[2] == 200
    assert np.isnan(v.average_cost[3])
    assert list(v.value[[0, 2, 3]]) == [1100.0, -950.0, 0.0]
    assert list(v.unrealized[[0, 2, 3]]) == [99.0, 50.0, 0.0]
    assert v.unrealized_pct[0] == pytest.approx(100 * 99 / 1001) and v.unrealized_pct[2] == 5.0
    assert np.isnan(v.unrealized_pct[3])  # flat: no cost to compare with
    assert list(v.day[[0, 2]]) == [50.0, 25.0] and np.isnan(v.day[3])  # no previous close for MSFT
    assert v.realized[3] == 2.0
    assert v.weight[0] == pytest.approx(53.7) and v.weight[2] == pytest.approx(-46.3)  # of 2,050 gross
    t = v.totals
    assert (t.value, t.cost, t.unrealized, t.day, t.realized) == (150.0, 1.0, 149.0, 75.0, 2.0)
    assert t.positions == 3 and t.unpriced == 0 and t.no_previous_close == 1
    assert t.unrealized_pct == pytest.approx(100 * 149 / 2001)


def test_totals_are_the_sum_of_the_rounded_rows_not_the_rounded_sum() -> None:
    # 1.005 is a double just below 1.005: each row shows 1.00, so the total must show 3.00, where
    # rounding the sum of the unrounded values (3.0149999...) would show 3.01.
    book = book_of(A=[("1", "0", "0")], B=[("1", "0", "0")], C=[("1", "0", "0")])
    v = value(holdings(book, ["A", "B", "C"]), np.full(3, 1.005), np.full(3, NAN), np.full(3, 2))
    rows = sum(shown(x, 2) for x in v.value)
    assert shown(v.totals.value, v.totals.decimals) == rows == v.totals.exact("value")


def test_random_rows_at_their_own_precision_sum_to_the_displayed_total() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randrange(1, 60)
        book = PositionBook()
        symbols = [f"S{i}" for i in range(n)]
        for s in symbols:
            for _ in range(rng.randrange(1, 4)):
                q = D(rng.randrange(-10**6, 10**6) or 1).scaleb(-rng.choice((0, 3, 8)))
                book.add(s, Lot(q, D(rng.randrange(1, 10**7)).scaleb(-rng.choice((2, 4, 8))),
                                D(rng.randrange(0, 500)).scaleb(-2)))
        last = np.array([rng.uniform(0.00001, 70_000) if rng.random() > 0.1 else NAN for _ in symbols])
        prev = last * np.array([rng.uniform(0.9, 1.1) for _ in symbols])
        prev[rng.randrange(n)] = NAN
        known = np.array([rng.choice((-1, 0, 2, 4, 8)) for _ in symbols])
        v = value(holdings(book, symbols), last, prev, price_decimals(last, known))
        t = v.totals
        for name in ("value", "cost", "unrealized", "day", "realized"):
            column = getattr(v, name)
            rows = sum((shown(x, int(d)) for x, d in zip(column, v.decimals, strict=True) if np.isfinite(x)),
                       D(0))
            assert t.exact(name) == rows, name
            if abs(t.units[name]) < EXACT_UNITS:
                assert shown(getattr(t, name), t.decimals) == rows, name


def test_unpriced_rows_keep_cost_and_realized_but_leave_value_out() -> None:
    book = book_of(A=[("2", "10", "0")], B=[("1", "5", "0")])
    v = value(holdings(book, ["A", "B"]), np.array([11.0, NAN]), np.array([10.0, 4.0]), np.array([2, 2]))
    assert np.isnan(v.value[1]) and np.isnan(v.day[1]) and v.cost[1] == 5.0
    assert v.totals.value == 22.0 and v.totals.cost == 25.0 and v.totals.unpriced == 1
    assert v.weight[0] == 100.0 and np.isnan(v.weight[1])


def test_huge_sums_stay_exact() -> None:
    book = book_of(**{f"S{i}": [("999999999", "999999.99999999", "0")] for i in range(3)})
    v = value(holdings(book, ["S0", "S1", "S2"]), np.full(3, 999999.99999999), np.full(3, NAN), np.full(3, 8))
    assert list(v.decimals) == [0, 0, 0]  # 1e15: a double holds no decimals of it
    rows = sum(shown(x, 0) for x in v.value)
    assert v.totals.exact("value") == rows


def test_an_empty_list_and_a_list_without_positions_value_to_zero() -> None:
    v = value(holdings(PositionBook(), []), np.array([]), np.array([]), np.array([], dtype=np.int64))
    assert v.totals.value == 0 and v.totals.positions == 0
    v = value(holdings(PositionBook(), ["A"]), np.array([1.0]), np.array([1.0]), np.array([2]))
    assert np.isnan(v.value[0]) and v.totals.value == 0 and np.isnan(v.totals.unrealized_pct)


def test_holdings_carry_the_books_version_so_a_caller_can_cache_them() -> None:
    book = book_of(A=[("1", "1", "0")])
    h = holdings(book, ["A"])
    assert h.version == book.version
    book.add("A", Lot(D(1), D(1)))
    assert holdings(book, ["A"]).version != h.version
    with pytest.raises(ValueError, match="1 rows"):
        value(h, np.array([1.0, 2.0]), np.array([1.0]), np.array([2]))


def test_price_decimals_are_the_price_columns() -> None:
    values = [0.0, NAN, 1e-9, 0.000123456, 0.5, 5.12, 99.99, 128.16, 43210.5, 1e12, -3.3]
    values += [random.Random(i).uniform(0, 10 ** random.Random(i).randrange(-6, 8)) for i in range(300)]
    got = price_decimals(np.array(values))
    assert list(got) == [decimals_for(x) for x in values]
    assert list(price_decimals(np.array([1.0, 1.0, 1.0]), np.array([-1, 0, 12]))) == [3, 0, 8]


def test_a_snapshots_prices_are_read_in_row_order() -> None:
    def quote(symbol: str, last: float, decimals: int | None, previous: float = math.nan) -> Quote:
        return Quote(symbol, last, 0.0, 0.0, 0.0, np.array([last]), {}, 0, decimals, previous)

    snapshot = MarketSnapshot(1, (quote("AAPL", 5.125, 2, 5.0), quote("BTC", 64000.5, None)), 0, 0)
    last, known, previous = snapshot.market(["BTC", "NEW", "AAPL"])
    assert list(known) == [-1, -1, 2] and last[0] == 64000.5 and np.isnan(last[1]) and last[2] == 5.125
    assert np.isnan(previous[0]) and np.isnan(previous[1]) and previous[2] == 5.0
    assert list(price_decimals(last, known)) == [2, 2, 2]  # a $5 stock at its tick's two decimals


# --- the previous session close ---------------------------------------------------------------------
def ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000


@pytest.mark.parametrize("feed", ["binance", "coinbase", "sim", "replay"])
def test_crypto_the_sim_and_replays_start_a_session_at_midnight_utc_of_their_clock(feed: str) -> None:
    assert session_start(feed, ns("2026-12-05T13:45:10")) == ns("2026-12-05T00:00:00")
    assert session_start(feed, ns("2026-12-05T00:00:00")) == ns("2026-12-05T00:00:00")
    assert session_start(feed, ns("2019-03-01T23:59:59")) == ns("2019-03-01T00:00:00")  # a replay's past


def test_yahoo_takes_the_latest_regular_session_that_has_started() -> None:
    thu, fri = (ns("2026-12-03T14:30:00"), ns("2026-12-03T21:00:00")), (ns("2026-12-04T14:30:00"),
                                                                          ns("2026-12-04T21:00:00"))
    sessions = [(fri[0] // 10**9, fri[1] // 10**9), (thu[0] // 10**9, thu[1] // 10**9)]
    assert session_start("yahoo", ns("2026-12-04T15:00:00"), sessions) == fri[0]  # during Friday
    assert session_start("yahoo", ns("2026-12-06T12:00:00"), sessions) == fri[0]  # the weekend after
    assert session_start("yahoo", ns("2026-12-04T09:00:00"), sessions) == thu[0]  # Friday's pre-market
    assert session_start("yahoo", ns("2026-12-01T09:00:00"), sessions) == NO_SESSION
    assert session_start("yahoo", ns("2026-12-04T15:00:00")) == NO_SESSION  # no periods known yet
    assert session_start("attach", ns("2026-12-04T15:00:00")) == NO_SESSION


def test_previous_close_is_the_last_bar_opened_before_the_session() -> None:
    hour = 3_600_000_000_000
    midnight = ns("2026-12-05T00:00:00")
    times = np.array([[midnight - 2 * hour, midnight - hour, midnight, midnight + hour],
                      [midnight - 2 * hour, midnight - hour, midnight, midnight + hour],
                      [midnight, midnight + hour, midnight + 2 * hour, midnight + 3 * hour],
                      [midnight - 2 * hour, midnight - hour, midnight, midnight + hour]])
    closes = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, NAN, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0],
                       [1.0, 2.0, 3.0, 4.0]])
    reported = np.array([NAN, NAN, NAN, 9.5])
    got = previous_closes(midnight, times, closes, reported)
    assert got[0] == 2.0  # the 23:00 bar held the day's last trade
    assert got[1] == 1.0  # an empty place in the ring is skipped
    assert np.isnan(got[2])  # the history does not reach back before midnight
    assert got[3] == 9.5  # a close the service reports wins
    per_row = previous_closes(np.array([midnight, midnight + 2 * hour, NO_SESSION, midnight]), times, closes)
    assert per_row[0] == 2.0 and per_row[1] == 4.0 and np.isnan(per_row[2])
