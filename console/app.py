"""The Textual console: a header line, the watchlist, the signal log and a footer of keys.

:func:`build_app` is the one factory the CLI (``run_app``) and the tests use, so tests drive what users
run. The app is the only place that talks to the runtime, and it does so from one named worker
(``feed:runtime``): the worker builds the runtime, pumps the feed, and *posts messages* —
``RuntimeReady``, ``SnapshotReady`` (one per frame, replaceable), ``SignalsDetected`` and
``FeedStatusChanged``. The app's handlers hand their contents down to the widgets as reactive attributes.

The window appears at once: nothing here imports the engine (numpy, numba) at module level. The worker
starts after the first frame is drawn and imports and builds the runtime in a thread; until the first
snapshot the watchlist says "starting engine…" (the first run of a new version also compiles the numba
kernels, which can take a minute; later runs load them from the cache).

Worker errors are handled in one place, :meth:`TickdeckApp.on_worker_state_changed`: the error is shown
as a notification (and, for the runtime, on the header line), and the app stays up.

``b`` (or the palette's "Backtest rules on <SYMBOL>") backtests the configured rules on the selected
symbol's loaded history: the bars are copied on the event loop (see :func:`_copy_history`), replayed in
a thread worker (``backtest``) that posts ``BacktestFinished``, and shown in ``BacktestScreen``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widgets import Footer
from textual.worker import Worker, WorkerState, get_current_worker

from console.messages import FeedStatusChanged, RuntimeReady, SignalsDetected, SnapshotReady
from themes import APP_CSS_PATH, DEFAULT_THEME, THEME_NAMES, next_theme, register_themes
from widgets.backtest_view import BacktestCommands, BacktestFinished, BacktestScreen
from widgets.header import HeaderBar, TickRate
from widgets.help_screen import HelpScreen
from widgets.signal_log import SignalLog
from widgets.watchlist import Watchlist

if TYPE_CHECKING:
    import numpy as np

    from engine.config import Config
    from engine.feeds.base import FeedStatus
    from engine.pipeline import Engine
    from engine.remote import RuntimeLike
    from engine.runtime import Runtime, Update
    from engine.signals.events import Signal
    from engine.snapshot import MarketSnapshot

RUNTIME_GROUP = "feed:runtime"
"""The worker group of the runtime (``exclusive``: starting it again replaces the running one)."""
BACKTEST_GROUP = "backtest"
BACKTEST_MIN_BARS = 30
"""Fewer closed bars than this: a notification instead of a backtest."""


def _build_runtime(config: Config) -> Runtime:
    """Import the engine and build the runtime (in a thread: this loads numpy and numba)."""
    from engine.runtime import Runtime

    return Runtime(config)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    return str(error) or type(error).__name__


def _copy_history(engine: Engine, symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Copies of ``symbol``'s closed bars, (times, o h l c v), oldest first; None for an unknown symbol.

    Taken on the event loop: the runtime keeps its engine thread to itself. That thread is the only
    writer, inside ``ingest``/``close_due``, and writes each bar before moving its ring's head past
    it, so the copy leaves out the position the next bar goes to (it keeps ``depth - 1`` bars) and is
    taken again if the head moved meanwhile: no half-written bar, no bar overwritten while copied.
    """
    slot = engine.symbols.get(symbol)
    if slot is None:
        return None
    history = engine.history
    for _ in range(10):
        head = int(history.head[slot])
        copied = history.tail(slot, history.depth - 1)
        if int(history.head[slot]) == head:
            return copied
    raise RuntimeError(f"the history of {symbol} kept changing while it was copied; try again")


