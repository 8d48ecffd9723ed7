"""The watchlist model and its state file: every edit, the round trip, and recovery from any damage."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

import console.state as state_mod
from console.book import MAX_WATCHLISTS, UNDO_DEPTH, Book, StateError, WatchList
from console.state import STATE_DIR_VAR, StateStore
from engine.files import write_atomically
from tests.fuzz_settings import fuzz, tried

KEYS = ("symbol", "last", "change", "change_pct", "volume", "rsi_14", "macd_hist", "signal")
DEFAULTS = ("AAPL", "MSFT", "NVDA")


def book_of(*lists: tuple[str, list[str]], active: int = 0) -> Book:
    return Book([WatchList(name, list(symbols)) for name, symbols in lists], active)


def assert_valid(book: Book) -> None:
    """The rules a loaded Book must keep, written out independently of the module's own checks."""
    assert 1 <= len(book.lists) <= 9
    assert 0 <= book.active < len(book.lists)
    folded = [wl.name.casefold() for wl in book.lists]
    assert len(set(folded)) == len(folded)
    for wl in book.lists:
        assert isinstance(wl.name, str) and 1 <= len(wl.name) <= 20
        assert wl.name.isprintable() and wl.name == wl.name.strip()
        assert all(type(s) is str and s and s == s.strip() and s.isprintable() for s in wl.symbols)
        assert len(set(wl.symbols)) == len(wl.symbols)
        assert wl.sort is None or (type(wl.sort) is str and wl.sort)
        assert type(wl.descending) is bool and (wl.sort is not None or not wl.descending)


def assert_defaults(book: Book, defaults: tuple[str, ...] = DEFAULTS) -> None:
    assert book == Book([WatchList("Main", list(defaults))])


def three_lists() -> Book:
    book = book_of(("Main", ["AAPL", "MSFT", "NVDA"]), ("Krypto €", ["BTC", "ETH"]), ("Dividends", ["KO"]))
    book.switch(1)
    book.current.sort, book.current.descending = KEYS[0], True  # symbol, descending
    book.switch(2)
    return book


# --- Book: editing ------------------------------------------------------------------------------------


def test_add_appends_and_refuses_duplicates_and_bad_symbols() -> None:
    book = book_of(("Main", ["BTCUSDT"]))
    book.add("ETHUSDT")
    book.add("ethusdt")  # spelling is the caller's business: nothing is normalized
    assert book.current.symbols == ["BTCUSDT", "ETHUSDT", "ethusdt"]
    with pytest.raises(StateError, match=r"^BTCUSDT is already in Main$"):
        book.add("BTCUSDT")
    for bad in ("", " ", " BTC", "BTC ", "BT\nC", "X" * 41):
        with pytest.raises(StateError):
            book.add(bad)
    assert book.current.symbols == ["BTCUSDT", "ETHUSDT", "ethusdt"]


def test_delete_returns_the_index_and_refuses_a_missing_symbol() -> None:
    book = book_of(("Main", ["A", "B", "C"]))
    assert book.delete("B") == 1
    assert book.current.symbols == ["A", "C"]
    with pytest.raises(StateError, match=r"^B is not in Main$"):
        book.delete("B")


def test_undo_puts_symbols_back_where_they_were_last_first() -> None:
    book = book_of(("Main", ["A", "B", "C", "D"]))
    book.delete("B")
    book.delete("D")
    book.delete("A")
    assert book.undo() == "A"
    assert book.current.symbols == ["A", "C"]
    assert book.undo() == "D"
    assert book.undo() == "B"
    assert book.current.symbols == ["A", "B", "C", "D"]
    assert book.undo() is None


def test_undo_after_a_switch_restores_into_the_symbols_own_list() -> None:
    book = book_of(("Main", ["A", "B", "C"]), ("Other", ["X", "B"]))
    book.delete("B")  # from Main, index 1
    book.switch(1)
    book.rename("Renamed")
    assert book.undo() == "B"
    assert book.active == 1
    assert book.lists[0].symbols == ["A", "B", "C"]
    assert book.lists[1].symbols == ["X", "B"]


