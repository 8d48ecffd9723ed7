"""Positions in the console: the keys that enter, edit, delete and undo lots, the position columns, the
totals row and the portfolio pane.

A mixin of :class:`console.app.TickdeckApp`, beside :class:`console.editing.WatchlistEditing`, whose rules
it follows: a lot typed in the prompt (``SYMBOL QTY @ PRICE [+ FEE]``, :func:`engine.positions.parse_entry`)
that does not parse, or names a symbol the feed does not know (the check ``a`` uses), keeps its text in
the prompt with the reason, and nothing changes; every change is saved at once through the app's
:class:`~console.state_saver.StateSaver` (the same atomic write as the watchlists), in this feed's entry.
``u`` undoes the last change, of positions or of watchlists, whichever came last.

Once per frame (:meth:`PositionEditing.value_positions`) the active list is valued with
:func:`engine.positions.valuation.value`: a handful of numpy operations over the rows, never per tick; the
book's float arrays are rebuilt only when the book or the rows change. The watchlist, the totals row and
the portfolio pane draw the result. While the pane shows, its line over the stored bars
(:mod:`engine.positions.history`) is read in a worker when the book or the list changes and every
``REFRESH_S`` (each held symbol's bars from the runtime, then one vectorised pass in a thread).

An attached console values the positions kept on this machine under the service's feed name at the
prices the service broadcasts: positions never leave the machine they were entered on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any, cast

from textual.binding import Binding

from console.book import StateError
from console.messages import RuntimeReady
from widgets.portfolio import Allocation, PortfolioPane, SessionPnl, TotalsBar
from widgets.position_columns import PositionFrame
from widgets.prompt import PromptBar

if TYPE_CHECKING:
    from console.state import StateStore
    from console.state_saver import StateSaver
    from engine.console_runtime import ConsoleRuntime
    from engine.positions.book import PositionBook
    from engine.positions.valuation import Holdings, Valuation
    from engine.snapshot import MarketSnapshot

POSITION_ACTIONS = frozenset({"position", "edit_position", "delete_position", "toggle_positions",
                              "toggle_portfolio"})
PURPOSES = ("position", "edit_position")
UNDO_ORDER = 200
"""Changes whose kind (positions or lists) undo remembers: both books keep 100 at most."""
GRAMMAR_HINT = ("SYMBOL QTY @ PRICE [+ FEE] (AAPL 10 @ 182.50 + 1.20), or SYMBOL stop P|off target P|off "
                "(esc cancels)")


def levels_text(position: Any) -> str:
    """``stop 170, target none``: what a position's alert levels are after a change."""
    def one(level: Any) -> str:
        return "none" if level is None else f"{level:f}"

    return f"stop {one(position.stop)}, target {one(position.target)}"


def position_bindings() -> list[Binding]:
    """The position keys; ids are their ``[keys]`` names."""
    return [
        Binding("e", "position", "Position", id="position", show=False),
        Binding("E", "edit_position", "Edit position", id="edit_position", show=False),
        Binding("ctrl+x", "delete_position", "Delete position", id="delete_position", show=False),
        Binding("c", "toggle_positions", "Position columns", id="positions", show=False),
        Binding("w", "toggle_portfolio", "Portfolio", id="portfolio", show=False),
    ]


