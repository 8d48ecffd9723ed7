"""The position book: average cost, partial closes and flips booked exactly, fees, edits and undo."""

from __future__ import annotations

import random
from decimal import Decimal as D
from fractions import Fraction as F

import pytest

from engine.positions.book import (
    MAX_LOTS,
    QUANTUM,
    UNDO_DEPTH,
    Lot,
    Position,
    PositionBook,
    PositionError,
)


def lot(q: str, p: str, fee: str = "0") -> Lot:
    return Lot(D(q), D(p), D(fee))


# --- the arithmetic, by hand ------------------------------------------------------------------------
def test_lots_combine_by_average_cost_with_fees_in_the_cost_basis() -> None:
    pos = Position.of("AAPL", [lot("10", "100", "1"), lot("30", "120", "3")])
    assert pos.quantity == 40
    assert pos.cost == D("4604")  # 1000 + 1 + 3600 + 3
    assert pos.average_cost == D("115.1")
    assert pos.realized == 0


def test_a_partial_close_books_realized_pnl_net_of_both_fees_shares() -> None:
    pos = Position.of("AAPL", [lot("10", "100", "1"), lot("-4", "110", "1")])
    # released cost 4/10 of 1001 = 400.4; proceeds 440; closing fee 1
    assert pos.realized == D("38.6")
    assert pos.quantity == 6 and pos.cost == D("600.6")
    assert pos.average_cost == D("100.1")  # a partial close leaves the average cost as it was


def test_a_short_is_sold_first_and_its_fee_lowers_its_entry_price() -> None:
    pos = Position.of("TSLA", [lot("-10", "100", "1")])
    assert pos.cost == D("-999") and pos.average_cost == D("99.9")
    pos = pos.apply(lot("4", "90", "1"))  # buy back 4: released 399.6 of proceeds, paid 360 + 1
    assert pos.realized == D("38.6")
    assert pos.quantity == -6


def test_a_flip_closes_everything_then_opens_the_rest_splitting_the_fee_by_quantity() -> None:
    pos = Position.of("AAPL", [lot("6", "100")]).apply(lot("-10", "90", "2"))
    assert pos.realized == D("-60") - D("1.2")  # 6 closed at a 10 loss, 6/10 of the fee
    assert pos.quantity == -4
    assert pos.cost == D("-360") + D("0.8")  # the new short's cost basis carries 4/10 of the fee
    assert pos.fees == 2


def test_closing_the_whole_position_releases_all_its_cost_with_no_rounding_left() -> None:
    pos = Position.of("X", [lot("3", "1", "0.01"), lot("-1", "2"), lot("-1", "2")])
    assert pos.cost != 0  # 1/3 of 3.01 does not divide exactly: a rounded share was released twice
    pos = pos.apply(lot("-1", "2"))
    assert pos.flat and pos.cost == 0
    assert pos.realized == D("6") - D("3.01")  # exactly the cash: 6 in, 3.01 out


def test_fractional_quantities_are_exact() -> None:
    pos = Position.of("BTCUSDT", [lot("0.1", "64000.01"), lot("0.2", "64000.02"), lot("-0.3", "65000")])
    assert pos.flat
    assert pos.realized == D("0.3") * 65000 - D("0.1") * D("64000.01") - D("0.2") * D("64000.02")


@pytest.mark.parametrize(("q", "p", "fee", "why"), [
    ("0", "1", "0", "quantity cannot be zero"),
    ("1", "-1", "0", "price cannot be negative"),
    ("1", "1", "-0.5", "fee cannot be negative"),
    ("NaN", "1", "0", "quantity must be a number"),
    ("1", "Infinity", "0", "price must be a number"),
    ("1", "1e12", "0", "too large"),
    ("1", "0.0000000000001", "0", "more than 12 decimals"),
])
def test_a_bad_lot_is_refused_with_the_reason(q: str, p: str, fee: str, why: str) -> None:
    with pytest.raises(PositionError, match=why):
        Lot(D(q), D(p), D(fee))


