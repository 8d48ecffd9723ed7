"""The signal log: every signal the rules fired, newest first, coloured by direction.

State is two reactives, ``signals`` (newest first, bounded) and ``filter`` (see :func:`select`; shown in
the border title while set, so a kept filter is never invisible). :func:`signal_parts` decides what a
line says as (text, role) pairs; the widget styles roles from its component classes (``$text-success``
for up, ``$text-error`` for down), so a theme switch recolours the log. A warm-up signal (fired on
history, not news) is dimmed throughout and marked ``hist`` after its price, so it cannot be read as a
live alert. ``enter`` posts :class:`SignalLog.Chosen` so the app can jump to the symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from cachetools import LRUCache
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip

from widgets import formatting as fmt
from widgets.rowview import RowView

if TYPE_CHECKING:
    from engine.signals.events import Signal

LIMIT = 500
"""Signals kept in the log; older ones fall off the end."""
TITLE = "Signals"
"""The log's border title; a kept filter is shown after it."""
EMPTY = "no signals yet"
ARROWS = {"up": "▲", "down": "▼"}
HISTORY = "hist"
"""The marker of a warm-up signal (one fired on history bars)."""
ROLES = ("up", "down", "value", "muted", "history")


def newest_first(existing: Sequence[Signal], new: Iterable[Signal], limit: int = LIMIT) -> tuple[Signal, ...]:
    """``new`` merged into ``existing``, newest bar first (a quiet symbol's bar can close after a
    busier symbol's later one, so detection order is not market order). The sort is stable: signals
    of one bar stay in detection order, newest first."""
    merged = (*reversed(tuple(new)), *existing)
    return tuple(sorted(merged, key=lambda s: s.bar_time, reverse=True))[:limit]


def matches(signal: Signal, text: str) -> bool:
    """Whether ``signal`` passes the filter ``text`` (any case): ``sym:V`` matches the symbol V exactly,
    ``rule:vol`` a part of the rule, and plain text a part of the symbol or the rule."""
    field, needle = parse_filter(text)
    if not needle:
        return True
    if field == "sym":
        return signal.symbol.lower() == needle
    if field == "rule":
        return needle in signal.rule.lower()
    return needle in signal.symbol.lower() or needle in signal.rule.lower()


def parse_filter(text: str) -> tuple[str, str]:
    """``("sym" | "rule" | "", needle)``: the field a filter names by its prefix, and the text, lower case."""
    needle = text.strip().lower()
    for field in ("sym", "rule"):
        if needle.startswith(field + ":"):
            return field, needle[len(field) + 1:].strip()
    return "", needle


def select(signals: Sequence[Signal], text: str) -> tuple[Signal, ...]:
    """The signals the filter ``text`` keeps, in their order.

    Plain text that is some signal's whole symbol means that symbol alone: ``V`` is the symbol V, not
    every ``volume_spike`` as well (``rule:v`` asks for those).
    """
    field, needle = parse_filter(text)
    if not needle:
        return tuple(signals)
    if not field and any(s.symbol.lower() == needle for s in signals):
        field = "sym"
    return tuple(s for s in signals if matches(s, f"{field}:{needle}" if field else needle))