class PositionEditing:
    """Position keys and drawing; the app provides what WatchlistEditing declares, and these."""

    store: StateStore
    saver: StateSaver
    totals: TotalsBar
    portfolio: PortfolioPane
    position_book: PositionBook | None = None
    _holdings: Holdings | None = None
    _index: dict[str, int] | None = None  # the rows' places, kept with the holdings
    _valued: Valuation | None = None  # the last frame's, for the portfolio pane when it opens
    _positions_shown: bool | None = None  # None: shown while the active list holds a position
    _undo_order: list[str]
    _session: SessionPnl
    _session_list: object = None
    _portfolio_shown = False
    _stored_key: object = None  # (book version, rows) the pane's stored line was read for
    _stored_at = 0.0  # when (monotonic s)

    if TYPE_CHECKING:  # from the app, WatchlistEditing and textual's App
        book: Any
        watchlist: Any
        prompt: PromptBar
        feed_name: str
        config: Any
        runtime: ConsoleRuntime | None

        def notify(self, message: str, *, title: str = "", severity: Any = "information",
                   timeout: float | None = None, markup: bool = True) -> None: ...
        def key_name(self, binding_id: str) -> str: ...
        def _check(self, symbol: str) -> str | None: ...
        def add_symbol(self, symbol: str) -> None: ...

    def init_positions(self) -> None:
        self._undo_order = []
        self._session = SessionPnl()
        self.totals = TotalsBar(id="totals")
        self.portfolio = PortfolioPane(id="portfolio")

    # --- loading and saving -----------------------------------------------------------------------------
    async def on_runtime_ready(self, message: RuntimeReady) -> None:
        """After the app's own handler (the watchlists): this feed's positions, read in a thread. An
        attached console uses the service's feed name (``RuntimeReady.feed`` is the local ``attach``)."""
        feed = self.position_feed()
        book, warning = await asyncio.to_thread(self.store.load_positions, feed)
        self.position_book = book
        self._holdings = None
        self._alert_on(book)
        if warning:
            self.notify(warning, title="Positions reset", severity="warning", timeout=20)
        self.show_positions()

    def position_feed(self) -> str:
        """The feed the positions are kept under: the publisher's for an attached console."""
        runtime = self.runtime
        return runtime.feed.market if runtime is not None else self.feed_name

    def _save_positions(self) -> None:
        if self.position_book is None:
            return
        self._alert_on(self.position_book)
        try:
            self.saver.save_positions(self.position_feed(), self.position_book)
        except StateError as exc:
            self.notify(str(exc), title="Not saved", severity="error", timeout=10)

    def _alert_on(self, book: PositionBook) -> None:
        """Give the local detector the book (stop, target and pnl rules); an attached console's alerts are
        the service's, on the positions of its own machine."""
        runtime = self.runtime
        if runtime is not None and runtime.implements_alerts:
            cast(Any, self).run_worker(runtime.set_positions(book), group="positions", exclusive=True)

    def _remember(self, kind: str) -> None:
        self._undo_order.append(kind)
        del self._undo_order[:-UNDO_ORDER]

    # --- actions ---------------------------------------------------------------------------------------
    def _positions_or_warn(self) -> PositionBook | None:
        if self.position_book is None:
            self.notify("positions appear once the engine has started", severity="warning")
        return self.position_book

    def action_position(self) -> None:
        """Ask for a lot; the selected row's symbol is typed already."""
        if self._positions_or_warn() is None:
            return
        symbol = self.watchlist.selected
        self.prompt.ask("position", "Position:", f"{symbol} " if symbol else "", placeholder=GRAMMAR_HINT,
                        check=self._entry_problem)

    def action_edit_position(self) -> None:
        """Edit the selected symbol's last lot, the prompt pre-filled with it."""
        from engine.positions.entry import entry_text

        book, symbol = self._positions_or_warn(), self.watchlist.selected
        if book is None:
            return
        position = book.get(symbol) if symbol else None
        if position is None or symbol is None:
            self.notify(f"no position in {symbol or 'this row'} to edit ({self.key_name('position')} "
                        "enters one)", severity="warning", timeout=4)
            return
        lots = len(position.lots)
        self.prompt.ask("edit_position", f"Edit {symbol}'s lot {lots} of {lots}:",
                        entry_text(symbol, position.lots[-1]), placeholder=GRAMMAR_HINT,
                        check=lambda text: self._entry_problem(text, symbol))

    def action_delete_position(self) -> None:
        book, symbol = self._positions_or_warn(), self.watchlist.selected
        if book is None:
            return
        if symbol is None or symbol not in book:
            self.notify(f"no position in {symbol or 'this row'} to delete", severity="warning", timeout=4)
            return
        book.delete(symbol)
        self._remember("positions")
        self._save_positions()
        self.notify(f"deleted the position in {symbol} ({self.key_name('undo')} to undo)", timeout=4)
        self.show_positions()

    def action_undo(self) -> None:
        """Undo the last change, of positions or of the watchlists, whichever came last."""
        book = self.position_book
        last = self._undo_order.pop() if self._undo_order else ""
        if book is not None and book.can_undo() and last != "lists":
            undone = book.undo()
            self._save_positions()
            self.show_positions()
            if undone is not None:
                symbol, position = undone
                if position is not None:
                    self.watchlist.select(symbol)
                self.notify(f"undid the last change to {symbol}'s position", timeout=3)
            return
        super().action_undo()  # type: ignore[misc]

    def action_delete(self) -> None:
        before = self.book.current.symbols[:] if self.book is not None else None
        super().action_delete()  # type: ignore[misc]
        if self.book is not None and before is not None and self.book.current.symbols != before:
            self._remember("lists")

    def action_delete_list(self) -> None:
        count = len(self.book.lists) if self.book is not None else 0
        super().action_delete_list()  # type: ignore[misc]
        if self.book is not None and len(self.book.lists) != count:
            self._remember("lists")

    def action_toggle_positions(self) -> None:
        """Show or hide the position columns (by default they show while the list holds a position)."""
        self._positions_shown = not bool(self.watchlist.positions)
        self.show_positions()

    def action_toggle_portfolio(self) -> None:
        lower = self._lower()
        lower.remove_class("show-perf")
        lower.toggle_class("show-portfolio")
        self._portfolio_shown = lower.has_class("show-portfolio")
        if self._portfolio_shown:
            self._fill_portfolio()

    def action_toggle_perf(self) -> None:
        self._lower().remove_class("show-portfolio")
        self._portfolio_shown = False
        super().action_toggle_perf()  # type: ignore[misc]

    def _lower(self) -> Any:
        """The lower pane (for the keys' actions, which run only on the main screen)."""
        return cast(Any, self).query_one("#lower")

    # --- the prompt's answers --------------------------------------------------------------------------
    def _entry_problem(self, text: str, editing: str | None = None) -> str | None:
        from engine.positions.entry import Entry, LevelChange, parse_entry

        entry = parse_entry(text, self._check, dt.date.today())
        if isinstance(entry, LevelChange):
            if editing is not None:
                return "an edit changes the last lot; stop and target are set from the position key's prompt"
            if self.position_book is None or self.position_book.get(entry.symbol) is None:
                return f"{entry.symbol} holds no position: enter a lot first, then its stop or target"
            return None
        if not isinstance(entry, Entry):
            return entry
        if editing is not None and entry.symbol != editing:
            return f"an edit keeps the symbol {editing} ({self.key_name('position')} enters a lot of another)"
        return None

    def on_prompt_bar_answered(self, event: PromptBar.Answered) -> None:
        if event.purpose not in PURPOSES:
            return
        event.prevent_default()  # the watchlists' handler (further down the classes) has nothing to do
        book, value = self.position_book, event.value
        if book is None or value is None:
            return
        from engine.positions.book import PositionError
        from engine.positions.entry import LevelChange, parse_entry

        entry = parse_entry(value, self._check, dt.date.today())
        if isinstance(entry, str):  # the prompt checked it; the feed may have changed since
            self.notify(entry, title="Not changed", severity="error", timeout=6)
            return
        try:
            if isinstance(entry, LevelChange):
                position = entry.apply(book)
                said = f"{entry.symbol}: {levels_text(position)}"
            elif event.purpose == "edit_position":
                position = book.edit_lot(entry.symbol, -1, entry.lot)
                said = f"{entry.symbol}: the last lot is now {entry.lot.quantity:f} @ {entry.lot.price:f}"
            else:
                fill = book.add(entry.symbol, entry.lot)
                position = fill.after
                said = self._fill_text(entry.symbol, fill)
        except PositionError as exc:
            self.notify(str(exc), title="Not changed", severity="error", timeout=6)
            return
        self._remember("positions")
        self._save_positions()
        if self.book is not None and entry.symbol not in self.book.current.symbols:
            self.add_symbol(entry.symbol)  # the row that shows it (subscribed and saved as `a` does)
        self.show_positions()
        self.watchlist.select(entry.symbol)
        self.notify(said if not position.flat else f"{said}; {entry.symbol} is flat", timeout=4)

    @staticmethod
    def _fill_text(symbol: str, fill: Any) -> str:
        lot_q = fill.after.quantity - (fill.before.quantity if fill.before else 0)
        verb = "bought" if lot_q > 0 else "sold"
        said = f"{symbol}: {verb} {abs(lot_q):f}, holding {fill.after.quantity:f}"
        if fill.realized:
            said += f", realized {fill.realized:+,f}"
        return said

    # --- book -> screen --------------------------------------------------------------------------------
    def show_book(self) -> None:
        super().show_book()  # type: ignore[misc]
        self.show_positions()

    def show_positions(self) -> None:
        """The position columns on or off for the active list (the totals follow with the next frame)."""
        book, lists = self.position_book, self.book
        if lists is None:
            return
        holds = book is not None and any(s in book for s in lists.current.symbols)
        shown = holds if self._positions_shown is None else self._positions_shown
        columns = tuple(self.config.ui.position_columns) if shown else ()
        if self.watchlist.positions != columns:
            self.watchlist.positions = columns
        if lists.current is not self._session_list:
            self._session_list = lists.current
            self._session.reset()
        if not holds:
            self._valued = None
            self.watchlist.position_frame = None
            self.totals.totals = None
            self.portfolio.totals = None
        snapshot = self.watchlist.snapshot
        if holds and snapshot is not None:  # now, not at the next frame (a paused display too)
            self.value_positions(snapshot)
            self.watchlist.snapshot = snapshot

    def value_positions(self, snapshot: MarketSnapshot) -> None:
        """Value the active list at ``snapshot``'s prices (once per frame, vectorised) and hand the
        figures to the watchlist, the totals row and the portfolio pane."""
        book, lists = self.position_book, self.book
        if book is None or lists is None or not len(book):
            return

        from engine.positions.valuation import holdings, price_decimals, value

        symbols = tuple(self.watchlist.symbols)
        h = self._holdings
        if h is None or h.version != book.version or h.symbols != symbols:
            h = self._holdings = holdings(book, symbols)
            self._index = {s: i for i, s in enumerate(symbols)}
        if not h.held.any():
            self._valued = None
            if self.totals.totals is not None:
                self.watchlist.position_frame = None
                self.totals.totals = self.portfolio.totals = None
            return
        last, known, previous = snapshot.market(symbols)
        decimals = price_decimals(last, known)
        v = value(h, last, previous, decimals)
        self.watchlist.position_frame = PositionFrame.of(v, decimals.tolist(), self._index)
        totals = v.totals
        self.totals.totals = totals
        if self._session.add(snapshot.at_ns // 1_000_000_000, totals.unrealized + totals.realized):
            self.portfolio.history = tuple(self._session.samples)
        self._valued = v
        if self._portfolio_shown:  # a flag, not a query: frames arrive while help is on top, or closing
            self._fill_portfolio()
            self._want_stored_pnl(h)

    def _want_stored_pnl(self, h: Holdings) -> None:
        """Read the pane's stored line again when the book or the rows changed, or it is REFRESH_S old."""
        from engine.positions.history import REFRESH_S

        runtime, book = self.runtime, self.position_book
        if runtime is None or not runtime.implements_history or book is None:
            return  # an attached console has no bars here: the session line only
        key, now = (h.version, h.symbols), time.monotonic()
        if key == self._stored_key and now - self._stored_at < REFRESH_S:
            return
        if not isinstance(self._stored_key, tuple) or self._stored_key[1] != h.symbols:
            self.portfolio.stored, self.portfolio.stored_span = (), ""  # another list's line: gone at once
        self._stored_key, self._stored_at = key, now
        cast(Any, self).run_worker(self._read_stored_pnl(h, book, runtime), group="stored-pnl",
                                   exclusive=True)

    async def _read_stored_pnl(self, h: Holdings, book: PositionBook, runtime: ConsoleRuntime) -> None:
        """Each held symbol's bars (one symbol's at a time, bounded in all by ``bars_per_symbol``; only the
        times and closes kept), then the series in a thread."""
        from engine.positions.history import bars_per_symbol, entries, pnl_series, span_text

        bars = {}
        limit = bars_per_symbol(int(h.held.sum()))
        for symbol, held in zip(h.symbols, h.held.tolist(), strict=True):
            copied = await runtime.closed_bars(symbol, limit) if held else None
            if copied is not None and len(copied.times):
                bars[symbol] = (copied.times[-limit:], copied.bars[-limit:, 3].copy())  # the ring's too
        result = await asyncio.to_thread(pnl_series, h, bars, entries(book, h.symbols))
        self.portfolio.stored = () if result is None else tuple(result.pnl.tolist())
        self.portfolio.stored_span = "" if result is None else span_text(result.span_ns)

    def _fill_portfolio(self) -> None:
        """The pane's bars from the last frame's valuation (only while the pane shows)."""
        v = self._valued
        if v is None or self.totals.totals is None:
            self.portfolio.rows, self.portfolio.totals = (), None
            return
        self.portfolio.rows = tuple(
            Allocation(v.symbols[i], float(v.value[i]), float(v.weight[i]), int(v.decimals[i]))
            for i in range(len(v.symbols)) if v.held[i])
        self.portfolio.totals = v.totals

