"""The watchlists of one feed as the keys edit them: the rules every edit keeps, and the undo stack.

A :class:`Book` that exists is one that can be saved and loaded: its constructor checks every rule the
editing methods keep, and the loader (:mod:`console.state`) builds Books through it. This module imports
no textual or rich, and nothing that touches the disk: the app wires keys to a Book and shows
:class:`StateError` messages as notifications.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_WATCHLISTS = 9
"""Keys 1-9 switch lists, so there are never more."""
MAX_NAME = 20
MAX_SYMBOL = 40
UNDO_DEPTH = 100
"""Deletions that can be undone; older ones are forgotten."""
DEFAULT_NAME = "Main"


class StateError(Exception):
    """A refused edit or a failed save; the message is one sentence to show the user as it is."""


class Corrupt(ValueError):
    """The state file's content is unusable (or a Book was built broken); the message says what and where."""


@dataclass
class WatchList:
    name: str
    symbols: list[str]
    sort: str | None = None
    """None: the user's own order (``symbols`` as stored), in which rows can be moved."""
    descending: bool = False


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a watchlist, or None. Names are what the user typed, stripped."""
    if not name:
        return "a watchlist needs a name"
    if len(name) > MAX_NAME:
        return f"a watchlist name has at most {MAX_NAME} characters, {name!r} has {len(name)}"
    if not name.isprintable():
        return f"a watchlist name cannot hold control characters: {name!r}"
    return None


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` cannot be listed, or None. Feed-specific spelling (upper case) is the caller's job."""
    if not symbol or symbol != symbol.strip():
        return f"a symbol cannot be blank or start or end with a space: {symbol!r}"
    if len(symbol) > MAX_SYMBOL:
        return f"a symbol has at most {MAX_SYMBOL} characters: {symbol[:MAX_SYMBOL]!r}..."
    if not symbol.isprintable():
        return f"a symbol cannot hold control characters: {symbol!r}"
    return None


@dataclass(frozen=True)
class _Deleted:
    into: WatchList
    symbol: str
    index: int


@dataclass(frozen=True)
class _DeletedList:
    watchlist: WatchList
    index: int


