"""The signal log: every signal the rules fired, newest first, coloured by direction.

The widget's state is one reactive, ``signals`` (newest first, bounded); :func:`render_signals` draws it
as Textual ``Content`` whose colours are theme variables (``$text-success`` for up, ``$text-error`` for
down), so a theme switch recolours the log without redrawing it by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from widgets import formatting as fmt

if TYPE_CHECKING:
    from engine.signals.events import Signal

LIMIT = 500
"""Signals kept in the log; older ones fall off the end."""
EMPTY = "no signals yet"
ARROWS = {"up": "▲", "down": "▼"}
STYLES = {"up": "$text-success", "down": "$text-error"}
MUTED = "$text-muted"


def newest_first(existing: Sequence[Signal], new: Iterable[Signal], limit: int = LIMIT) -> tuple[Signal, ...]:
    """``new`` merged into ``existing``, newest bar first (a quiet symbol's bar can close after a
    busier symbol's later one, so detection order is not market order). The sort is stable: signals
    of one bar stay in detection order, newest first."""
    merged = (*reversed(tuple(new)), *existing)
    return tuple(sorted(merged, key=lambda s: s.bar_time, reverse=True))[:limit]


def _operands(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {fmt.indicator(value)}" for name, value in values.items())


def signal_line(signal: Signal, symbol_width: int = 7, rule_width: int = 14) -> Content:
    """One signal: its bar's time, arrow, symbol, rule, price, and the operands that crossed."""
    style = STYLES[signal.direction]
    return Content.assemble(
        (fmt.clock(signal.bar_time), MUTED),  # market time of the bar that fired it
        " ",
        (f"{ARROWS[signal.direction]} {signal.symbol:<{symbol_width}}", f"{style} bold"),
        " ",
        (f"{fmt.fit(signal.rule, rule_width):<{rule_width}}", style),
        " ",
        f"{fmt.price(signal.price):>10}",
        "  ",
        (_operands(signal.values), MUTED),
    )


def render_signals(signals: Sequence[Signal]) -> Content:
    """The whole log, one line per signal in the order given (newest first), or a muted hint."""
    if not signals:
        return Content.styled(EMPTY, MUTED)
    symbol_width = max(6, max(len(s.symbol) for s in signals))
    return Content("\n").join(signal_line(s, symbol_width) for s in signals)


class SignalLog(VerticalScroll):
    """A scrolling list of signals, newest at the top."""

    DEFAULT_CSS = """
    SignalLog {
        height: auto;
        scrollbar-size-vertical: 1;
    }
    SignalLog > #signal-lines {
        width: 1fr;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    signals: reactive[tuple[Signal, ...]] = reactive(())
    """The signals shown, newest first (at most :data:`LIMIT`)."""

    def compose(self) -> ComposeResult:
        # Held, not queried: signals may still arrive while the app tears the children down.
        self._lines = Static(render_signals(self.signals), id="signal-lines")
        yield self._lines

    def watch_signals(self, signals: tuple[Signal, ...]) -> None:
        if self.is_mounted and self.is_attached:
            self._lines.update(render_signals(signals))

    def add(self, new: Iterable[Signal]) -> None:
        """Put newly detected signals at the top."""
        self.signals = newest_first(self.signals, new)
