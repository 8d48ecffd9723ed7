"""The Textual console: header, watchlist tabs, the watchlist, the signal log and performance panel, keys.

:func:`build_app` is the one factory the CLI (``run_app``) and the tests use, so tests drive what users
run. The app is the only place that talks to the runtime, and it does so from one named worker
(``feed:runtime``): the worker builds the runtime, pumps the feed, and *posts messages* —
``RuntimeReady``, ``SnapshotReady`` (one per frame, replaceable), ``SignalsDetected``,
``FeedStatusChanged`` and ``SymbolsAdded`` (a fleet's symbol set grew). The app's handlers hand their
contents down to the widgets as reactive attributes.

The window appears at once: nothing here imports the engine (numpy, numba) at module level. The worker
starts after the first frame is drawn and imports and builds the runtime in a thread; until the first
snapshot the watchlist says "starting engine…" (the first run of a new version also compiles the numba
kernels, which can take a minute, and the message shows its progress: :mod:`console.startup`; later
runs load them from the cache).

Worker errors are handled in one place, :meth:`TickdeckApp.on_worker_state_changed`: the error is shown
as a notification (and, for the runtime, on the header line), and the app stays up.

Watchlist editing (``a d u s / n r 1-9 shift+up/down``) lives in :mod:`console.editing`; the lists are
loaded from the user's state directory when the runtime is ready (the feed decides the default symbols)
and saved on every edit, by a writer thread (:class:`console.state_saver.StateSaver`): the event loop
never waits for the disk, and quitting waits (``QUIT_WAIT_S`` at most) for the last save. Every key is
a binding with an id, so ``[keys]`` in config.toml remaps it (Textual's keymap), the help screen lists
the keys in force, and the command palette runs every action. While the display is paused (space), the
signals that arrive are held only as far as unpausing will show them (:mod:`console.held`).

``b`` (or the palette's "Backtest rules on <SYMBOL>") backtests the configured rules on the selected
symbol's loaded history: the bars are copied on the engine's thread (``runtime.closed_bars``), replayed in
a thread worker (``backtest``) that posts ``BacktestFinished``, and shown in ``BacktestScreen``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState, get_current_worker

from console import heap
from console.book import Book
from console.editing import WatchlistEditing
from console.held import HeldSignals, latest_per_symbol
from console.messages import FeedStatusChanged, RuntimeReady, SignalsDetected, SnapshotReady, SymbolsAdded
from console.perf import PerfMonitor
from console.positions_ui import POSITION_ACTIONS, PositionEditing, position_bindings
from console.state import StateStore
from console.state_saver import QUIT_WAIT_S, StateSaver
from themes import APP_CSS_PATH, DEFAULT_THEME, THEME_NAMES, next_theme, register_themes
from widgets.backtest_view import BacktestCommands, BacktestFinished, BacktestScreen
from widgets.header import HeaderBar, TickRate
from widgets.help_screen import HelpScreen, key_label
from widgets.list_tabs import ListTabs
from widgets.perf_panel import PerfPanel
from widgets.prompt import PromptBar
from widgets.signal_log import SignalLog
from widgets.watchlist import Watchlist
from widgets.watchlist_layout import sort_keys

if TYPE_CHECKING:
    import numpy as np

    from engine.chart_data import ChartData
    from engine.config import Config
    from engine.console_runtime import ConsoleRuntime
    from engine.feeds.base import FeedStatus
    from engine.signals.events import Signal
    from engine.snapshot import MarketSnapshot, Update

RUNTIME_GROUP = "feed:runtime"
"""The worker group of the runtime (``exclusive``: starting it again replaces the running one)."""
BACKTEST_GROUP = "backtest"
BACKTEST_MIN_BARS = 30
"""Fewer closed bars than this: a notification instead of a backtest."""
DEFAULT_ROWS = 20
"""Symbols of a simulated or replayed market in the first watchlist (``a`` adds the others)."""
WAITING = "waiting for the publisher's first snapshot…"
"""An attached console's watchlist message until a snapshot comes (a fleet with no engine yet, say)."""
NARROW = 120
"""Below this width the lower pane shows the signal log or the performance panel, not both."""
MAIN_SCREEN_ACTIONS = frozenset({
    "add", "delete", "undo", "move_up", "move_down", "sort", "filter", "new_list", "rename_list", "open",
    "clear_filter", "toggle_perf", "backtest", "switch_list",
    "delete_list", "move_list_left", "move_list_right",
}) | POSITION_ACTIONS
PROMPT_HIDES = frozenset({"help", "quit", "cycle_theme", "toggle_pause"})
"""The main screen's other keys, also off while the prompt is typed in (``ctrl+q`` still quits)."""