def test_a_float_is_refused_rather_than_converted() -> None:
    with pytest.raises(PositionError, match="must be a Decimal"):
        Lot(0.1, D(1))  # type: ignore[arg-type]


# --- 10,000 random partial closes against exact rational arithmetic ---------------------------------
class Exact:
    """The same conventions, written again with Fractions and no rounding at all."""

    def __init__(self) -> None:
        self.q, self.cost, self.realized = F(0), F(0), F(0)

    def apply(self, q: F, p: F, fee: F) -> None:
        if self.q == 0 or (self.q > 0) == (q > 0):
            self.q, self.cost = self.q + q, self.cost + q * p + fee
            return
        closing = min(abs(q), abs(self.q))
        closed = closing if q > 0 else -closing
        share = closing / abs(self.q)
        fee_close = fee * closing / abs(q)
        released = self.cost * share
        self.realized += -closed * p - released - fee_close
        self.cost = self.cost - released + (q - closed) * p + (fee - fee_close)
        self.q += q


def _decimal(rng: random.Random, whole: int, places: int) -> D:
    return D(rng.randrange(1, whole * 10**places)).scaleb(-places)


def test_ten_thousand_random_partial_closes_match_exact_arithmetic() -> None:
    rng = random.Random(15)
    pos, exact = Position("X"), Exact()
    cash = F(0)
    closes = flats = 0
    rounding = F(0)  # the most the rounded cost shares can have moved cost and realized since flat
    lots = 0
    while closes < 10_000:
        places = rng.choice((0, 2, 4, 8))
        price = _decimal(rng, 5_000, rng.choice((2, 4, 6)))
        fee = _decimal(rng, 5, 2) if rng.random() < 0.7 else D(0)
        if pos.quantity.is_zero() or rng.random() < 0.3:  # open or add, long or short
            side = rng.choice((1, -1)) if pos.quantity.is_zero() else (1 if pos.quantity > 0 else -1)
            q = _decimal(rng, 1_000, places) * side
        else:  # close a random part, now and then all of it, or flip
            held = abs(pos.quantity)
            roll = rng.random()
            if roll < 0.05:
                part = held
            elif roll < 0.1:
                part = held + _decimal(rng, 100, places)
            else:
                part = (held * D(rng.randrange(1, 1000)) / 1000).quantize(D(1).scaleb(-8))
                if part.is_zero() or part >= held:
                    continue
            q = -part if pos.quantity > 0 else part
            closes += 1
            rounding += F(QUANTUM)  # half a quantum for the cost share, half for a flip's fee share
        pos = pos.apply(Lot(q, price, fee))
        exact.apply(F(q), F(price), F(fee))
        lots += 1
        cash -= F(q) * F(price) + F(fee)
        assert F(pos.quantity) == exact.q
        assert F(pos.realized) - F(pos.cost) == cash  # no money created or lost, ever, exactly
        assert abs(F(pos.cost) - exact.cost) <= rounding
        assert abs(F(pos.realized) - exact.realized) <= rounding
        if pos.quantity.is_zero():
            flats += 1
            assert pos.cost == 0 and F(pos.realized) == exact.realized  # flat: exact to the last digit
            rounding = F(0)
            exact.realized = F(pos.realized)  # both start the next round from the same figure
    assert flats > 100 and lots > 10_000


# --- the book: changes and undo --------------------------------------------------------------------
def test_add_reports_what_a_close_realized() -> None:
    book = PositionBook()
    first = book.add("AAPL", lot("10", "100"))
    assert first.before is None and first.realized == 0
    fill = book.add("AAPL", lot("-10", "105"))
    assert fill.realized == 50 and fill.after.flat
    assert "AAPL" in book  # a flat position stays: it holds realized P&L