def test_undo_clamps_to_a_shorter_list_and_skips_symbols_added_back() -> None:
    book = book_of(("Main", ["A", "B", "C", "D"]))
    book.delete("A")
    book.delete("D")  # index 2 of ["B", "C", "D"]
    book.delete("C")
    book.delete("B")
    book.add("C")  # C came back by hand: its deletion has nothing left to undo
    assert book.undo() == "B"  # index 0
    assert book.current.symbols == ["B", "C"]
    book.delete("C")
    book.delete("B")
    assert book.undo() == "B"
    assert book.undo() == "C"
    assert book.undo() == "D"  # index 2 of a list of 2: the end
    assert book.current.symbols == ["B", "C", "D"]
    assert book.undo() == "A"
    assert book.current.symbols == ["A", "B", "C", "D"]


def test_undo_stack_is_bounded() -> None:
    symbols = [f"S{i}" for i in range(UNDO_DEPTH + 5)]
    book = book_of(("Main", symbols))
    for s in symbols:
        book.delete(s)
    restored = [book.undo() for _ in range(UNDO_DEPTH)]
    assert restored == symbols[::-1][:UNDO_DEPTH]
    assert book.undo() is None
    assert book.current.symbols == symbols[5:]


def test_move_clamps_and_returns_the_new_index() -> None:
    book = book_of(("Main", ["A", "B", "C", "D"]))
    assert book.move("C", -1) == 1
    assert book.current.symbols == ["A", "C", "B", "D"]
    assert book.move("C", -5) == 0
    assert book.move("A", 1) == 2
    assert book.current.symbols == ["C", "B", "A", "D"]
    assert book.move("B", 99) == 3
    assert book.current.symbols == ["C", "A", "D", "B"]
    with pytest.raises(StateError, match="not in Main"):
        book.move("Z", 1)
    book.current.sort, book.current.descending = "symbol", True
    with pytest.raises(StateError, match="sorted by symbol"):
        book.move("A", 1)
    assert book.current.symbols == ["C", "A", "D", "B"]


def test_known_sorts_forgets_columns_no_longer_shown() -> None:
    book = book_of(("Main", ["A"]), ("B", []))
    book.current.sort, book.current.descending = "symbol", True
    book.switch(1)
    book.current.sort, book.current.descending = "rsi_14", True
    book.known_sorts(("symbol",))
    assert [(wl.sort, wl.descending) for wl in book.lists] == [("symbol", True), (None, False)]


def test_new_appends_activates_and_enforces_the_name_rules_and_the_limit() -> None:
    book = book_of(("Main", ["A"]))
    assert book.new("  Crypto  ") == 1
    assert book.active == 1 and book.current == WatchList("Crypto", [])
    for bad, message in (("", "needs a name"), ("   ", "needs a name"), ("x" * 21, "at most 20"),
                         ("a\tb", "control"), ("main", "already a watchlist named main"),
                         ("CRYPTO", "already")):
        with pytest.raises(StateError, match=message):
            book.new(bad)
    book.new("x" * 20)
    while len(book.lists) < MAX_WATCHLISTS:
        book.new(f"L{len(book.lists)}")
    with pytest.raises(StateError, match="already 9 watchlists"):
        book.new("Tenth")
    assert len(book.lists) == MAX_WATCHLISTS and book.active == MAX_WATCHLISTS - 1


def test_rename_follows_the_same_rules_and_may_change_case() -> None:
    book = book_of(("Main", []), ("Crypto", []), active=1)
    book.rename("crypto")
    assert book.current.name == "crypto"
    with pytest.raises(StateError, match="already a watchlist named MAIN"):
        book.rename("MAIN")
    with pytest.raises(StateError, match="needs a name"):
        book.rename(" ")
    book.rename(" Coins ")
    assert [wl.name for wl in book.lists] == ["Main", "Coins"]


def test_switch_and_symbols() -> None:
    book = book_of(("Main", ["A", "B"]), ("Other", ["B", "C"]))
    assert book.switch(1) and book.current.name == "Other"
    assert not book.switch(2) and not book.switch(-1)
    assert book.active == 1
    assert book.symbols() == {"A", "B", "C"}