class StateNotSaved(Message):
    """The state writer thread could not save (posted from that thread); the text names file and reason."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    return str(error) or type(error).__name__


def _bindings() -> list[BindingType]:
    """Every key of the main screen; ids are the ``[keys]`` names in config.toml (the keymap)."""
    b = Binding
    return [
        b("a", "add", "Add", id="add"),
        b("d", "delete", "Delete", id="delete"),
        b("u", "undo", "Undo (a delete, a position change)", id="undo", show=False),
        b("shift+up", "move_up", "Move row up", id="move_up", show=False),
        b("shift+down", "move_down", "Move row down", id="move_down", show=False),
        b("s", "sort", "Sort", id="sort"),
        b("slash", "filter", "Filter", id="filter"),
        b("n", "new_list", "New list", id="new_list", show=False),
        b("r", "rename_list", "Rename list", id="rename_list", show=False),
        b("D", "delete_list", "Delete list", id="delete_list", show=False),
        b("less_than_sign", "move_list_left", "Move list left", id="move_list_left", show=False),
        b("greater_than_sign", "move_list_right", "Move list right", id="move_list_right", show=False),
        b("enter", "open", "Detail", id="open"),
        b("escape", "clear_filter", "Clear filter", id="back", show=False),
        b("t", "cycle_theme", "Next theme", id="theme", show=False),
        b("space", "toggle_pause", "Pause", id="pause", show=False),
        b("p", "toggle_perf", "Perf", id="perf", show=False),
        b("b", "backtest", "Backtest", id="backtest", show=False),
        *position_bindings(),
        b("question_mark", "help", "Help", id="help"),
        b("q", "quit", "Quit", id="quit"),
        *(b(str(n), f"switch_list({n})", f"Watchlist {n}", id=f"list_{n}", show=False) for n in range(1, 10)),
    ]


class TickdeckApp(PositionEditing, WatchlistEditing, App[int]):
    """The tickdeck console. Build it with :func:`build_app`."""

    COMMANDS = App.COMMANDS | {BacktestCommands}

    CSS_PATH = APP_CSS_PATH
    TITLE = "tickdeck"
    AUTO_FOCUS = None  # the watchlist takes focus when its rows first appear
    BINDINGS: ClassVar[list[BindingType]] = _bindings()

    paused: reactive[bool] = reactive(False, init=False)
    """Whether the display is frozen (the runtime keeps running; the latest frame is held)."""

    def __init__(self, config: Config, runtime: ConsoleRuntime | None = None, store: StateStore | None = None,
                 saved_theme: bool = True) -> None:
        super().__init__()
        self.config = config
        self.runtime = runtime
        self.store = store or StateStore.default()
        self.saver = StateSaver(self.store, on_error=lambda text: self.post_message(StateNotSaved(text)))
        self.unsaved = ""
        """After quitting: why the last edits may not have been saved ('' when they were)."""
        self.book: Book | None = None
        self.offered: set[str] = set()
        self._watched: frozenset[str] | None = None  # every symbol in any list; None until the book loads
        self.feed_name = config.feed.name
        self.frames = 0
        """Snapshots received from the runtime (drawn, or held while paused)."""
        self._held: MarketSnapshot | None = None
        self._held_signals = HeldSignals()
        self._rate = TickRate()
        register_themes(self)
        wanted = config.ui.theme
        if saved_theme:
            wanted = self.store.load_theme() or wanted
        self._theme_warning = "" if wanted in self.available_themes else (
            f"unknown theme {wanted!r}; using {DEFAULT_THEME!r} (themes: {', '.join(THEME_NAMES)})"
        )
        self.theme = DEFAULT_THEME if self._theme_warning else wanted
        # Only the keys the user changed: Textual re-applies the keymap to the bindings on every key
        # press, binding by binding, so the defaults passed again cost time and change nothing.
        declared = {b.id: b.key for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        self.set_keymap({name: keys for name, keys in dataclasses.asdict(config.keys).items()
                         if declared.get(name) != keys})
        # Held, not queried: runtime messages keep arriving while another screen (help) is on top
        # and while the app shuts down, when a query of the active screen would find nothing.
        self.header = HeaderBar(id="header")
        self.tabs = ListTabs(id="tabs")
        self.watchlist = Watchlist(indicators=config.ui.columns, id="watchlist")
        self.signal_log = SignalLog(id="signals")
        self.perf = PerfMonitor(rate=1.0)  # one sample a second keeps the panel's share of the output small
        self.perf_panel = PerfPanel(id="perf-panel")
        self.prompt = PromptBar(id="prompt")
        self.init_positions()

    # --- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.header
        yield self.tabs
        yield self.watchlist
        yield self.totals
        with Horizontal(id="lower"):
            yield self.signal_log
            with VerticalScroll(id="perf"):
                yield self.perf_panel
            yield self.portfolio
        yield self.prompt
        yield Footer()

    def on_mount(self) -> None:
        header = self.header
        header.feed = self.config.feed.name
        header.interval = self.config.engine.interval
        self.watchlist.border_title = "Watchlist"
        self.signal_log.border_title = "Signals"
        self.portfolio.border_title = "Portfolio"
        self.query_one("#perf").border_title = "Performance"
        self.perf.start(self)
        self.perf.add_cache("rows", self.watchlist.cache_stats)
        if self._theme_warning:
            self.notify(self._theme_warning, severity="warning")
        # Start the engine only once the first frame is on screen.
        self.call_after_refresh(self.run_runtime)

    async def on_unmount(self) -> None:
        self.perf.stop()
        if self.runtime is not None:
            self.runtime.close_history()
        if not self.saver.idle and not await asyncio.to_thread(self.saver.wait, QUIT_WAIT_S):
            self.unsaved = (f"your last watchlist edits may not have been saved to {self.store.path}: "
                            f"the write had not finished after {QUIT_WAIT_S:g} s")

    def on_state_not_saved(self, message: StateNotSaved) -> None:
        self.notify(message.text, title="Not saved", severity="error", timeout=10)

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#lower").set_class(event.size.width < NARROW, "narrow")

    # --- the runtime worker ------------------------------------------------------------------------
    @work(exclusive=True, group=RUNTIME_GROUP, exit_on_error=False, name="runtime")
    async def run_runtime(self) -> None:
        """Build the runtime (unless one was given) and pump the feed until the app exits."""
        runtime = self.runtime
        if runtime is None:  # built in a thread; a first run's compile shows in the watchlist's message
            from console.startup import start_runtime

            runtime = self.runtime = await start_runtime(self, self.watchlist, self.config)
        self.post_message(RuntimeReady(runtime.feed.name, runtime.watch))
        await runtime.run(self._post_update, self._post_status)

    def _post_update(self, update: Update) -> None:
        if update.new_symbols:  # before the snapshot that first carries their quotes
            self.post_message(SymbolsAdded(update.new_symbols))
        if update.signals:
            self.post_message(SignalsDetected(update.signals))
        if update.snapshot is not None:
            self.post_message(SnapshotReady(update.snapshot, update.health))

    def _post_status(self, status: FeedStatus) -> None:
        self.post_message(FeedStatusChanged(status))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker outcomes are handled: errors are shown, never fatal."""
        worker = event.worker
        if event.state == WorkerState.ERROR:
            text = _describe(worker.error)
            self.log.error(f"worker {worker.name!r} failed", worker.error)
            self.notify(text, title=f"{worker.name} stopped", severity="error", timeout=15)
            if worker.group != RUNTIME_GROUP:  # a backtest or a subscription failed: the feed is fine
                return
            header = self.header
            header.state, header.reason = "failed", text
            if self.watchlist.snapshot is None:
                self.watchlist.message = f"{worker.name} stopped: {text}"
        elif event.state == WorkerState.SUCCESS and worker.group == RUNTIME_GROUP:
            self.header.state, self.header.reason = "stopped", "the feed ended"

    # --- messages from the worker --------------------------------------------------------------------
    async def on_runtime_ready(self, message: RuntimeReady) -> None:
        # numba, LLVM and the engine are loaded now: hundreds of thousands of long-lived objects that
        # every full collection would walk again (~100 ms at 1,000 symbols, a visible stutter every
        # couple of seconds). Frozen, they are left out of collections for good.
        gc.freeze()
        self.header.feed = self.feed_name = message.feed
        runtime = self.runtime
        closed = runtime is not None and runtime.feed.closed_universe
        defaults = message.universe[:DEFAULT_ROWS] if closed else message.universe
        # Read in a thread, as saves are written (messages wait for this handler, so none overtakes it).
        book, warning = await asyncio.to_thread(self.store.load, self.feed_name, defaults,
                                                sort_keys(self.watchlist.indicators))
        self.book = book
        self.offered = set(message.universe) | book.symbols()  # a fleet's later symbols are news
        if warning:
            self.notify(warning, title="Watchlists reset", severity="warning", timeout=20)
        self.show_book()
        if runtime is not None and not runtime.implements_history and self.watchlist.snapshot is None:
            self.watchlist.message = WAITING  # attached: nothing starts here, a publisher is awaited
        extra = sorted(book.symbols() - set(message.universe))
        if extra and runtime is not None and runtime.implements_subscribe:  # saved symbols of a live feed
            self.run_worker(runtime.add_symbols(extra), group="subscribe", exit_on_error=False)

    def on_feed_status_changed(self, message: FeedStatusChanged) -> None:
        status = message.status
        header = self.header
        if status.symbols and header.state not in ("live", "stale"):
            return  # a note on some symbols (stale quotes, history) never hides the whole feed's trouble
        reconnecting = status.state == "reconnecting"
        header.retry_at_ns = status.at_ns + int(status.retry_in * 1e9) if reconnecting else 0
        header.state, header.reason = status.state, status.reason

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snapshot = message.snapshot
        self.frames += 1
        perf = self.perf
        perf.frame_begin()
        sample = perf.sample(message.health)
        if sample is not self.perf_panel.sample:
            self.perf_panel.history = perf.history
            self.perf_panel.sample = sample
        header = self.header
        header.clock_ns = snapshot.at_ns
        header.tick_rate = self._rate.update(snapshot.at_ns, snapshot.ticks)
        if message.health is not None:
            header.health = message.health
        if self.paused:
            self._held = snapshot
        else:
            self.value_positions(snapshot)
            self.watchlist.snapshot = snapshot
        if heap.due(self.frames):
            asyncio.get_running_loop().run_in_executor(None, heap.give_back)

    def on_signals_detected(self, message: SignalsDetected) -> None:
        if self.paused:
            self._held_signals.add(message.signals, self._watched)
        else:
            self._show_signals(message.signals, latest_per_symbol(message.signals, self._watched))

    def _show_signals(self, signals: Iterable[Signal], latest: dict[str, Signal]) -> None:
        if latest:  # the watchlist's column: the latest per symbol it lists (all before the book loads)
            self.watchlist.signals = {**self.watchlist.signals, **latest}
        self.signal_log.add(signals)

    def show_book(self) -> None:
        """As the editing mixin's, and forget the last signal of symbols no list holds any more: the
        per-symbol table stays as large as the lists (a live feed's symbols come and go)."""
        super().show_book()
        if self.book is None:
            return
        watched = self._watched = frozenset(self.book.symbols())
        marks = self.watchlist.signals
        if any(symbol not in watched for symbol in marks):
            self.watchlist.signals = {k: v for k, v in marks.items() if k in watched}
        self._held_signals.forget(watched)

    # --- actions -----------------------------------------------------------------------------------
    def watch_paused(self, paused: bool) -> None:
        self.header.paused = paused
        if paused:
            return
        if self._held_signals:
            self._show_signals(*self._held_signals.take())
        if self._held is not None:
            self.value_positions(self._held)
            self.watchlist.snapshot, self._held = self._held, None

    def action_toggle_pause(self) -> None:
        """Freeze or unfreeze the display; the runtime keeps running either way."""
        self.paused = not self.paused

    def key_bindings(self) -> list[Binding]:
        """The main screen's bindings with the keys in force (after ``[keys]``), for help and palette."""
        keymap = self._keymap
        out = []
        for item in self.BINDINGS:
            assert isinstance(item, Binding)
            out.append(dataclasses.replace(item, key=keymap.get(item.id or "", item.key)))
        return out

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
            extra = [Binding("up,down,pageup,pagedown", "", "Move the cursor"),
                     Binding("tab", "", "Watchlist / signal log"),
                     Binding("enter", "", "On a signal: go to its symbol"),
                     Binding("left_square_bracket,right_square_bracket,f", "", "Detail: timeframe"),
                     Binding("i", "", "Detail, narrow screens: chart / values")]
            keys = self.key_bindings()
            lists = [b for b in keys if b.action.startswith("switch_list")]
            if [b.key for b in lists] == [str(n) for n in range(1, 10)]:  # not remapped: one line for all
                keys = [b for b in keys if b not in lists] + [Binding("1…9", "", "Watchlist 1 to 9")]
            self.push_screen(HelpScreen([*keys, *extra, palette]))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every key's action in the command palette, under the name the help screen gives it, with its
        key as the help screen shows it; "Help" opens tickdeck's help (Textual's "Keys" panel lists the
        focused widget's own keys, not the app's, so it is left out); lists by name, only those that
        exist."""
        for command in super().get_system_commands(screen):
            if command.title != "Keys":
                yield command
        main = screen is self.screen_stack[0]
        names = [wl.name for wl in self.book.lists] if self.book is not None else []
        for binding in self.key_bindings():
            title = binding.description
            if binding.action == "help":
                if isinstance(screen, HelpScreen):
                    continue  # open already
            elif not main or binding.action in ("quit", "backtest"):
                continue  # Textual's palette has Quit; "Backtest rules on X" names the symbol
            elif (binding.id or "").startswith("list_"):
                number = int((binding.id or "")[len("list_"):])
                if number > len(names):
                    continue
                title = f"Watchlist: {names[number - 1]}"
            yield SystemCommand(title, f"key: {key_label(binding.key)}",
                                lambda action=binding.action: self.call_later(self.run_action, action))

    def action_cycle_theme(self) -> None:
        self.theme = next_theme(self.theme)  # watch_theme remembers it
        self.notify(f"theme: {self.theme}", timeout=2)

    def watch_theme(self, name: str) -> None:
        """Remember a theme chosen in the running console, by ``t`` or the palette's theme picker."""
        if not self.is_running:
            return  # the theme the app starts in (config, --theme or remembered) is no new choice
        try:
            self.saver.save_theme(name)  # written by the saver's thread; a failure is a notification
        except Exception as exc:  # a theme not remembered is worth a word, not a crash
            self.notify(str(exc), severity="warning")

    def action_open(self) -> None:
        """Open the detail pane of the selected symbol."""
        symbol = self.watchlist.selected
        if symbol is not None:
            self.open_detail(symbol)

    def action_clear_filter(self) -> None:
        """Escape on the main screen: drop the filter of the focused pane (the watchlist's rows or the
        signal log), or, when that pane has none, the other pane's, so a kept filter never needs Tab."""
        log_first = isinstance(self.focused, SignalLog)
        for pane in (self.signal_log, self.watchlist) if log_first else (self.watchlist, self.signal_log):
            if pane.filter:
                pane.filter = ""
                self._note()
                return

    def action_toggle_perf(self) -> None:
        self.query_one("#lower").toggle_class("show-perf")

    def on_signal_log_chosen(self, message: SignalLog.Chosen) -> None:
        """Enter on a signal: show its symbol in a watchlist that has it (the active one first)."""
        symbol = message.signal.symbol
        book = self.book
        if book is None:
            return
        if symbol not in book.current.symbols:
            index = next((i for i, wl in enumerate(book.lists) if symbol in wl.symbols), None)
            if index is None:
                self.notify(f"{symbol} is in no watchlist (a adds it)", severity="warning", timeout=4)
                return
            book.switch(index)
            self.show_book()
        self.watchlist.filter = ""
        self.watchlist.select(symbol)
        self.watchlist.rows.focus()

    def on_list_tabs_clicked(self, message: ListTabs.Clicked) -> None:
        self.action_switch_list(message.index + 1)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Watchlist keys act only on the main screen (not behind the detail pane or the help), and
        none of the main screen's keys while the prompt has the keyboard (its footer shows its own)."""
        if self.prompt.input.has_focus and (action in MAIN_SCREEN_ACTIONS or action in PROMPT_HIDES):
            return False
        return not (action in MAIN_SCREEN_ACTIONS and self.screen is not self.screen_stack[0])

    def open_detail(self, symbol: str) -> None:
        """The detail pane of ``symbol``: chart and every indicator value, read on the engine's thread."""
        from engine.config import parse_interval
        from widgets.detail import DetailScreen, timeframe_choices

        runtime = self.runtime  # bars the chart can have at the interval; an attached console has none
        reach = runtime.chart_reach() if runtime is not None and runtime.implements_history else 0
        timeframes = timeframe_choices(parse_interval(self.config.engine.interval), max(reach, 1))
        quote = self.watchlist.snapshot.by_symbol().get(symbol) if self.watchlist.snapshot else None
        self.push_screen(DetailScreen(symbol, self._fetch_chart, timeframes,
                                      decimals=quote.decimals if quote is not None else None))

    async def _fetch_chart(self, symbol: str, factor: int) -> ChartData | None:
        runtime = self.runtime
        if runtime is None or not runtime.implements_history:  # an attached console has no bars here
            return None
        from engine.chart_data import CHART_BARS

        return await runtime.chart(symbol, factor, CHART_BARS)

    # --- backtest ----------------------------------------------------------------------------------
    def action_backtest(self) -> None:
        """Backtest the configured rules on the selected symbol's loaded history."""
        symbol = self.selected_symbol()
        if symbol is None:
            self.notify("no symbol to backtest yet", severity="warning")
        else:
            self.backtest_symbol(symbol)

    def selected_symbol(self) -> str | None:
        """The symbol of the watchlist's cursor row; None until the rows appear."""
        return self.watchlist.selected

    def backtest_symbol(self, symbol: str) -> None:
        """Copy ``symbol``'s loaded history and backtest it in a thread (too little: a notification)."""
        runtime = self.runtime
        if runtime is None or not runtime.implements_history:
            why = "the engine is still starting" if runtime is None else "no local engine (attached)"
            self.notify(f"cannot backtest {symbol}: {why}", title="No history", severity="warning")
            return
        self.run_worker(self._backtest_loaded(runtime, symbol), group=BACKTEST_GROUP,
                        exclusive=True, exit_on_error=False, name="backtest")

    async def _backtest_loaded(self, runtime: ConsoleRuntime, symbol: str) -> None:
        copied = await runtime.closed_bars(symbol)  # on the engine's thread: consistent
        loaded = 0 if copied is None else len(copied.times)
        if copied is None or loaded < BACKTEST_MIN_BARS:
            self.notify(f"{symbol} has {loaded} closed bars loaded; a backtest needs at least "
                        f"{BACKTEST_MIN_BARS}", title="Not enough history", severity="warning")
            return
        self.notify(f"{symbol}: {loaded:,} bars", title="Backtesting", timeout=3)
        self.run_backtest(symbol, copied.times, copied.bars, copied.interval_ns)

    @work(thread=True, exclusive=True, group=BACKTEST_GROUP, exit_on_error=False, name="backtest")
    def run_backtest(self, symbol: str, t: np.ndarray, bars: np.ndarray, interval_ns: int) -> None:
        """Replay the copied bars through the configured rules; the thread only posts the report."""
        import numpy as np

        from engine.backtest import backtest_bars, select_rules

        # A tick arriving after ``close_due`` closed its bar opens a second bar with that time (or an
        # older one): such bars, not after every earlier bar, are left out (and counted).
        before = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(t)[:-1]])
        keep = t > before
        report = backtest_bars(symbol, t[keep], bars[keep], select_rules(self.config.rules), interval_ns)
        if not get_current_worker().is_cancelled:  # else a newer backtest replaced this one
            self.post_message(BacktestFinished(symbol, report, int(len(t) - keep.sum())))

    def on_backtest_finished(self, message: BacktestFinished) -> None:
        if isinstance(self.screen, BacktestScreen):
            self.pop_screen()
        self.push_screen(BacktestScreen(message.symbol, message.report, message.left_out))


def build_app(config: Config, runtime: ConsoleRuntime | None = None, store: StateStore | None = None,
              saved_theme: bool = True) -> TickdeckApp:
    """The console for ``config``: the one factory the CLI and the tests share.

    ``runtime`` is built from ``config`` in the app's worker when not given (tests pass one to control
    the feed). ``store``: where watchlists are kept (default: the user's state directory, or
    ``$TICKDECK_STATE_DIR``). ``saved_theme``: start in the theme last chosen with ``t`` (the CLI passes
    False when ``--theme`` names one).
    """
    return TickdeckApp(config, runtime, store, saved_theme)


def run_app(config: Config, runtime: ConsoleRuntime | None = None, saved_theme: bool = True) -> int:
    """Run the console in the terminal until the user quits; the exit status.

    ``runtime``: one already built (``tickdeck attach`` passes a ``RemoteRuntime``); by default the app's
    worker builds a local one from ``config``.
    """
    app = build_app(config, runtime, saved_theme=saved_theme)
    app.run()
    if app.unsaved:
        print(f"tickdeck: {app.unsaved}", file=sys.stderr)
    return app.return_code or 0
