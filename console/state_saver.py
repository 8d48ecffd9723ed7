"""Saving the user's state off the event loop: one writer thread, the latest state wins.

Every watchlist edit used to read, encode, write and fsync ``state.json`` on the UI's event loop; the
app now hands each save to a :class:`StateSaver` and goes on. This module imports no textual or rich:
the app passes ``on_error`` (which posts a message) and waits for the last save when it quits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from console.book import Book, StateError
from console.state import Change, StateStore, book_change, positions_change, theme_change
from engine.positions.book import PositionBook

QUIT_WAIT_S = 5.0
"""How long quitting waits for the last save to reach the disk (it takes milliseconds unless the disk
hangs); after that the app exits and says the last edits may not be saved."""


class StateSaver:
    """Saves through a :class:`StateStore` on one writer thread, so the caller never waits for the disk.

    Only the latest state of each part is kept pending (at most one entry per feed and the theme): a
    newer save replaces a pending one, and a save made while a write runs is written right after it, so
    the last save always lands. A failed write is reported to ``on_error`` (on the writer thread) with
    the sentence :meth:`StateStore.save` would raise; the next save writes the whole state again. The
    thread runs only while there is something to write, and is a daemon (a write it is in the middle of
    at exit leaves the old file or the new one): call :meth:`wait` before quitting.
    """

    def __init__(self, store: StateStore, on_error: Callable[[str], object] | None = None) -> None:
        self.store = store
        self.on_error = on_error
        self._cond = threading.Condition()
        self._pending: dict[str, Change] = {}
        self._writing = False
        self.writes = 0
        """Writes finished (successful or not)."""

    def save(self, feed: str, book: Book) -> None:
        """Queue ``book`` (copied now) as ``feed``'s entry; StateError at once for a bad feed name."""
        self._submit(book_change(feed, book))

    def save_positions(self, feed: str, book: PositionBook) -> None:
        """Queue ``book`` (encoded now) as ``feed``'s positions, like :meth:`save`."""
        self._submit(positions_change(feed, book))

    def save_theme(self, name: str) -> None:
        self._submit(theme_change(name))

    def _submit(self, change: Change) -> None:
        with self._cond:
            self._pending[change.key] = change
            if not self._writing:
                self._writing = True
                threading.Thread(target=self._write, name="tickdeck-state-writer", daemon=True).start()

    def _write(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._writing = False
                    self._cond.notify_all()
                    return
                changes, self._pending = list(self._pending.values()), {}
            problem = ""
            try:
                self.store.apply(changes)
            except StateError as exc:
                problem = str(exc)
            except Exception as exc:  # a bug must not leave the saver "writing" for ever: report it
                problem = f"Could not save your watchlists: {type(exc).__name__}: {exc}"
            with self._cond:
                self.writes += 1
            if problem and self.on_error is not None:
                with contextlib.suppress(Exception):  # the app is closing: nobody to tell
                    self.on_error(problem)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing being written."""
        with self._cond:
            return not self._writing

    def wait(self, timeout: float) -> bool:
        """Block until every save made so far is written (or failed); False if still writing after
        ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._writing, timeout)
