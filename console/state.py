"""The file that keeps the user's watchlists (:class:`console.book.Book`), positions and theme.

The repository's ``config.toml`` only holds defaults; what the user edits in the app lives in
``state.json`` in ``platformdirs.user_state_dir("tickdeck")`` (or ``$TICKDECK_STATE_DIR``). Every edit is
saved at once, atomically (:func:`engine.files.write_atomically`), so a crash leaves the old file or the
new one. The app saves through a :class:`console.state_saver.StateSaver`, whose writer thread does the
reading, encoding, writing and fsyncing, so an edit never waits for the disk. The file has one entry per
feed, because symbols differ per feed (BTCUSDT on binance, AAPL on yahoo); saving one feed keeps the
others' entries::

    {"version": 1, "theme": "dark",
     "feeds": {"sim": {"active": 0, "watchlists": [
         {"name": "Main", "symbols": ["AAPL", "MSFT"], "sort": null, "descending": false}]}}}

Positions (``engine.positions``) are saved in the same file under ``"positions"``, keyed per feed
(:func:`positions_change`, :meth:`StateStore.load_positions`; the shape is in
``engine.positions.stored``), and a damaged positions part is a damaged file.

Loading never raises for what the file contains. A file that is not exactly what :meth:`StateStore.save`
could have written (bad UTF-8 or JSON, wrong shape or types, an unknown version, too many lists, duplicate
names, ...) is renamed to ``state.json.bak`` so nothing is lost, the caller gets one sentence for the user
naming the file and the problem, and the defaults are loaded. The file is written without trailing
whitespace so that a file cut short at *any* byte is invalid JSON, never a smaller valid state. A sort key
the caller no longer shows (a column that was configured away) is not corruption: it becomes the user's
own order.

The undo stack of a Book is not saved: deletions can be undone for the session only. This module
imports no textual or rich.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import platformdirs

from console.book import Book, Corrupt, StateError, WatchList
from engine.files import write_atomically
from engine.positions import stored as stored_positions
from engine.positions.book import PositionBook, PositionError

STATE_DIR_VAR = "TICKDECK_STATE_DIR"
STATE_FILENAME = "state.json"
VERSION = 1
MAX_THEME = 40
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Far above any real state (9 lists of 5,000 symbols is under 1 MB); a bigger file is not ours."""


