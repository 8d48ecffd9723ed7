"""The keyboard's watchlist edits: add, delete and undo, move, sort, filter, and of whole lists new,
rename, delete (and undo), move and switch.

A mixin of :class:`console.app.TickdeckApp`, kept apart so the app module holds the runtime plumbing and
this one the editing rules. Every edit goes through the :class:`~console.state.Book` (which checks it),
is saved at once (handed to the app's :class:`~console.state_saver.StateSaver`, whose thread writes it
atomically), and is then handed to the widgets and the runtime. A refused edit is a notification that
says why, and changes nothing. A save that fails (a full disk, a read-only directory) is a notification
naming the file; the edit stays on screen and is written with the next edit that saves.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

from console.book import MAX_NAME, MAX_WATCHLISTS, Book, StateError, WatchList
from console.state_saver import StateSaver
from widgets.list_tabs import ListTabs
from widgets.prompt import PromptBar
from widgets.signal_log import SignalLog
from widgets.sort_picker import SortPicker
from widgets.watchlist import Watchlist
from widgets.watchlist_layout import MY_ORDER, sort_choices, sort_label

if TYPE_CHECKING:
    from textual.app import App

    from console.messages import SymbolsAdded
    from engine.console_runtime import ConsoleRuntime

FILTERS = ("filter", "log_filter")
MAX_OFFERED = 100_000
"""Symbols a console remembers having listed by itself in a session (``on_symbols_added``); past it, a
fleet's new symbols are no longer listed by themselves (``a`` still adds them)."""