class TickdeckApp(App[int]):
    """The tickdeck console. Build it with :func:`build_app`."""

    COMMANDS = App.COMMANDS | {BacktestCommands}

    CSS_PATH = APP_CSS_PATH
    TITLE = "tickdeck"
    AUTO_FOCUS = None  # the watchlist takes focus when its table first appears
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("space", "toggle_pause", "Pause"),
        Binding("question_mark", "help", "Help"),
        Binding("t", "cycle_theme", "Theme"),
        Binding("b", "backtest", "Backtest"),
    ]

    paused: reactive[bool] = reactive(False, init=False)
    """Whether the display is frozen (the runtime keeps running; the latest frame is held)."""

    def __init__(self, config: Config, runtime: Runtime | None = None) -> None:
        super().__init__()
        self.config = config
        self.runtime = runtime
        self.frames = 0
        """Snapshots received from the runtime (drawn, or held while paused)."""
        self._held: MarketSnapshot | None = None
        self._held_signals: list[Signal] = []
        self._rate = TickRate()
        register_themes(self)
        wanted = config.ui.theme
        self._theme_warning = "" if wanted in self.available_themes else (
            f"unknown theme {wanted!r}; using {DEFAULT_THEME!r} (themes: {', '.join(THEME_NAMES)})"
        )
        self.theme = DEFAULT_THEME if self._theme_warning else wanted
        # Held, not queried: runtime messages keep arriving while another screen (help) is on top
        # and while the app shuts down, when a query of the active screen would find nothing.
        self.header = HeaderBar(id="header")
        self.watchlist = Watchlist(indicators=config.ui.columns, id="watchlist")
        self.signal_log = SignalLog(id="signals")

    # --- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.header
        yield self.watchlist
        yield self.signal_log
        yield Footer()

    def on_mount(self) -> None:
        header = self.header
        header.feed = self.config.feed.name
        header.interval = self.config.engine.interval
        self.watchlist.border_title = "Watchlist"
        self.signal_log.border_title = "Signals"
        if self._theme_warning:
            self.notify(self._theme_warning, severity="warning")
        # Start the engine only once the first frame is on screen.
        self.call_after_refresh(self.run_runtime)

    # --- the runtime worker ------------------------------------------------------------------------
    @work(exclusive=True, group=RUNTIME_GROUP, exit_on_error=False, name="runtime")
    async def run_runtime(self) -> None:
        """Build the runtime (unless one was given) and pump the feed until the app exits."""
        runtime = self.runtime
        if runtime is None:
            runtime = self.runtime = await asyncio.to_thread(_build_runtime, self.config)
        self.post_message(RuntimeReady(runtime.feed.name, runtime.watch))
        await runtime.run(self._post_update, self._post_status)

    def _post_update(self, update: Update) -> None:
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
            if worker.group != RUNTIME_GROUP:  # a backtest failed: the feed is fine
                return
            header = self.header
            header.state, header.reason = "failed", text
            if self.watchlist.snapshot is None:
                self.watchlist.message = f"{worker.name} stopped: {text}"
        elif event.state == WorkerState.SUCCESS and worker.group == RUNTIME_GROUP:
            self.header.state, self.header.reason = "stopped", "the feed ended"

    # --- messages from the worker --------------------------------------------------------------------
    def on_runtime_ready(self, message: RuntimeReady) -> None:
        self.header.feed = message.feed
        self.watchlist.symbols = message.universe

    def on_feed_status_changed(self, message: FeedStatusChanged) -> None:
        status = message.status
        reason = status.reason
        if status.state == "reconnecting" and status.retry_in > 0:
            reason = f"{reason} (retry in {status.retry_in:.0f}s)".strip()
        self.header.state, self.header.reason = status.state, reason

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snapshot = message.snapshot
        self.frames += 1
        header = self.header
        header.clock_ns = snapshot.at_ns
        header.tick_rate = self._rate.update(snapshot.at_ns, snapshot.ticks)
        if message.health is not None:
            header.health = message.health
        if self.paused:
            self._held = snapshot
        else:
            self.watchlist.snapshot = snapshot

    def on_signals_detected(self, message: SignalsDetected) -> None:
        if self.paused:
            self._held_signals.extend(message.signals)
        else:
            self._show_signals(message.signals)

    def _show_signals(self, signals: tuple[Signal, ...] | list[Signal]) -> None:
        watchlist = self.watchlist
        watchlist.signals = {**watchlist.signals, **{s.symbol: s for s in signals}}
        self.signal_log.add(signals)

    # --- actions -----------------------------------------------------------------------------------
    def watch_paused(self, paused: bool) -> None:
        self.header.paused = paused
        if paused:
            return
        if self._held_signals:
            held, self._held_signals = self._held_signals, []
            self._show_signals(held)
        if self._held is not None:
            self.watchlist.snapshot, self._held = self._held, None

    def action_toggle_pause(self) -> None:
        """Freeze or unfreeze the display; the runtime keeps running either way."""
        self.paused = not self.paused

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
            self.push_screen(HelpScreen([*self.BINDINGS, palette]))

    def action_cycle_theme(self) -> None:
        self.theme = next_theme(self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

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
        table = self.watchlist.table
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def backtest_symbol(self, symbol: str) -> None:
        """Copy ``symbol``'s loaded history and backtest it in a thread (too little: a notification)."""
        engine: Engine | None = getattr(self.runtime, "engine", None)  # None for an attached console
        if engine is None:
            why = "the engine is still starting" if self.runtime is None else "no local engine (attached)"
            self.notify(f"cannot backtest {symbol}: {why}", title="No history", severity="warning")
            return
        copied = _copy_history(engine, symbol)
        loaded = 0 if copied is None else len(copied[0])
        if copied is None or loaded < BACKTEST_MIN_BARS:
            self.notify(f"{symbol} has {loaded} closed bars loaded; a backtest needs at least "
                        f"{BACKTEST_MIN_BARS}", title="Not enough history", severity="warning")
            return
        self.notify(f"{symbol}: {loaded:,} bars", title="Backtesting", timeout=3)
        self.run_backtest(symbol, *copied, engine.interval_ns)

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


def build_app(config: Config, runtime: Runtime | None = None) -> TickdeckApp:
    """The console for ``config``: the one factory the CLI and the tests share.

    ``runtime`` is built from ``config`` in the app's worker when not given (tests pass one to control
    the feed).
    """
    return TickdeckApp(config, runtime)


def run_app(config: Config, runtime: RuntimeLike | None = None) -> int:
    """Run the console in the terminal until the user quits; the exit status.

    ``runtime``: one already built (``tickdeck attach`` passes a ``RemoteRuntime``); by default the app's
    worker builds a local one from ``config``.
    """
    app = build_app(config, cast("Runtime | None", runtime))  # the app uses only what RuntimeLike has
    app.run()
    return app.return_code or 0
