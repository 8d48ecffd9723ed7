"""Positions saved with the watchlists: the round trip over a restart, per feed, and damage handled as
damaged watchlists are (set aside, said, the defaults loaded)."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.book import Book, StateError, WatchList
from console.state import STATE_DIR_VAR, StateStore, positions_change
from console.state_saver import StateSaver
from engine.positions.book import Lot, PositionBook
from engine.positions.stored import decode, encode
from tests.fuzz_settings import fuzz, tried

DEFAULTS = ("AAPL", "MSFT")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore.default({STATE_DIR_VAR: str(tmp_path / "state")})


def sample() -> PositionBook:
    book = PositionBook()
    book.add("AAPL", Lot(D("10"), D("182.50"), D("1.20"), dt.date(2026, 12, 1)))
    book.add("AAPL", Lot(D("-3"), D("190.125")))
    book.add("BTCUSDT", Lot(D("-0.00012345"), D("64000.01"), D("0.0001")))
    book.add("MSFT", Lot(D("1"), D("400")))
    book.add("MSFT", Lot(D("-1"), D("410")))  # flat, with realized P&L
    return book


def same(a: PositionBook, b: PositionBook) -> None:
    assert a.lots() == b.lots()
    assert [(p.quantity, p.cost, p.realized) for p in a] == [(p.quantity, p.cost, p.realized) for p in b]


def test_positions_survive_a_restart_exactly_and_per_feed(store: StateStore) -> None:
    book = sample()
    store.apply([positions_change("sim", book)])
    other = PositionBook()
    other.add("AAPL", Lot(D("5"), D("1")))
    store.apply([positions_change("yahoo", other)])
    restarted = StateStore(store.path.parent)  # a new process reads the file again
    loaded, warning = restarted.load_positions("sim")
    assert warning is None
    same(loaded, book)
    assert str(loaded.get("AAPL").cost) == str(book.get("AAPL").cost)  # type: ignore[union-attr]
    same(restarted.load_positions("yahoo")[0], other)
    assert len(restarted.load_positions("binance")[0]) == 0
    raw = json.loads(store.path.read_text())
    assert raw["positions"]["sim"]["AAPL"]["lots"][0] == {
        "quantity": "10", "price": "182.50", "fee": "1.20", "date": "2026-12-01"}
    assert raw["positions"]["sim"]["BTCUSDT"]["lots"][0]["quantity"] == "-0.00012345"  # no exponent


def test_watchlists_and_positions_are_saved_together_without_losing_each_other(store: StateStore) -> None:
    lists = Book([WatchList("Main", ["AAPL"])])
    store.save("sim", lists)
    store.apply([positions_change("sim", sample())])
    store.save("sim", Book([WatchList("Main", ["AAPL", "NVDA"])]))
    assert store.load("sim", DEFAULTS) == (Book([WatchList("Main", ["AAPL", "NVDA"])]), None)
    same(store.load_positions("sim")[0], sample())


def test_the_saver_writes_positions_off_the_loop(store: StateStore) -> None:
    saver = StateSaver(store)
    book = sample()
    saver.save_positions("sim", book)
    book.add("NVDA", Lot(D("1"), D("1")))  # after the call: not part of that save
    assert saver.wait(5.0)
    assert "NVDA" not in store.load_positions("sim")[0]
    with pytest.raises(StateError, match="not a feed name"):
        saver.save_positions("", book)


DAMAGED = {
    "negative price": {"AAPL": {"lots": [{"quantity": "1", "price": "-1"}]}},
    "zero quantity": {"AAPL": {"lots": [{"quantity": "0", "price": "1"}]}},
    "nan": {"AAPL": {"lots": [{"quantity": "NaN", "price": "1"}]}},
    "a number not a string": {"AAPL": {"lots": [{"quantity": 1, "price": "1"}]}},
    "unknown key": {"AAPL": {"lots": [{"quantity": "1", "price": "1", "colour": "red"}]}},
    "missing price": {"AAPL": {"lots": [{"quantity": "1"}]}},
    "bad date": {"AAPL": {"lots": [{"quantity": "1", "price": "1", "date": "yesterday"}]}},
    "no lots": {"AAPL": {"lots": []}},
    "not an object": ["AAPL"],
    "bad symbol": {"A B": {"lots": [{"quantity": "1", "price": "1"}]}},
}


@pytest.mark.parametrize("entry", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_positions_part_is_handled_as_damaged_watchlists(store: StateStore, entry: object) -> None:
    store.save("sim", Book([WatchList("Main", ["NVDA"])]))
    doc = json.loads(store.path.read_text())
    doc["positions"] = {"yahoo": entry}  # another feed's positions: the whole file is damaged
    data = json.dumps(doc).encode()
    store.path.write_bytes(data)
    book, warning = store.load("sim", DEFAULTS)
    assert book == Book.default(DEFAULTS)  # the defaults, as for damaged watchlists
    assert warning is not None and "positions.yahoo" in warning and str(store.backup_path) in warning
    assert store.backup_path.read_bytes() == data and not store.path.exists()
    positions, again = store.load_positions("sim")  # the file is already aside: nothing more to say
    assert len(positions) == 0 and again is None


def test_load_positions_alone_sets_a_damaged_file_aside_and_says_so(store: StateStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"version": 1, "feeds": {}, "positions": {"sim": {"AAPL": {"lots": '
                          '[{"quantity": "1", "price": "inf"}]}}}}')
    positions, warning = store.load_positions("sim")
    assert len(positions) == 0
    assert warning is not None and "the price must be a number, not 'inf'" in warning
    assert store.backup_path.exists() and not store.path.exists()


def test_encode_then_decode_is_the_identity() -> None:
    book = sample()
    same(decode(json.loads(json.dumps(encode(book))), "sim"), book)


# --- fuzz: a positions part near a valid one never makes loading raise ------------------------------
_numbers = st.sampled_from(["1", "-0.5", "0", "NaN", "-inf", "1e3", "1" * 40, "0." + "1" * 13, "", " 1", "x"])
_lots = st.dictionaries(st.sampled_from(["quantity", "price", "fee", "date", "other"]),
                        _numbers | st.sampled_from(["2026-12-05", "2026-13-01"]) | st.integers() | st.none(),
                        max_size=5)
_parts = st.dictionaries(st.sampled_from(["sim", "yahoo", "", "\x00"]), st.dictionaries(
    st.sampled_from(["AAPL", "A B", "", "x" * 41]),
    st.fixed_dictionaries({"lots": st.lists(_lots, max_size=3)}) | st.integers() | st.just({}), max_size=3),
    max_size=2) | st.integers() | st.lists(st.integers(), max_size=2)


@fuzz(300)
@given(_parts)
def test_fuzzed_positions_parts_never_make_load_raise(part: object) -> None:
    tried("state load (positions part)")
    with tempfile.TemporaryDirectory() as d:
        store = StateStore(Path(d))
        data = json.dumps({"version": 1, "feeds": {}, "positions": part}).encode()
        store.path.write_bytes(data)
        book, warning = store.load_positions("sim")
        if warning is None:
            store.apply([positions_change("sim", book)])  # what loads saves and loads back the same
            same(store.load_positions("sim")[0], book)
        else:
            assert len(book) == 0 and store.backup_path.read_bytes() == data