@pytest.mark.parametrize("lists, active", [
    ([], 0),
    ([WatchList(f"L{i}", []) for i in range(10)], 0),
    ([WatchList("Main", [])], 1),
    ([WatchList("Main", []), WatchList("MAIN", [])], 0),
    ([WatchList("Main", ["A", "A"])], 0),
    ([WatchList("Main", [""])], 0),
    ([WatchList(" Main", [])], 0),
    ([WatchList("Main", [], sort="")], 0),
])
def test_a_broken_book_cannot_be_built(lists: list[WatchList], active: int) -> None:
    with pytest.raises(ValueError):
        Book(lists, active)


def test_default_book_drops_duplicate_and_unusable_defaults() -> None:
    odd = ["A", "B", "A", "B C ", "", "X" * 41, "D\x00", "B C"]
    assert Book.default(odd) == book_of(("Main", ["A", "B", "B C"]))
    assert Book.default([]) == book_of(("Main", []))


# --- StateStore: round trip ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore.default({STATE_DIR_VAR: str(tmp_path / "state")})


def test_no_file_and_no_entry_give_the_defaults_without_a_warning(store: StateStore) -> None:
    book, warning = store.load("sim", DEFAULTS)
    assert_defaults(book)
    assert warning is None and store.load_theme() is None
    assert not store.path.parent.exists()  # loading writes nothing
    store.save("binance", book_of(("Main", ["BTCUSDT"])))
    book, warning = store.load("sim", DEFAULTS)
    assert_defaults(book)
    assert warning is None


def test_save_then_load_round_trips_and_keeps_other_feeds_and_the_theme(store: StateStore) -> None:
    book = three_lists()
    store.save_theme("high-contrast")
    store.save("sim", book)
    store.save("binance", book_of(("Main", ["BTCUSDT"])))
    store.save("sim", book)
    fresh = StateStore(store.path.parent)
    loaded, warning = fresh.load("sim", DEFAULTS, KEYS)
    assert warning is None and loaded == book
    assert loaded.active == 2 and loaded.lists[1].sort == "symbol" and loaded.lists[1].descending
    assert fresh.load("binance", DEFAULTS)[0] == book_of(("Main", ["BTCUSDT"]))
    assert fresh.load_theme() == "high-contrast"
    store.save_theme("light")
    assert fresh.load("sim", DEFAULTS)[0] == book and fresh.load_theme() == "light"
    doc = json.loads(store.path.read_bytes())
    assert doc["version"] == 1 and set(doc["feeds"]) == {"sim", "binance"}
    assert doc["feeds"]["sim"]["watchlists"][1] == {
        "name": "Krypto €", "symbols": ["BTC", "ETH"], "sort": "symbol", "descending": True}
    assert not store.path.read_bytes()[-1:].isspace()  # see test_a_file_truncated_at_any_byte_is_recovered


def test_a_sort_key_the_app_does_not_know_becomes_the_users_order(store: StateStore) -> None:
    store.save("sim", three_lists())
    loaded, warning = store.load("sim", DEFAULTS, sort_keys=("last", "change"))
    assert warning is None and not store.backup_path.exists()
    assert [(wl.sort, wl.descending) for wl in loaded.lists] == [(None, False)] * 3


def test_save_theme_refuses_a_non_name(store: StateStore) -> None:
    with pytest.raises(StateError, match="not a theme name"):
        store.save_theme("dark\n")
    assert not store.path.exists()


# --- StateStore: recovery -----------------------------------------------------------------------------


def entry(**changes: Any) -> dict[str, Any]:
    wl: dict[str, Any] = {"name": "Main", "symbols": ["A"], "sort": None, "descending": False}
    base: dict[str, Any] = {"active": 0, "watchlists": [wl]}
    for key, value in changes.items():
        if key.startswith("wl_"):
            wl[key[3:]] = value
        else:
            base[key] = value
    return base


def doc_bytes(feeds: Any = None, **top: Any) -> bytes:
    return json.dumps({"version": 1, "feeds": {"sim": entry()} if feeds is None else feeds, **top}).encode()