def test_undo_takes_back_each_change_last_first_and_puts_a_deleted_position_back_in_its_place() -> None:
    book = PositionBook()
    for symbol in ("AAPL", "MSFT", "NVDA"):
        book.add(symbol, lot("1", "10"))
    book.add("MSFT", lot("-1", "12"))
    book.edit_lot("AAPL", 0, lot("2", "10"))
    book.delete("MSFT")
    assert book.symbols() == ("AAPL", "NVDA")
    assert book.undo() == ("MSFT", book.get("MSFT"))
    assert book.symbols() == ("AAPL", "MSFT", "NVDA")
    assert book.get("MSFT").realized == 2  # type: ignore[union-attr]
    symbol, position = book.undo()  # type: ignore[misc]
    assert symbol == "AAPL" and position is not None and position.quantity == 1
    book.undo()  # the close of MSFT
    assert book.get("MSFT").quantity == 1  # type: ignore[union-attr]
    book.undo()
    book.undo()
    book.undo()  # NVDA, MSFT, AAPL created: undone, gone
    assert len(book) == 0 and book.undo() is None


def test_edit_and_delete_a_lot_refold_the_position() -> None:
    book = PositionBook()
    book.add("AAPL", lot("10", "100"))
    book.add("AAPL", lot("-5", "110"))
    assert book.get("AAPL").realized == 50  # type: ignore[union-attr]
    book.edit_lot("AAPL", -1, lot("-5", "120"))
    assert book.get("AAPL").realized == 100  # type: ignore[union-attr]
    book.delete_lot("AAPL", 1)
    assert book.get("AAPL").realized == 0 and book.get("AAPL").quantity == 10  # type: ignore[union-attr]
    assert book.delete_lot("AAPL", 0) is None and "AAPL" not in book
    with pytest.raises(PositionError, match="no position in AAPL"):
        book.delete("AAPL")
    book.undo()
    with pytest.raises(PositionError, match="has 1 lots, not a lot 3"):
        book.edit_lot("AAPL", 3, lot("1", "1"))


def test_the_undo_stack_is_bounded() -> None:
    book = PositionBook()
    for i in range(UNDO_DEPTH + 20):
        book.add("AAPL", lot("1", str(i + 1)))
    undone = 0
    while book.undo() is not None:
        undone += 1
    assert undone == UNDO_DEPTH
    assert book.get("AAPL").quantity == 20  # type: ignore[union-attr]


def test_add_many_is_all_or_nothing_and_the_book_is_bounded() -> None:
    book = PositionBook()
    book.add("AAPL", lot("1", "1"))
    version = book.version
    with pytest.raises(PositionError, match="blank or hold spaces"):
        book.add_many([("MSFT", lot("1", "1")), ("BAD SYMBOL", lot("1", "1"))])
    assert book.symbols() == ("AAPL",) and book.version == version
    with pytest.raises(PositionError, match="at most 50,000 lots"):
        book.add_many([("MSFT", lot("1", "1"))] * MAX_LOTS)
    assert book.symbols() == ("AAPL",)
    assert book.add_many([("MSFT", lot("1", "1")), ("AAPL", lot("1", "3"))]) == 2
    assert book.get("AAPL").quantity == 2 and book.version > version  # type: ignore[union-attr]
    book.undo()
    book.undo()
    assert book.symbols() == ("AAPL",) and book.get("AAPL").quantity == 1  # type: ignore[union-attr]


def test_the_positions_package_imports_no_ui_and_its_cli_half_no_numpy() -> None:
    import subprocess
    import sys

    code = ("import sys, engine.positions, engine.positions.stored, engine.positions.csvfile; "
            "light = sorted(m for m in ('numpy', 'textual', 'rich') if m in sys.modules); "
            "import engine.positions.valuation, engine.positions.session; "
            "ui = sorted(m for m in sys.modules "
            "            if m.split('.')[0] in ('textual', 'rich', 'widgets', 'console')); "
            "print(light, ui)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[] []"