@dataclass
class Book:
    """All watchlists of one feed, which one is active, and the undo stack of deletions.

    The constructor checks every rule the editing methods keep (1-9 lists, unique valid names, unique
    valid symbols per list, ``active`` in range), so a Book that exists is one that can be saved and loaded.
    """

    lists: list[WatchList]
    active: int = 0
    _undo: list[_Deleted | _DeletedList] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_book(self.lists, self.active)

    @classmethod
    def default(cls, symbols: Iterable[str]) -> Book:
        """One list, "Main", holding ``symbols`` less duplicates and any a user could not add either.

        The defaults come from a feed's universe (a replay file's names included); one odd name there
        must not stop the app from starting.
        """
        return cls([WatchList(DEFAULT_NAME, [s for s in dict.fromkeys(symbols) if not symbol_problem(s)])])

    @property
    def current(self) -> WatchList:
        return self.lists[self.active]

    def add(self, symbol: str) -> None:
        if problem := symbol_problem(symbol):
            raise StateError(problem)
        if symbol in self.current.symbols:
            raise StateError(f"{symbol} is already in {self.current.name}")
        self.current.symbols.append(symbol)

    def delete(self, symbol: str) -> int:
        """Remove ``symbol`` from the current list; returns the index it had (in the user's order)."""
        index = self._index(symbol)
        del self.current.symbols[index]
        self._undo.append(_Deleted(self.current, symbol, index))
        del self._undo[:-UNDO_DEPTH]
        return index

    def undo(self) -> str | WatchList | None:
        """Undo the last deletion: the symbol put back (a str) or the list put back (made current), or
        None if there is nothing left to undo.

        A symbol goes back into its own list, where it was, even when another one is active now. A
        deletion whose symbol has since been added back to that list has nothing left to undo and is
        skipped, and so is one whose list is deleted (undoing that list's deletion brings it back first).
        A list goes back to its place with its symbols, sort and name; if it cannot (nine lists, or its
        name taken since), StateError says why and the deletion stays undoable.
        """
        while self._undo:
            entry = self._undo[-1]
            if isinstance(entry, _DeletedList):
                self._check_restorable(entry.watchlist)
                self._undo.pop()
                index = min(entry.index, len(self.lists))
                self.lists.insert(index, entry.watchlist)
                self.active = index
                return entry.watchlist
            self._undo.pop()
            if entry.symbol not in entry.into.symbols and any(wl is entry.into for wl in self.lists):
                entry.into.symbols.insert(min(entry.index, len(entry.into.symbols)), entry.symbol)
                return entry.symbol
        return None

    def _check_restorable(self, wl: WatchList) -> None:
        if len(self.lists) >= MAX_WATCHLISTS:
            raise StateError(f"{wl.name} cannot come back while there are {MAX_WATCHLISTS} watchlists; "
                             "delete one first")
        if any(other.name.casefold() == wl.name.casefold() for other in self.lists):
            raise StateError(f"{wl.name} cannot come back while another watchlist has its name; "
                             "rename that one first")

    def delete_list(self) -> WatchList:
        """Remove the current list (the next one, or else the previous, becomes current); returns it.

        The last list is never deleted: the app always shows one.
        """
        wl = self.current
        if len(self.lists) == 1:
            raise StateError(f"{wl.name} is the only watchlist, and there is always one; "
                             "make another before deleting it")
        del self.lists[self.active]
        self._undo.append(_DeletedList(wl, self.active))
        del self._undo[:-UNDO_DEPTH]
        self.active = min(self.active, len(self.lists) - 1)
        return wl

    def move_list(self, delta: int) -> int:
        """Move the current list ``delta`` places (negative: left), clamped; returns its new index.

        Keys 1-9 follow the places, so the list moved gets a new number.
        """
        new = max(0, min(len(self.lists) - 1, self.active + delta))
        self.lists.insert(new, self.lists.pop(self.active))
        self.active = new
        return new

    def move(self, symbol: str, delta: int) -> int:
        """Move ``symbol``'s row ``delta`` places (negative: up), clamped; returns its new index."""
        wl = self.current
        if wl.sort is not None:
            raise StateError(f"{wl.name} is sorted by {wl.sort}: rows move only in your own order")
        index = self._index(symbol)
        new = max(0, min(len(wl.symbols) - 1, index + delta))
        wl.symbols.insert(new, wl.symbols.pop(index))
        return new

    def new(self, name: str) -> int:
        """Append an empty list named ``name`` and make it the current one; returns its index."""
        if len(self.lists) >= MAX_WATCHLISTS:
            raise StateError(f"there are already {MAX_WATCHLISTS} watchlists, the most keys 1-9 can reach")
        name = self._free_name(name, None)
        self.lists.append(WatchList(name, []))
        self.active = len(self.lists) - 1
        return self.active

    def rename(self, name: str) -> None:
        self.current.name = self._free_name(name, self.current)

    def name_refused(self, name: str, renaming: bool = False) -> str | None:
        """Why :meth:`new` (or, ``renaming``, :meth:`rename`) would refuse ``name``; None if it would not.

        The app asks before it closes the prompt, so a refused name stays there to be corrected.
        """
        if not renaming and len(self.lists) >= MAX_WATCHLISTS:
            return f"there are already {MAX_WATCHLISTS} watchlists, the most keys 1-9 can reach"
        try:
            self._free_name(name, self.current if renaming else None)
        except StateError as exc:
            return str(exc)
        return None

    def switch(self, index: int) -> bool:
        """Make list ``index`` (0-based: key 1 is index 0) current; False if there is no such list."""
        if not 0 <= index < len(self.lists):
            return False
        self.active = index
        return True

    def append_unlisted(self, symbols: Iterable[str], index: int = 0) -> list[str]:
        """Append to list ``index`` those of ``symbols`` that no list holds and a user could add too;
        returns them (a fleet console's new symbols go to its first list)."""
        listed = self.symbols()
        fresh = [s for s in dict.fromkeys(symbols) if s not in listed and not symbol_problem(s)]
        self.lists[index].symbols.extend(fresh)
        return fresh

    def symbols(self) -> set[str]:
        """Every symbol in any list: what the runtime must subscribe to."""
        return {s for wl in self.lists for s in wl.symbols}

    def known_sorts(self, keys: Sequence[str]) -> None:
        """Turn sorts by keys not in ``keys`` (columns no longer shown) back into the user's own order."""
        for wl in self.lists:
            if wl.sort is not None and wl.sort not in keys:
                wl.sort, wl.descending = None, False

    def _index(self, symbol: str) -> int:
        try:
            return self.current.symbols.index(symbol)
        except ValueError:
            raise StateError(f"{symbol} is not in {self.current.name}") from None

    def _free_name(self, name: str, renaming: WatchList | None) -> str:
        name = name.strip()
        if problem := name_problem(name):
            raise StateError(problem)
        if any(wl.name.casefold() == name.casefold() for wl in self.lists if wl is not renaming):
            raise StateError(f"there is already a watchlist named {name}")
        return name


def _check_book(lists: Sequence[WatchList], active: int) -> None:
    """Raise Corrupt naming the first broken rule; shared by the constructor and the loader."""
    if not 1 <= len(lists) <= MAX_WATCHLISTS:
        raise Corrupt(f"holds {len(lists)} watchlists, not 1 to {MAX_WATCHLISTS}")
    if not 0 <= active < len(lists):
        raise Corrupt(f"active list {active} does not exist (there are {len(lists)})")
    seen: set[str] = set()
    for wl in lists:
        if (problem := name_problem(wl.name)) or wl.name != wl.name.strip():
            raise Corrupt(problem or f"the watchlist name {wl.name!r} starts or ends with a space")
        if wl.name.casefold() in seen:
            raise Corrupt(f"two watchlists are named {wl.name}")
        seen.add(wl.name.casefold())
        for symbol in wl.symbols:
            if problem := symbol_problem(symbol):
                raise Corrupt(f"{wl.name}: {problem}")
        if wl.sort is not None and not (wl.sort and wl.sort.isprintable()):
            raise Corrupt(f"{wl.name} is sorted by an unusable key {wl.sort!r:.20}")
        if len(set(wl.symbols)) != len(wl.symbols):
            dup = next(s for i, s in enumerate(wl.symbols) if s in wl.symbols[:i])
            raise Corrupt(f"{wl.name} lists {dup} twice")
