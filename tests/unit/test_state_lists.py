"""Whole watchlists: deleting one (and undoing it), moving one, and checking a name before it is used."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.book import MAX_NAME, MAX_WATCHLISTS, Book, StateError, WatchList
from console.state import StateStore


def three() -> Book:
    book = Book([WatchList("Main", ["A", "B"]), WatchList("Crypto", ["BTC", "ETH"], "last", True),
                 WatchList("Dividends", ["KO"])], active=1)
    return book


def test_delete_list_removes_the_current_one_and_the_next_takes_its_place() -> None:
    book = three()
    gone = book.delete_list()
    assert gone.name == "Crypto" and [wl.name for wl in book.lists] == ["Main", "Dividends"]
    assert book.current.name == "Dividends"
    book.delete_list()  # the last one: the previous becomes current
    assert [wl.name for wl in book.lists] == ["Main"] and book.active == 0


def test_the_last_list_cannot_be_deleted_and_the_reason_is_given() -> None:
    book = Book([WatchList("Main", ["A"])])
    with pytest.raises(StateError, match=r"^Main is the only watchlist, and there is always one"):
        book.delete_list()
    assert [wl.name for wl in book.lists] == ["Main"] and book.current.symbols == ["A"]


def test_undo_restores_a_deleted_list_at_its_place_with_symbols_sort_and_name() -> None:
    book = three()
    book.delete_list()
    book.switch(0)
    restored = book.undo()
    assert isinstance(restored, WatchList)
    assert [wl.name for wl in book.lists] == ["Main", "Crypto", "Dividends"] and book.active == 1
    assert book.current == WatchList("Crypto", ["BTC", "ETH"], "last", True)
    assert book.undo() is None


def test_undo_of_a_list_then_of_a_row_deleted_from_it_before() -> None:
    book = three()
    book.delete("ETH")
    book.delete_list()
    assert isinstance(book.undo(), WatchList)
    assert book.undo() == "ETH"
    assert book.current.symbols == ["BTC", "ETH"]


def test_a_list_that_cannot_come_back_says_why_and_stays_undoable() -> None:
    book = three()
    book.delete_list()  # Crypto
    book.new("crypto")  # its name, in another case
    with pytest.raises(StateError, match=r"^Crypto cannot come back while another watchlist has its name"):
        book.undo()
    book.rename("Coins")
    assert isinstance(book.undo(), WatchList)
    assert [wl.name for wl in book.lists] == ["Main", "Crypto", "Dividends", "Coins"] and book.active == 1


def test_a_list_cannot_come_back_past_nine() -> None:
    book = three()
    book.delete_list()
    while len(book.lists) < MAX_WATCHLISTS:
        book.new(f"L{len(book.lists)}")
    with pytest.raises(StateError, match=rf"while there are {MAX_WATCHLISTS} watchlists; delete one first"):
        book.undo()
    assert len(book.lists) == MAX_WATCHLISTS and "Crypto" not in [wl.name for wl in book.lists]


def test_move_list_clamps_and_keeps_the_moved_list_current() -> None:
    book = three()
    assert book.move_list(-1) == 0
    assert [wl.name for wl in book.lists] == ["Crypto", "Main", "Dividends"] and book.current.name == "Crypto"
    assert book.move_list(-1) == 0
    assert book.move_list(5) == 2
    assert [wl.name for wl in book.lists] == ["Main", "Dividends", "Crypto"] and book.active == 2


def test_name_refused_gives_the_reason_new_or_rename_would_give() -> None:
    book = three()
    assert book.name_refused("Tech") is None
    assert book.name_refused("  ") == "a watchlist needs a name"
    assert book.name_refused("main") == "there is already a watchlist named main"
    assert book.name_refused("X" * (MAX_NAME + 1)) is not None
    assert book.name_refused("crypto", renaming=True) is None  # its own name, in another case
    assert book.name_refused("Dividends", renaming=True) is not None
    while len(book.lists) < MAX_WATCHLISTS:
        book.new(f"L{len(book.lists)}")
    assert book.name_refused("Tech") == (f"there are already {MAX_WATCHLISTS} watchlists, "
                                         "the most keys 1-9 can reach")
    assert book.name_refused("Tech", renaming=True) is None


def test_deleted_and_moved_lists_are_saved_as_they_are_shown(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    book = three()
    book.delete_list()
    book.move_list(-1)
    store.save("sim", book)
    loaded, warning = store.load("sim", ["A"], sort_keys=["last"])
    assert warning is None
    assert [(wl.name, wl.symbols) for wl in loaded.lists] == [("Dividends", ["KO"]), ("Main", ["A", "B"])]
    assert loaded.active == 0


def test_append_unlisted_adds_to_the_first_list_what_no_list_holds() -> None:
    book = three()  # Crypto is the active list
    assert book.append_unlisted(["ETH", "C", "A", "C", " bad", "KO", "D"]) == ["C", "D"]
    assert book.lists[0].symbols == ["A", "B", "C", "D"] and book.current.symbols == ["BTC", "ETH"]
    assert book.append_unlisted(["C"]) == [] and book.lists[0].symbols == ["A", "B", "C", "D"]