def _operands(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {fmt.indicator(value)}" for name, value in values.items())


def signal_parts(signal: Signal, symbol_width: int = 7, rule_width: int = 14) -> list[tuple[str, str]]:
    """One signal as (text, role) pairs: bar time, arrow and symbol, rule, price, crossing operands; a
    warm-up signal has the ``hist`` marker before its operands and every part in the history role."""
    role = signal.direction
    parts = [
        (fmt.clock(signal.bar_time) + " ", "muted"),  # market time of the bar that fired it
        (f"{ARROWS[signal.direction]} {signal.symbol:<{symbol_width}} ", role),
        (f"{fmt.fit(signal.rule, rule_width):<{rule_width}} ", role),
        (f"{fmt.price(signal.price):>10}  ", "value"),
        (_operands(signal.values), "muted"),
    ]
    if signal.warmup:
        parts.insert(4, (f"{HISTORY}  ", "history"))
        parts = [(text, "history") for text, _ in parts]
    return parts


class SignalLog(RowView):
    """A scrolling list of signals, newest at the top; ``enter`` jumps to the signal's symbol."""

    COMPONENT_CLASSES = {*(f"signal-log--{r}" for r in ROLES), "signal-log--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "choose", "Go to symbol"),
    ]

    DEFAULT_CSS = """
    SignalLog {
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    SignalLog > .signal-log--up { color: $text-success; }
    SignalLog > .signal-log--down { color: $text-error; }
    SignalLog > .signal-log--value { color: $foreground; }
    SignalLog > .signal-log--muted { color: $foreground-muted; }
    SignalLog > .signal-log--history { color: $foreground-muted; text-style: dim; }
    SignalLog > .signal-log--cursor { background: $surface; }
    SignalLog:focus > .signal-log--cursor { background: $block-cursor-background; text-style: bold; }
    """

    signals: reactive[tuple[Signal, ...]] = reactive(())
    """Every signal kept, newest first (at most :data:`LIMIT`)."""
    filter: reactive[str] = reactive("")
    """Only the signals this text selects are shown (``sym:V``, ``rule:vol``, or part of either)."""

    class Chosen(Message):
        """``enter`` on a signal: the app shows its symbol."""

        def __init__(self, signal: Signal) -> None:
            super().__init__()
            self.signal = signal

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._shown: tuple[Signal, ...] = ()
        self._cache: LRUCache[tuple[object, ...], Strip] = LRUCache(256)
        self._palette: dict[str, Style] = {}

    @property
    def shown(self) -> tuple[Signal, ...]:
        """The signals on display (after the filter), newest first."""
        return self._shown

    @property
    def selected(self) -> Signal | None:
        return self._shown[self.cursor] if self._shown else None

    def add(self, new: Iterable[Signal]) -> None:
        """Put newly detected signals at the top."""
        self.signals = newest_first(self.signals, new)

    def watch_signals(self) -> None:
        self._select()

    def watch_filter(self, text: str) -> None:
        kept = text.strip()  # plain text, never markup: a filter may hold brackets
        self.border_title = Content(TITLE + (f" · filter “{kept}” (esc clears)" if kept else ""))
        self._select()

    def _select(self) -> None:
        keep = self.selected
        text = self.filter
        self._shown = select(self.signals, text) if text else self.signals
        self.set_row_count(max(1, len(self._shown)))
        if keep is not None and keep in self._shown and self.cursor:  # at the top, follow the newest
            self.cursor = self._shown.index(keep)
        self.refresh()

    def action_choose(self) -> None:
        if self.selected is not None:
            self.post_message(self.Chosen(self.selected))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._palette = {}
        self._cache.clear()

    def on_focus(self) -> None:
        self.notify_style_update()
        self.refresh()

    def on_blur(self) -> None:
        self.notify_style_update()
        self.refresh()

    def row_strip(self, index: int, width: int, selected: bool) -> Strip:
        palette = self._palette
        if not palette:
            names = self.COMPONENT_CLASSES
            palette = self._palette = {n: self.get_component_rich_style(n, partial=True) for n in names}
        base = self.rich_style
        if not self._shown:
            hint = EMPTY if not self.filter else f"no signals match {self.filter!r}"
            return Strip([Segment(hint, base + palette["signal-log--muted"])]).adjust_cell_length(width, base)
        signal = self._shown[index]
        key = (signal.symbol, signal.rule, signal.bar_time, signal.detected_ns, signal.warmup, selected,
               width)
        strip = self._cache.get(key)
        if strip is None:
            cursor = palette["signal-log--cursor"] if selected else Style.null()
            segments = [Segment(text, base + palette[f"signal-log--{role}"] + cursor)
                        for text, role in signal_parts(signal)]
            strip = self._cache[key] = Strip(segments).crop_extend(0, width, base + cursor)
        return strip
