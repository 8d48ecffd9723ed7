"""``StateSaver``: the caller never waits for the disk, the latest state wins, a save made while a write
runs is written after it, failures are reported, and ``wait`` tells when everything is on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from console.book import Book, StateError, WatchList
from console.state import Change, StateStore
from console.state_saver import StateSaver

WAIT_S = 30.0


def book(*symbols: str) -> Book:
    return Book([WatchList("Main", list(symbols))])


def on_disk(store: StateStore, feed: str = "sim") -> list[str]:
    return list(json.loads(store.path.read_bytes())["feeds"][feed]["watchlists"][0]["symbols"])


class GatedStore(StateStore):
    """A store whose writes wait for ``gate`` (a slow or hung disk), counting what each write held."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.batches: list[list[str]] = []

    def apply(self, changes: Sequence[Change]) -> None:
        self.writing.set()
        assert self.gate.wait(WAIT_S)
        self.batches.append([c.key for c in changes])
        super().apply(changes)


def test_a_save_returns_at_once_and_the_latest_state_wins(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    saver = StateSaver(store)
    saver.save("sim", book("A"))
    assert store.writing.wait(WAIT_S)  # the first write is under way, held by the disk
    saver.save("sim", book("A", "B"))  # edits made meanwhile: only the last one needs writing
    saver.save_theme("light")
    saver.save("sim", book("A", "B", "C"))
    assert not saver.idle and not saver.wait(0.01)
    assert not store.path.exists()  # nothing written yet: every save above returned without waiting
    store.gate.set()
    assert saver.wait(WAIT_S) and saver.idle
    assert store.batches == [["feeds.sim"], ["feeds.sim", "theme"]]  # one more write, after the first
    assert on_disk(store) == ["A", "B", "C"]
    assert json.loads(store.path.read_bytes())["theme"] == "light"
    assert saver.writes == 2


def test_the_book_is_copied_when_saved(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    saver = StateSaver(store)
    edited = book("A")
    saver.save("sim", edited)
    edited.add("LATER")  # an edit not (yet) saved is not written by the earlier save
    store.gate.set()
    assert saver.wait(WAIT_S)
    assert on_disk(store) == ["A"]


def test_a_failed_write_is_reported_and_the_next_save_writes_again(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a directory")
    store = StateStore(tmp_path / "blocker" / "state")
    errors: list[str] = []
    saver = StateSaver(store, on_error=errors.append)
    saver.save("sim", book("A"))
    assert saver.wait(WAIT_S)
    assert len(errors) == 1 and errors[0].startswith(f"Could not save your watchlists to {store.path}: ")
    (tmp_path / "blocker").unlink()
    saver.save("sim", book("A", "B"))
    assert saver.wait(WAIT_S) and len(errors) == 1
    assert on_disk(store) == ["A", "B"]


def test_a_bad_feed_or_theme_name_is_refused_at_once(tmp_path: Path) -> None:
    saver = StateSaver(StateStore(tmp_path))
    with pytest.raises(StateError, match="is not a feed name"):
        saver.save("bad\nfeed", book("A"))
    with pytest.raises(StateError, match="is not a theme name"):
        saver.save_theme(" ")
    assert saver.idle and not (tmp_path / "state.json").exists()


def test_a_writer_that_breaks_still_ends_and_says_so(tmp_path: Path) -> None:
    class Broken(StateStore):
        def apply(self, changes: Sequence[Change]) -> None:
            raise KeyError("bug")

    errors: list[str] = []
    saver = StateSaver(Broken(tmp_path), on_error=errors.append)
    saver.save("sim", book("A"))
    assert saver.wait(WAIT_S)
    assert errors == ["Could not save your watchlists: KeyError: 'bug'"]


def test_the_module_imports_no_ui_or_numeric_library() -> None:
    code = ("import sys, console.state_saver; "
            "print(sorted(m for m in ('textual', 'rich', 'numpy', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