def _book_json(book: Book) -> dict[str, Any]:
    return {"active": book.active, "watchlists": [
        {"name": wl.name, "symbols": list(wl.symbols), "sort": wl.sort, "descending": wl.descending}
        for wl in book.lists]}


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def _expect(value: object, kind: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it has JSON type ``kind``; true is not an integer here, though Python says it is."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        wanted = " or ".join(_JSON_NAMES[k] for k in kinds)
        raise Corrupt(f"{where} must be {wanted}, not {_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value


def _keys(obj: Mapping[str, Any], required: set[str], optional: set[str], where: str) -> None:
    if missing := sorted(required - obj.keys()):
        raise Corrupt(f"{where} lacks {missing[0]!r}")
    if unknown := sorted(obj.keys() - required - optional):
        raise Corrupt(f"{where} has an unknown key {unknown[0]!r}")


def _parse_book(raw: object, where: str, sort_keys: Sequence[str] | None) -> Book:
    entry = _expect(raw, dict, where)
    _keys(entry, {"active", "watchlists"}, set(), where)
    lists = []
    for i, item in enumerate(_expect(entry["watchlists"], list, f"{where}.watchlists")):
        at = f"{where}.watchlists[{i}]"
        wl = _expect(item, dict, at)
        _keys(wl, {"name", "symbols"}, {"sort", "descending"}, at)
        symbols = _expect(wl["symbols"], list, f"{at}.symbols")
        for j, s in enumerate(symbols):
            _expect(s, str, f"{at}.symbols[{j}]")
        sort = _expect(wl.get("sort"), (str, type(None)), f"{at}.sort")
        descending = _expect(wl.get("descending", False), bool, f"{at}.descending")
        if sort is not None and not (sort and sort.isprintable()):  # before unknown keys are let go
            raise Corrupt(f"{at}.sort is an unusable key {sort!r:.20}")
        if sort is not None and sort_keys is not None and sort not in sort_keys:
            sort = None
        lists.append(WatchList(_expect(wl["name"], str, f"{at}.name"), list(symbols), sort,
                               descending and sort is not None))
    active = _expect(entry["active"], int, f"{where}.active")
    try:
        return Book(lists, active)
    except Corrupt as exc:
        raise Corrupt(f"{where}: {exc}") from None


def _parse(data: bytes, feed: str | None = None, sort_keys: Sequence[str] | None = None
           ) -> tuple[dict[str, Any], Book | None]:
    """The checked document, and ``feed``'s Book if it has one; Corrupt for anything save wouldn't write."""
    if not data.strip():
        raise Corrupt("it is empty")
    if len(data) > MAX_FILE_BYTES:
        raise Corrupt(f"it is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Corrupt(f"it is not UTF-8 text (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Corrupt(f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number; nesting deeper than the stack
        raise Corrupt(f"it is not usable JSON ({type(exc).__name__})") from None
    _expect(doc, dict, "the top level")
    _keys(doc, {"version", "feeds"}, {"theme", "positions"}, "the top level")
    if type(doc["version"]) is not int or doc["version"] != VERSION:
        raise Corrupt(f"it has version {doc['version']!r:.20}; this tickdeck reads version {VERSION}")
    theme = _expect(doc.get("theme"), (str, type(None)), "theme")
    if theme is not None and not _is_theme_name(theme):
        raise Corrupt(f"theme {theme[:MAX_THEME]!r} is not a theme name")
    feeds = _expect(doc["feeds"], dict, "feeds")
    book = None
    for name, entry in feeds.items():
        if not name or not name.isprintable():  # an escaped lone surrogate could not even be written back
            raise Corrupt(f"feeds has an entry with an unusable name {name!r:.20}")
        parsed = _parse_book(entry, f"feeds.{name:.20}", sort_keys if name == feed else None)
        if name == feed:
            book = parsed
    try:  # the positions part (engine.positions.stored) is checked whole, as the watchlists are
        stored_positions.decode_all(doc.get("positions", {}))
    except PositionError as exc:
        raise Corrupt(str(exc)) from None
    return doc, book


class StateStore:
    """``state.json`` in one directory: loads with recovery, saves atomically, one entry per feed.

    Saving reads the file again and merges, so two consoles on different feeds keep each other's lists
    (the last writer wins if both write in the same instant).
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / STATE_FILENAME
        self._lock = threading.Lock()  # a load (which may set the file aside) and a save never interleave

    @classmethod
    def default(cls, env: Mapping[str, str] = os.environ) -> StateStore:
        """The store in ``$TICKDECK_STATE_DIR``, or else the platform's user state directory."""
        return cls(Path(env.get(STATE_DIR_VAR) or platformdirs.user_state_dir("tickdeck")))

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def load(self, feed: str, defaults: Sequence[str], sort_keys: Sequence[str] | None = None
             ) -> tuple[Book, str | None]:
        """``feed``'s watchlists and a warning for the user (None if all is well); never raises for content.

        No file, or no entry for ``feed``: one list "Main" holding ``defaults``, no warning. ``sort_keys``:
        the columns the app can sort by; a saved sort by any other key becomes the user's own order.
        """
        with self._lock:
            try:
                data = self._read()
            except OSError as exc:
                return Book.default(defaults), (f"Could not read your saved watchlists at {self.path} "
                                                f"({_reason(exc)}); using the defaults.")
            if data is None:
                return Book.default(defaults), None
            try:
                _, book = _parse(data, feed, sort_keys)
            except Corrupt as exc:
                return Book.default(defaults), self._set_aside(str(exc))
            return book or Book.default(defaults), None

    def load_positions(self, feed: str) -> tuple[PositionBook, str | None]:
        """``feed``'s positions and a warning for the user, as :meth:`load` does for the watchlists: a
        damaged file (its positions part included) is set aside and an empty book returned. Called after
        :meth:`load`, it finds the file already set aside and answers an empty book and no warning."""
        with self._lock:
            try:
                data = self._read()
            except OSError as exc:
                return PositionBook(), (f"Could not read your saved positions at {self.path} "
                                        f"({_reason(exc)}); starting with none.")
            if data is None:
                return PositionBook(), None
            try:
                doc = _parse(data)[0]
            except Corrupt as exc:
                return PositionBook(), self._set_aside(str(exc))
            entry = doc.get("positions", {}).get(feed)
            return (stored_positions.decode(entry, feed) if entry is not None else PositionBook()), None

    def save(self, feed: str, book: Book) -> None:
        """Write ``book`` as ``feed``'s entry, keeping the other feeds' entries and the theme."""
        self.apply([book_change(feed, book)])

    def load_theme(self) -> str | None:
        """The saved theme; None if there is none or the file is unusable (:meth:`load` reports that)."""
        try:
            data = self._read()
            return _parse(data)[0].get("theme") if data is not None else None
        except (OSError, Corrupt):
            return None

    def save_theme(self, name: str) -> None:
        self.apply([theme_change(name)])

    def _read(self) -> bytes | None:
        """The file's bytes, or None if there is none; OSError if it cannot be read (or is no file)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):  # a directory, or a FIFO that would hang the start
            raise OSError("it is not a regular file")
        with self.path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)

    def _set_aside(self, problem: str) -> str:
        """Rename the unusable file to ``.bak`` (replacing an older one); the sentence for the user."""
        try:
            self._move_aside()
        except OSError as exc:
            return (f"Your saved watchlists at {self.path} are unusable ({problem}) and could not be kept "
                    f"aside as {self.backup_path.name} ({_reason(exc)}); using the defaults.")
        return (f"Your saved watchlists at {self.path} are unusable ({problem}); the file was kept as "
                f"{self.backup_path} and the defaults are in use.")

    def _move_aside(self) -> None:
        os.replace(self.path, self.backup_path)

    def apply(self, changes: Sequence[Change]) -> None:
        """Read the file, make ``changes`` to it and write it back atomically; StateError says why not."""
        what = " and ".join(dict.fromkeys(c.what for c in changes))
        with self._lock:
            try:
                data = self._read()
                try:
                    doc = _parse(data)[0] if data is not None else None
                except Corrupt:  # damaged since it was loaded: keep it as load would, or write nothing
                    self._move_aside()
                    doc = None
                doc = doc or {"version": VERSION, "feeds": {}}
                for change in changes:
                    change.apply(doc)
                text = json.dumps(doc, ensure_ascii=False, indent=1)  # no trailing newline: see the docstring
                if len(text.encode()) > MAX_FILE_BYTES:
                    raise StateError(f"Could not save {what}: the state would exceed "
                                     f"{MAX_FILE_BYTES >> 20} MiB")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.path, lambda fh: _write_text(fh, text))
            except OSError as exc:
                raise StateError(f"Could not save {what} to {self.path}: {_reason(exc)}") from None


@dataclass(frozen=True)
class Change:
    """One part of the state file to write: ``key`` names the part (a later change of the same part
    replaces a pending one), ``what`` names it for the user, ``apply`` makes it on the parsed file."""

    key: str
    what: str
    apply: Callable[[dict[str, Any]], None]


def book_change(feed: str, book: Book) -> Change:
    """``book`` as ``feed``'s entry, copied now: edits made after this call are not part of it."""
    if not feed or not feed.isprintable():
        raise StateError(f"Could not save your watchlists: {feed!r} is not a feed name")
    entry = _book_json(book)
    return Change(f"feeds.{feed}", "your watchlists", lambda doc: doc["feeds"].__setitem__(feed, entry))


def positions_change(feed: str, book: PositionBook) -> Change:
    """``book`` as ``feed``'s positions, encoded now (decimals as strings, see engine.positions.stored)."""
    if not feed or not feed.isprintable():
        raise StateError(f"Could not save your positions: {feed!r} is not a feed name")
    entry = stored_positions.encode(book)

    def apply(doc: dict[str, Any]) -> None:
        doc.setdefault("positions", {})[feed] = entry

    return Change(f"positions.{feed}", "your positions", apply)


def theme_change(name: str) -> Change:
    if not _is_theme_name(name):
        raise StateError(f"Could not save the theme: {name[:MAX_THEME]!r} is not a theme name")
    return Change("theme", "the theme", lambda doc: doc.__setitem__("theme", name))


def _is_theme_name(name: str) -> bool:
    return 0 < len(name) <= MAX_THEME and name.isprintable() and name == name.strip()


def _write_text(fh: TextIO, text: str) -> None:
    fh.write(text)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