CORRUPT = {
    "empty": (b"", "empty"),
    "blank": (b"  \n", "empty"),
    "not utf-8": (b'{"version": 1, "feeds": {"\xff": 1}}', "not UTF-8 text (byte 26)"),
    "not json": (b"version = 1\n", "not valid JSON: Expecting value at line 1, column 1"),
    "json error position": (b'{"version": 1,\n "feeds": {]}', "line 2, column 12"),
    "trailing garbage": (doc_bytes() + b"}", "Extra data"),
    "array": (b"[]", "the top level must be an object, not an array"),
    "no version": (b'{"feeds": {}}', "lacks 'version'"),
    "newer version": (doc_bytes(version=2), "version 2; this tickdeck reads version 1"),
    "version true": (doc_bytes(version=True), "version True"),
    "version float": (doc_bytes(version=1.0), "version 1.0"),
    "unknown top key": (doc_bytes(extra=1), "unknown key 'extra'"),
    "feeds array": (doc_bytes(feeds=[]), "feeds must be an object, not an array"),
    "active out of range": (doc_bytes({"sim": entry(active=1)}), "active list 1 does not exist"),
    "active negative": (doc_bytes({"sim": entry(active=-1)}), "active list -1"),
    "active bool": (doc_bytes({"sim": entry(active=False)}), "active must be an integer, not true or false"),
    "active float": (doc_bytes({"sim": entry(active=0.0)}), "active must be an integer, not a number"),
    "no lists": (doc_bytes({"sim": entry(watchlists=[])}), "holds 0 watchlists"),
    "too many lists": (doc_bytes({"sim": entry(watchlists=[
        {"name": f"L{i}", "symbols": []} for i in range(10)])}), "holds 10 watchlists, not 1 to 9"),
    "duplicate names": (doc_bytes({"sim": entry(watchlists=[
        {"name": "Main", "symbols": []}, {"name": "MAIN", "symbols": []}])}), "two watchlists are named"),
    "blank name": (doc_bytes({"sim": entry(wl_name="")}), "needs a name"),
    "long name": (doc_bytes({"sim": entry(wl_name="x" * 21)}), "at most 20"),
    "padded name": (doc_bytes({"sim": entry(wl_name=" Main")}), "starts or ends with a space"),
    "name not string": (doc_bytes({"sim": entry(wl_name=7)}), "watchlists[0].name must be a string"),
    "symbols not list": (doc_bytes({"sim": entry(wl_symbols="A")}), "symbols must be an array, not a string"),
    "symbol not string": (doc_bytes({"sim": entry(wl_symbols=["A", 1])}), "symbols[1] must be a string"),
    "duplicate symbol": (doc_bytes({"sim": entry(wl_symbols=["A", "B", "A"])}), "Main lists A twice"),
    "control in symbol": (doc_bytes({"sim": entry(wl_symbols=["A\x00"])}), "control characters"),
    "sort number": (doc_bytes({"sim": entry(wl_sort=3)}), "sort must be a string or null"),
    "sort unprintable": (doc_bytes({"sim": entry(), "binance": entry(wl_sort="\ud800")}), "unusable key"),
    "sort empty": (doc_bytes({"sim": entry(wl_sort="")}), "unusable key"),
    "descending string": (doc_bytes({"sim": entry(wl_descending="yes")}), "descending must be true or false"),
    "unknown list key": (doc_bytes({"sim": entry(wl_colour="red")}), "unknown key 'colour'"),
    "missing symbols": (doc_bytes({"sim": {"active": 0, "watchlists": [{"name": "M"}]}}), "lacks 'symbols'"),
    "theme number": (doc_bytes(theme=1), "theme must be a string or null"),
    "other feed broken": (doc_bytes({"sim": entry(), "yahoo": entry(active=5)}), "feeds.yahoo: active list"),
    "lone surrogate feed": (b'{"version": 1, "feeds": {"\\ud800": {}}}', "unusable name"),
    "deep nesting": (b"[" * 100_000, "not usable JSON"),
    "huge number": (b'{"version": ' + b"9" * 5000 + b', "feeds": {}}', "not usable JSON"),
}


