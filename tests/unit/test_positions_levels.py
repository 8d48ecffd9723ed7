"""Stop and target levels: typed at the prompt, kept with the position through edits and undo, saved
as exact strings, and files written before them still load."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from console.state import STATE_DIR_VAR, STATE_FILENAME, StateStore, positions_change
from engine.positions import stored
from engine.positions.book import KEEP, Lot, PositionBook, PositionError
from engine.positions.entry import LevelChange, levels_text, parse_entry


def lot(quantity: str, price: str) -> Lot:
    return Lot(Decimal(quantity), Decimal(price))


@pytest.mark.parametrize(("text", "stop", "target"), [
    ("AAPL stop 170", Decimal("170"), KEEP),
    ("aapl TARGET 200.50", KEEP, Decimal("200.50")),
    ("AAPL stop 170 target 200", Decimal("170"), Decimal("200")),
    ("AAPL target 200 stop off", None, Decimal("200")),
    ("AAPL  stop   off  target off", None, None),
])
def test_the_prompt_sets_and_clears_stop_and_target(text: str, stop: object, target: object) -> None:
    assert parse_entry(text) == LevelChange("AAPL", stop, target)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "words"), [
    ("AAPL stop", "a price, or off, is missing after stop"),
    ("AAPL stop 0", "the stop cannot be zero"),
    ("AAPL target -5", "the target cannot be negative"),
    ("AAPL stop nan", "the stop must be a number, not 'nan'"),
    ("AAPL stop 170 stop 160", "stop is given twice"),
    ("AAPL stop 170 limit 3", "expected stop or target, not 'limit'"),
    ("AAPL stop 1,000", "no thousands separators"),
])
def test_a_bad_level_says_what_was_expected(text: str, words: str) -> None:
    answer = parse_entry(text)
    assert isinstance(answer, str) and words in answer
    assert answer.endswith("(expected SYMBOL stop PRICE|off [target PRICE|off], e.g. AAPL stop 170 "
                           "target 200)")


def test_the_symbol_check_applies_to_levels_too() -> None:
    assert parse_entry("ZZZ stop 5", lambda s: f"{s} is not traded here") == "ZZZ is not traded here"


def test_levels_need_a_position_and_are_undone_like_any_change() -> None:
    book = PositionBook()
    with pytest.raises(PositionError, match="there is no position in AAPL"):
        LevelChange("AAPL", Decimal("1")).apply(book)
    book.add("AAPL", lot("10", "100"))
    version = book.version
    position = LevelChange("AAPL", Decimal("95"), Decimal("120")).apply(book)
    assert (position.stop, position.target, book.version) == (Decimal("95"), Decimal("120"), version + 1)
    assert levels_text(position) == "AAPL stop 95 target 120"
    assert parse_entry(levels_text(position)) == LevelChange("AAPL", Decimal("95"), Decimal("120"))
    book.set_levels("AAPL", target=None)
    assert book.levels() == {"AAPL": (Decimal("95"), None)}
    book.undo()
    assert book.levels() == {"AAPL": (Decimal("95"), Decimal("120"))}
    book.undo()
    assert book.levels() == {}


def test_lots_added_edited_deleted_and_undone_keep_the_levels() -> None:
    book = PositionBook()
    book.add("AAPL", lot("10", "100"))
    book.set_levels("AAPL", stop=Decimal("90"))
    book.add("AAPL", lot("5", "110"))
    book.edit_lot("AAPL", 0, lot("20", "100"))
    book.delete_lot("AAPL", 1)
    book.add("AAPL", lot("-20", "105"))  # flat: the levels stay with the position
    assert book.levels() == {"AAPL": (Decimal("90"), None)}
    book.delete("AAPL")
    book.undo()
    assert book.levels() == {"AAPL": (Decimal("90"), None)}
    book.undo()  # the closing lot
    assert book.get("AAPL") is not None and book.get("AAPL").stop == Decimal("90")  # type: ignore[union-attr]


def test_levels_are_saved_as_exact_strings_and_read_back() -> None:
    book = PositionBook()
    book.add("AAPL", lot("10", "182.50"))
    book.add("BTCUSDT", lot("0.5", "64000"))
    book.set_levels("AAPL", stop=Decimal("170.125"), target=Decimal("200"))
    book.set_levels("BTCUSDT", target=Decimal("70000.00"))
    encoded = stored.encode(book)
    assert encoded["AAPL"] == {"lots": [{"quantity": "10", "price": "182.50"}], "stop": "170.125",
                               "target": "200"}
    assert encoded["BTCUSDT"]["target"] == "70000.00" and "stop" not in encoded["BTCUSDT"]
    back = stored.decode(json.loads(json.dumps(encoded)), "sim")
    assert back.levels() == book.levels() and back.lots() == book.lots()


def test_a_file_without_levels_still_loads(tmp_path: Path) -> None:
    old = {"AAPL": {"lots": [{"quantity": "10", "price": "182.50"}]}}
    assert stored.decode(old, "sim").levels() == {}


@pytest.mark.parametrize(("entry", "words"), [
    ({"lots": [{"quantity": "1", "price": "2"}], "stop": 170}, "positions.sim.AAPL.stop must be a string"),
    ({"lots": [{"quantity": "1", "price": "2"}], "stop": "0"}, "AAPL.stop: the stop cannot be zero"),
    ({"lots": [{"quantity": "1", "price": "2"}], "target": "1e3"}, "AAPL.target: the target must be a plain"),
    ({"lots": [{"quantity": "1", "price": "2"}], "limit": "3"}, "optionally a stop and a target"),
])
def test_damaged_levels_are_named(entry: dict[str, object], words: str) -> None:
    with pytest.raises(PositionError) as caught:
        stored.decode({"AAPL": entry}, "positions.sim")
    assert words in str(caught.value)


def test_the_console_store_and_the_engines_reader_agree(tmp_path: Path) -> None:
    store = StateStore.default({STATE_DIR_VAR: str(tmp_path)})
    book = PositionBook()
    book.add("AAPL", lot("10", "100"))
    book.set_levels("AAPL", stop=Decimal("95"))
    store.apply([positions_change("sim", book)])
    loaded, warning = store.load_positions("sim")
    assert warning is None and loaded.levels() == book.levels()
    assert (stored.STATE_DIR_VAR, stored.STATE_FILENAME) == (STATE_DIR_VAR, STATE_FILENAME)
    path = stored.state_path({STATE_DIR_VAR: str(tmp_path)})
    assert path == store.path
    read, warning = stored.read_feed(path, "sim")
    assert warning is None and read.levels() == book.levels() and read.lots() == book.lots()
    assert stored.read_feed(path, "binance")[0].symbols() == ()


def test_the_engines_reader_never_moves_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert stored.read_feed(path, "sim") == (stored.read_feed(path, "sim")[0], None)  # no file: no warning
    path.write_text('{"version": 1, "feeds": {}, "positions": {"sim": {"AAPL": {"lots": []}}}}')
    book, warning = stored.read_feed(path, "sim")
    assert len(book) == 0 and warning is not None
    assert "is damaged (positions.sim: AAPL has a position with no lots)" in warning
    path.write_text("{not json")
    assert "is damaged (not JSON" in (stored.read_feed(path, "sim")[1] or "")
    assert path.read_text() == "{not json"
