"""The backtest of one symbol's loaded history, in the console: a command for the palette, the message
the backtest worker posts, and a modal screen with the figures of ``tickdeck backtest``'s table.

What the table shows is decided by pure functions, tested on their own: ``widgets.backtest_table``
builds the table ``tickdeck backtest`` prints, and :func:`report_table` titles it for this window.
:class:`BacktestScreen` only lays it out; ``escape`` closes it.

The command provider does not know the app's class: it asks any app that is a :class:`BacktestHost`
(which symbol is selected, and how to backtest one). Engine types are imported for type checking only,
so importing this module stays light (no numpy); the engine's formatting helpers are imported when a
report is drawn, by which time the engine is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import ScrollableContainer, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from widgets.backtest_table import backtest_table, span

if TYPE_CHECKING:
    from engine.backtest import Report


# --- drawing ---------------------------------------------------------------------------------------

def report_table(report: Report, source: str) -> Table:
    """The figures of ``report`` per rule, direction and horizon, titled with ``source`` (the symbol)."""
    from engine.backtest import MAE_BARS

    return backtest_table(
        report, wrap_figures=True, title=f"{source}: {span(report)}", caption_justify="left",
        caption=f"returns in %, signed by direction; 'rnd': as many random entries (seed {report.seed}); "
                f"n: signals with that many bars ahead; MAE: mean worst move against the signal within "
                f"{MAE_BARS} bars; {len(report.signals):,} signals in {report.total_s:.2f} s",
    )


# --- the message and the screen --------------------------------------------------------------------

@dataclass
class BacktestFinished(Message):
    """The backtest worker's result: the report of ``symbol``'s loaded history."""

    symbol: str
    report: Report
    left_out: int = 0
    """Loaded bars left out of the backtest because their time repeats (or precedes) an earlier one's."""


COLUMN_STEP = 8
"""Cells ``←``/``→`` scroll the table by: about one column of figures (Textual's default is one cell)."""


class TableScroll(ScrollableContainer):
    """The table's viewport: ``←``/``→`` move about a column at a time, at once (no animation), so a
    quick run of presses adds up instead of restarting a one-cell animation."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "columns(-1)", "Scroll left", show=False),
        Binding("right", "columns(1)", "Scroll right", show=False),
    ]

    def action_columns(self, step: int) -> None:
        self.scroll_to(x=self.scroll_x + step * COLUMN_STEP, animate=False, immediate=True)


class BacktestScreen(ModalScreen[None]):
    """The backtest table of one symbol; ``escape`` closes it."""

    DEFAULT_CSS = """
    BacktestScreen {
        align: center middle;
        background: $background 60%;
    }
    BacktestScreen > Vertical {
        width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $primary;
        border-title-color: $text-primary;
        border-subtitle-color: $text-muted;
        background: $surface;
    }
    BacktestScreen ScrollableContainer {
        width: 100%;
        height: auto;
        max-height: 100%;
    }
    BacktestScreen #backtest-table {
        width: auto;
    }
    """

    AUTO_FOCUS = "#backtest-scroll"
    """The table has the keyboard from the start: ↑ ↓ ← → (and pgup pgdn home end) scroll it at once,
    which matters at 80 columns, where the last columns are off screen (the app focuses nothing by
    itself: ``App.AUTO_FOCUS`` is None)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close backtest")]

    def __init__(self, symbol: str, report: Report, left_out: int = 0) -> None:
        super().__init__()
        self.symbol = symbol
        self.report = report
        self.left_out = left_out

    def compose(self) -> ComposeResult:
        box_ = Vertical()
        box_.border_title = f"Backtest: {self.symbol}"
        left_out = f"{self.left_out:,} bar(s) left out (time not after an earlier one's); "
        box_.border_subtitle = f"{left_out if self.left_out else ''}↑ ↓ ← → scroll · esc to close"
        with box_, TableScroll(id="backtest-scroll"):
            yield Static(report_table(self.report, self.symbol), id="backtest-table")
        yield Footer()  # this window's keys, not those of the screen below (which do nothing here)

    def action_close(self) -> None:
        self.dismiss()


# --- the command -----------------------------------------------------------------------------------

@runtime_checkable
class BacktestHost(Protocol):
    """What the command needs from the app."""

    def selected_symbol(self) -> str | None:
        """The watchlist's selected symbol, if any."""

    def backtest_symbol(self, symbol: str) -> None:
        """Start a backtest of ``symbol``'s loaded history."""


def command_text(symbol: str) -> str:
    return f"Backtest rules on {symbol}"


HELP = "Replay the symbol's loaded bars through the configured rules; figures against random entries"


class BacktestCommands(Provider):
    """``Backtest rules on <SYMBOL>``, for the symbol selected in the watchlist."""

    def _command(self) -> tuple[str, functools.partial[None]] | None:
        host = self.app
        if not isinstance(host, BacktestHost) or (symbol := host.selected_symbol()) is None:
            return None
        return command_text(symbol), functools.partial(host.backtest_symbol, symbol)

    async def discover(self) -> Hits:
        if (command := self._command()) is not None:
            text, run = command
            yield DiscoveryHit(text, run, help=HELP)

    async def search(self, query: str) -> Hits:
        if (command := self._command()) is None:
            return
        text, run = command
        matcher = self.matcher(query)
        if (score := matcher.match(text)) > 0:
            yield Hit(score, matcher.highlight(text), run, text=text, help=HELP)