@pytest.mark.parametrize("data, problem", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_file_is_kept_aside_and_the_defaults_load(
        store: StateStore, data: bytes, problem: str) -> None:
    store.path.parent.mkdir(parents=True)
    store.backup_path.write_bytes(b"an older backup")
    store.path.write_bytes(data)
    book, warning = store.load("sim", DEFAULTS, KEYS)
    assert_defaults(book)
    assert warning is not None and problem in warning, warning
    assert str(store.path) in warning and str(store.backup_path) in warning
    assert "\n" not in warning
    assert store.backup_path.read_bytes() == data
    assert not store.path.exists()
    assert store.load_theme() is None
    store.save("sim", book)  # and the user can carry on
    assert store.load("sim", ()) == (book, None)
    assert store.backup_path.read_bytes() == data


def test_a_file_truncated_at_any_byte_is_recovered(store: StateStore) -> None:
    """Acceptance test for recovery from a cut-short file: every prefix of a real file is set aside."""
    book = three_lists()
    store.save_theme("dark")
    store.save("sim", book)
    data = store.path.read_bytes()
    assert len(data.decode()) < len(data)  # "€" is cut inside its UTF-8 bytes too
    for n in range(len(data)):
        store.path.write_bytes(data[:n])
        loaded, warning = store.load("sim", DEFAULTS, KEYS)
        assert_defaults(loaded)
        assert warning is not None and str(store.path) in warning, (n, warning)
        assert store.backup_path.read_bytes() == data[:n], n
        assert not store.path.exists()
    store.path.write_bytes(data)
    assert store.load("sim", DEFAULTS, KEYS) == (book, None)
    assert store.load_theme() == "dark"
    print(f"truncation: {len(data)} prefixes (0..{len(data) - 1} bytes) recovered, the full file loaded")


def test_a_file_damaged_after_loading_is_kept_aside_by_the_next_save(store: StateStore) -> None:
    store.save("sim", three_lists())
    store.path.write_bytes(b'{"version": 1, "feeds": {"sim": ')
    store.save("binance", book_of(("Main", ["BTCUSDT"])))
    assert store.backup_path.read_bytes() == b'{"version": 1, "feeds": {"sim": '
    assert set(json.loads(store.path.read_bytes())["feeds"]) == {"binance"}


def test_an_unreadable_state_file_warns_and_saving_then_fails_clearly(store: StateStore) -> None:
    store.path.mkdir(parents=True)  # a directory where the file should be (root ignores chmod)
    book, warning = store.load("sim", DEFAULTS)
    assert_defaults(book)
    assert warning is not None and str(store.path) in warning and "not a regular file" in warning
    assert store.path.is_dir() and not store.backup_path.exists()
    with pytest.raises(StateError, match=f"^Could not save your watchlists to {store.path}: ") as info:
        store.save("sim", book)
    assert "\n" not in str(info.value)


def test_a_state_directory_that_is_a_file_warns_and_saving_names_the_reason(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a directory")
    store = StateStore(tmp_path / "blocker" / "state")
    book, warning = store.load("sim", DEFAULTS)
    assert_defaults(book)
    assert warning is not None and "Not a directory" in warning and str(store.path) in warning
    with pytest.raises(StateError, match="Not a directory"):
        store.save("sim", book)
    with pytest.raises(StateError, match="Could not save the theme"):
        store.save_theme("dark")


def test_a_write_failing_midway_leaves_the_old_file(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save("sim", three_lists())
    before = store.path.read_bytes()
    calls: list[int] = []

    def half_then_fail(target: Path, write: Callable[[TextIO], None]) -> None:
        def half(fh: TextIO) -> None:
            buf = io.StringIO()
            write(buf)
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
            calls.append(os.fstat(fh.fileno()).st_size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_atomically(target, half)

    monkeypatch.setattr(state_mod, "write_atomically", half_then_fail)
    with pytest.raises(StateError, match=f"{store.path}: No space left on device"):
        store.save("sim", book_of(("Main", ["ONLY"])))
    assert calls and calls[0] > 0  # half the new file really was on disk, in the temporary file
    assert store.path.read_bytes() == before
    assert os.listdir(store.path.parent) == ["state.json"]


# --- StateStore: where the file lives -----------------------------------------------------------------


def test_the_state_dir_variable_wins_over_platformdirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def user_state_dir(appname: str) -> str:
        asked.append(appname)
        return str(tmp_path / "platform")

    monkeypatch.setattr(state_mod.platformdirs, "user_state_dir", user_state_dir)
    assert STATE_DIR_VAR == "TICKDECK_STATE_DIR"
    mine = StateStore.default({STATE_DIR_VAR: str(tmp_path / "mine")})
    assert mine.path == tmp_path / "mine" / "state.json"
    assert StateStore.default({}).path == tmp_path / "platform" / "state.json"
    assert StateStore.default({STATE_DIR_VAR: ""}).path == tmp_path / "platform" / "state.json"
    assert asked == ["tickdeck", "tickdeck"]
    monkeypatch.setenv(STATE_DIR_VAR, str(tmp_path / "env"))
    assert StateStore.default().path == tmp_path / "env" / "state.json"


def test_the_module_imports_no_ui_or_numeric_library() -> None:
    code = ("import sys, console.state; "
            "print(sorted(m for m in ('textual', 'rich', 'numpy', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- fuzz ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


list_names = st.sampled_from(["Main", "Crypto", "Krypto €", "Tech", "x" * 20])
valid_lists = st.fixed_dictionaries(
    {"name": list_names, "symbols": st.lists(st.sampled_from(["A", "B", "BTCUSDT", "ΑΒΓ"]), unique=True)},
    optional={"sort": st.none() | st.sampled_from(KEYS), "descending": st.booleans()})
valid_entries = st.builds(
    lambda lists, i: {"active": i % len(lists), "watchlists": lists},
    st.lists(valid_lists, min_size=1, max_size=5, unique_by=lambda wl: wl["name"].casefold()),
    st.integers(0, 4))
valid_documents = st.fixed_dictionaries(
    {"version": st.just(1), "feeds": st.dictionaries(st.sampled_from(["sim", "binance"]), valid_entries)},
    optional={"theme": st.none() | st.just("dark")})
odd_values = json_values | st.sampled_from(["", " x", "a\tb", "x" * 21, -1, 9, True, 1.0, "\ud800"])


@st.composite
def near_valid_documents(draw: st.DrawFn) -> Any:
    """A valid document, half the time with one node replaced, removed or given an unknown sibling."""
    doc = draw(valid_documents)
    if draw(st.booleans()):
        return doc
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            node[0 if isinstance(node, list) else "extra"] = draw(odd_values)
            return doc
        key = draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and draw(st.booleans()):
            node = node[key]
            continue
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            node[key] = draw(odd_values)
        elif action == "remove":
            del node[key]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=4))] = draw(odd_values)
        else:
            node.append(draw(odd_values))
        return doc


def valid_file() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        store = StateStore(Path(d))
        store.save("sim", three_lists())
        return store.path.read_bytes()


VALID = valid_file()
damaged = st.tuples(st.integers(0, len(VALID)), st.integers(0, 3), st.binary(max_size=3)).map(
    lambda t: VALID[:t[0]] + t[2] + VALID[t[0] + t[1]:])


def check_load(data: bytes, tally: dict[str, int]) -> None:
    """Load never raises: either a valid Book (which saves and loads back the same) or the file set aside."""
    with tempfile.TemporaryDirectory() as d:
        store = StateStore(Path(d))
        store.path.write_bytes(data)
        book, warning = store.load("sim", DEFAULTS, KEYS)
        assert_valid(book)
        if warning is None:
            tally["loaded"] += 1
            assert store.path.read_bytes() == data and not store.backup_path.exists()
            store.save("sim", book)
            assert store.load("sim", DEFAULTS, KEYS) == (book, None)
        else:
            tally["set aside"] += 1
            assert_defaults(book)
            assert str(store.path) in warning and "\n" not in warning
            assert store.backup_path.read_bytes() == data and not store.path.exists()


@pytest.mark.parametrize("kind", ["bytes", "damaged file", "json value", "near-valid document"])
def test_fuzzed_files_never_make_load_raise(kind: str) -> None:
    strategy = {
        "bytes": st.binary(max_size=200),
        "damaged file": damaged,
        "json value": json_values.map(lambda v: json.dumps(v).encode()),
        "near-valid document": near_valid_documents().map(lambda v: json.dumps(v).encode()),
    }[kind]
    tally = {"loaded": 0, "set aside": 0}

    def one(data: bytes) -> None:
        tried(f"state load ({kind})")
        check_load(data, tally)

    fuzz(300)(given(strategy)(one))()
    print(f"fuzz {kind}: {sum(tally.values())} examples, {tally['loaded']} loaded, "
          f"{tally['set aside']} set aside")
    assert tally["set aside"] > 0
    if kind == "near-valid document":
        assert tally["loaded"] > 0