class WatchlistEditing:
    """Actions on the watchlists; the app provides the attributes below."""

    book: Book | None
    offered: set[str]  # the symbols the lists were given this session (on_runtime_ready, on_symbols_added)
    saver: StateSaver
    feed_name: str
    runtime: ConsoleRuntime | None
    watchlist: Watchlist
    signal_log: SignalLog
    tabs: ListTabs
    prompt: PromptBar

    if TYPE_CHECKING:  # provided by textual.app.App (declared only for the type checker)
        def notify(self, message: str, *, title: str = "", severity: Any = "information",
                   timeout: float | None = None, markup: bool = True) -> None: ...
        def run_worker(self, work: Any, *args: Any, **kwargs: Any) -> Any: ...
        def key_bindings(self) -> list[Any]: ...
        def get_key_display(self, binding: Any) -> str: ...
        @property
        def focused(self) -> Any: ...

    # --- book -> screen --------------------------------------------------------------------------------
    def show_book(self) -> None:
        """Hand the active list to the watchlist and the runtime, and the names to the tabs."""
        book = self.book
        if book is None:
            return
        wl = book.current
        self.watchlist.hint_keys = (self.key_name("add"), self.key_name("back"))
        self.watchlist.symbols = tuple(wl.symbols)
        self.watchlist.sort = (wl.sort, wl.descending)
        self.tabs.names = tuple(w.name for w in book.lists)
        self.tabs.active = book.active
        self._note()
        runtime = self.runtime
        if runtime is not None and runtime.implements_watch:  # a local runtime: snapshot these
            runtime.set_watch(wl.symbols)

    def _note(self) -> None:
        key, descending = self.watchlist.sort
        parts = []
        if key is not None:
            label = sort_label(key, self.watchlist.indicators)
            parts.append(f"sorted by {label} {'▼' if descending else '▲'}")
        if self.watchlist.filter:
            parts.append(f"filter “{self.watchlist.filter}”")
        self.tabs.note = " · ".join(parts)

    def _save(self) -> bool:
        if self.book is None:
            return False
        try:
            self.saver.save(self.feed_name, self.book)  # copied now, written by the saver's thread
        except StateError as exc:
            self.notify(str(exc), title="Not saved", severity="error", timeout=10)
            return False
        return True

    def key_name(self, binding_id: str) -> str:
        """The first key in force for binding ``binding_id`` (after ``[keys]``), as the footer shows it."""
        for binding in self.key_bindings():
            if binding.id == binding_id:
                return self.get_key_display(dataclasses.replace(binding, key=binding.key.split(",")[0]))
        return binding_id

    def _book_or_warn(self) -> Book | None:
        if self.book is None:
            self.notify("the watchlists appear once the engine has started", severity="warning")
        return self.book

    def on_symbols_added(self, message: SymbolsAdded) -> None:
        """Symbols the publisher started carrying after the console opened (a fleet's engine that started
        later, a sharded engine's takeover): they go to the end of the first list, and are saved as an
        edit is. Each symbol is given to the lists once a session: one the user deleted stays deleted,
        one already in a list stays where it is."""
        book, offered = self.book, self.offered
        if book is None:
            return
        fresh = [s for s in message.symbols if s not in offered][:max(0, MAX_OFFERED - len(offered))]
        offered.update(fresh)
        added = book.append_unlisted(fresh)
        if not added:
            return
        self._save()
        self.show_book()
        what = added[0] if len(added) == 1 else f"{len(added)} symbols"
        self.notify(f"{what} added to {book.lists[0].name}: newly published", timeout=3)

    # --- actions ---------------------------------------------------------------------------------------
    def action_add(self) -> None:
        book = self._book_or_warn()
        if book is None:
            return
        present = set(book.current.symbols)
        universe = [s for s in self._universe() if s not in present]
        # On a signal in the log, its symbol is the one meant (Enter there says "a adds it").
        signal = self.signal_log.selected if isinstance(self.focused, SignalLog) else None
        value = signal.symbol if signal is not None and signal.symbol not in present else ""
        self.prompt.ask("add", f"Add to {book.current.name}:", value, completions=universe,
                        placeholder="symbol (→ completes, enter adds, esc cancels)")

    def action_delete(self) -> None:
        book, symbol = self._book_or_warn(), self.watchlist.selected
        if book is None:
            return
        if symbol is None:
            self._nothing_selected(book, "delete")
            return
        try:
            book.delete(symbol)
        except StateError as exc:
            self.notify(str(exc), severity="warning", timeout=4)
            return
        if self._save():
            self.notify(f"removed {symbol} from {book.current.name} (u to undo)", timeout=4)
        self.show_book()
        self._unsubscribe([symbol])

    def _nothing_selected(self, book: Book, verb: str) -> None:
        """Say why a key that acts on the selected row did nothing."""
        if not book.current.symbols:
            why = f"{book.current.name} is empty ({self.key_name('add')} adds a symbol)"
        else:
            why = f"no row matches the filter ({self.key_name('back')} clears it)"
        self.notify(f"nothing to {verb}: {why}", severity="warning", timeout=4)

    def _unsubscribe(self, symbols: list[str]) -> None:
        """Stop receiving those of ``symbols`` that are in no list now (on a live feed)."""
        runtime, book = self.runtime, self.book
        if runtime is None or book is None or not runtime.implements_subscribe:
            return
        if runtime.feed.closed_universe:
            return
        listed = book.symbols()
        if unlisted := [s for s in symbols if s not in listed]:
            self.run_worker(runtime.drop_symbols(unlisted), group="subscribe", exit_on_error=False)

    def _subscribe(self, symbols: list[str]) -> None:
        runtime = self.runtime
        if symbols and runtime is not None and runtime.implements_subscribe:
            self.run_worker(runtime.add_symbols(symbols), group="subscribe", exit_on_error=False)

    def action_undo(self) -> None:
        book = self._book_or_warn()
        if book is None:
            return
        try:
            symbol = book.undo()
        except StateError as exc:  # a deleted list that has no room or whose name is taken
            self.notify(str(exc), title="Not restored", severity="warning", timeout=6)
            return
        if symbol is None:
            self.notify("nothing to undo", timeout=2)
            return
        self._save()
        if isinstance(symbol, WatchList):
            self.watchlist.filter = ""
            self.show_book()
            self._subscribe(list(symbol.symbols))
            self.notify(f"restored the list {symbol.name}", timeout=3)
            return
        self.show_book()
        self.watchlist.select(symbol)
        self._subscribe([symbol])
        self.notify(f"restored {symbol}", timeout=3)

    def _move(self, delta: int) -> None:
        book, symbol = self._book_or_warn(), self.watchlist.selected
        if book is None or symbol is None:
            return
        wl = book.current
        if wl.sort is not None:  # said with the column's header name, and how to get back
            self.notify(f"{wl.name} is sorted by {sort_label(wl.sort, self.watchlist.indicators)}: rows "
                        f"move only in your own order (s, then {MY_ORDER})", severity="warning", timeout=4)
            return
        try:
            book.move(symbol, delta)
        except StateError as exc:
            self.notify(str(exc), severity="warning", timeout=4)
            return
        self._save()
        self.show_book()
        self.watchlist.select(symbol)

    def action_move_up(self) -> None:
        self._move(-1)

    def action_move_down(self) -> None:
        self._move(1)

    def action_sort(self) -> None:
        """Open the sort picker: "My order" and the columns by their header names."""
        book = self._book_or_warn()
        if book is None:
            return
        wl = book.current
        choices = sort_choices(self.watchlist.indicators, self.watchlist.positions)
        picker = SortPicker(choices, (wl.sort, wl.descending))
        cast("App[int]", self).push_screen(picker, self._sort_picked)

    def _sort_picked(self, sort: tuple[str | None, bool] | None) -> None:
        book = self.book
        if sort is None or book is None:  # cancelled
            return
        book.current.sort, book.current.descending = sort  # keys as saved, so old state files still load
        self._save()
        self.show_book()

    def action_filter(self) -> None:
        if isinstance(self.focused, SignalLog):
            self.prompt.ask("log_filter", "Filter signals:", self.signal_log.filter,
                            placeholder="symbol or rule, sym:V, rule:vol (enter keeps, esc clears)")
        else:
            self.prompt.ask("filter", "Filter rows:", self.watchlist.filter,
                            placeholder="part of a symbol (enter keeps, esc clears)")

    def action_new_list(self) -> None:
        book = self._book_or_warn()
        if book is None:
            return
        if len(book.lists) >= MAX_WATCHLISTS:  # said now, not after a name was typed
            self.notify(f"there are already {MAX_WATCHLISTS} watchlists, the most keys 1-9 can reach "
                        f"({self.key_name('delete_list')} deletes the active one)",
                        severity="warning", timeout=5)
            return
        self.prompt.ask("new_list", "New watchlist:", placeholder=f"name (up to {MAX_NAME} characters)",
                        max_length=MAX_NAME, check=book.name_refused)

    def action_rename_list(self) -> None:
        book = self._book_or_warn()
        if book is not None:
            self.prompt.ask("rename_list", f"Rename {book.current.name} to:", book.current.name,
                            max_length=MAX_NAME, check=lambda name: book.name_refused(name, renaming=True))

    def action_delete_list(self) -> None:
        """Delete the active list; ``u`` puts it back where it was, with its symbols, sort and name."""
        book = self._book_or_warn()
        if book is None:
            return
        try:
            gone = book.delete_list()
        except StateError as exc:
            self.notify(str(exc), title="Not deleted", severity="warning", timeout=5)
            return
        if self._save():
            self.notify(f"deleted list {gone.name} ({self.key_name('undo')} restores it)", timeout=5)
        self.watchlist.filter = ""
        self.show_book()
        self._unsubscribe(list(gone.symbols))

    def _move_list(self, delta: int) -> None:
        book = self._book_or_warn()
        if book is None:
            return
        before = book.active
        if book.move_list(delta) == before:
            edge = "first" if delta < 0 else "last"
            self.notify(f"{book.current.name} is already the {edge} list", timeout=2)
            return
        self._save()
        self.show_book()

    def action_move_list_left(self) -> None:
        self._move_list(-1)

    def action_move_list_right(self) -> None:
        self._move_list(1)

    def action_switch_list(self, number: int) -> None:
        book = self._book_or_warn()
        if book is None:
            return
        if not book.switch(number - 1):
            self.notify(f"there is no watchlist {number} (n makes a new one)", severity="warning", timeout=3)
            return
        self._save()
        self.watchlist.filter = ""
        self.show_book()

    # --- answers ---------------------------------------------------------------------------------------
    def on_prompt_bar_changed(self, event: PromptBar.Changed) -> None:
        if event.purpose == "filter":
            self.watchlist.filter = event.value
            self._note()
        elif event.purpose == "log_filter":
            self.signal_log.filter = event.value

    def on_prompt_bar_answered(self, event: PromptBar.Answered) -> None:
        purpose, value = event.purpose, event.value
        if purpose in FILTERS:
            if value is None:  # escape clears the filter
                self.on_prompt_bar_changed(PromptBar.Changed(purpose, ""))
            return
        if value is None or not value.strip() or self.book is None:
            return
        if purpose == "add":
            self.add_symbol(value.strip().upper())
            return
        try:
            if purpose == "new_list":
                self.book.new(value)
            elif purpose == "rename_list":
                self.book.rename(value)
        except StateError as exc:
            self.notify(str(exc), title="Not changed", severity="error", timeout=6)
            return
        self._save()
        self.watchlist.filter = ""
        self.show_book()

    def add_symbol(self, symbol: str) -> None:
        """Add ``symbol`` to the active list if the feed can deliver it; a clear message otherwise."""
        book = self.book
        if book is None:
            return
        problem = self._check(symbol)
        if problem is None:
            try:
                book.add(symbol)
            except StateError as exc:
                problem = str(exc)
        if problem is not None:
            self.notify(f"{problem}; nothing was added", title="Not added", severity="error", timeout=6)
            return
        self._save()
        self.show_book()
        self.watchlist.filter = ""
        self.watchlist.select(symbol)
        runtime = self.runtime
        if runtime is not None and runtime.implements_subscribe:
            self.run_worker(runtime.add_symbols([symbol]), group="subscribe", exit_on_error=False)
        self.notify(f"added {symbol} to {book.current.name}", timeout=3)

    def _check(self, symbol: str) -> str | None:
        runtime = self.runtime
        if runtime is None:
            return "the engine is still starting"
        return runtime.check_symbol(symbol)  # attached: only what the publisher sends

    def _universe(self) -> list[str]:
        runtime = self.runtime
        if runtime is None:
            return []
        return list(runtime.feed.universe())  # attached: the publisher's symbols
