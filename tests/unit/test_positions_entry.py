"""The prompt's grammar: what it reads, and a message saying what was expected for what it does not."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from engine.positions.book import Lot
from engine.positions.entry import GRAMMAR, Entry, entry_text, parse_entry


@pytest.mark.parametrize(("text", "symbol", "q", "p", "fee"), [
    ("AAPL 10 @ 182.50", "AAPL", "10", "182.50", "0"),
    ("aapl 10 @ 182.50 + 1.20", "AAPL", "10", "182.50", "1.20"),
    ("  BTCUSDT -0.25@64000+3.2 ", "BTCUSDT", "-0.25", "64000", "3.2"),
    ("ETH-USD .5 @ 0", "ETH-USD", "0.5", "0", "0"),
    ("^GSPC +3 @ 5000.", "^GSPC", "3", "5000", "0"),
])
def test_a_lot_is_read(text: str, symbol: str, q: str, p: str, fee: str) -> None:
    entry = parse_entry(text, date=dt.date(2026, 12, 5))
    assert entry == Entry(symbol, Lot(D(q), D(p), D(fee), dt.date(2026, 12, 5)))


def test_the_digits_typed_are_kept_exactly() -> None:
    entry = parse_entry("AAPL 10 @ 182.50")
    assert isinstance(entry, Entry) and str(entry.lot.price) == "182.50"


@pytest.mark.parametrize(("text", "says"), [
    ("", "expected SYMBOL QUANTITY @ PRICE"),
    ("AAPL", "the quantity and the price are missing"),
    ("AAPL 10 182.50", "the @ between the quantity and the price is missing"),
    ("AAPL 10 @", "a price is missing after @"),
    ("@ 5", "the symbol or the quantity before @ is missing"),
    ("AAPL 10 20 @ 5", "only a symbol and a quantity go before @"),
    ("AAPL 10 @ 5 6", "only a price, and a fee after +, go after @"),
    ("AAPL 10 @ 5 @ 6", "there is more than one @"),
    ("AAPL 10 @ 5 +", "a fee is missing after +"),
    ("AAPL 0 @ 5", "the quantity cannot be zero"),
    ("AAPL -0.000 @ 5", "the quantity cannot be zero"),
    ("AAPL 10 @ -5", "the price cannot be negative"),
    ("AAPL 10 @ 5 + -1", "the fee cannot be negative"),
    ("AAPL nan @ 5", "the quantity must be a number, not 'nan'"),
    ("AAPL 10 @ NaN", "the price must be a number, not 'NaN'"),
    ("AAPL 10 @ inf", "the price must be a number, not 'inf'"),
    ("AAPL -Infinity @ 5", "the quantity must be a number"),
    ("AAPL 1,000 @ 5", "no thousands separators"),
    ("AAPL 1e3 @ 5", "a plain number like 10 or 0.5"),
    ("AAPL 10 @ 5 + x", "the fee must be a plain number"),
    ("AAPL 1 @ 0.0000000000001", "more than 12 decimals"),
    ("AAPL 1 @ 1000000000000", "too large"),
])
def test_what_does_not_parse_says_what_was_expected(text: str, says: str) -> None:
    answer = parse_entry(text)
    assert isinstance(answer, str)
    assert says in answer
    assert GRAMMAR in answer or says == "expected SYMBOL QUANTITY @ PRICE"


def test_the_symbol_check_is_the_callers_and_its_answer_is_the_message() -> None:
    asked = []

    def check(symbol: str) -> str | None:
        asked.append(symbol)
        return None if symbol == "AAPL" else f"{symbol} is not a symbol of the sim feed"

    assert isinstance(parse_entry("aapl 1 @ 1", check), Entry)
    assert parse_entry("ZZZZ 1 @ 1", check) == "ZZZZ is not a symbol of the sim feed"
    assert isinstance(parse_entry("ZZZZ 0 @ 1", check), str)
    assert asked == ["AAPL", "ZZZZ"]  # a lot that does not parse is not checked against the feed


@pytest.mark.parametrize("lot", [Lot(D("10"), D("182.50"), D("1.20")), Lot(D("-0.00000001"), D("0"))])
def test_an_edit_prefills_text_that_reads_back_to_the_same_lot(lot: Lot) -> None:
    assert parse_entry(entry_text("AAPL", lot)) == Entry("AAPL", lot)
