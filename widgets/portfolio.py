"""The totals row under the watchlist and the portfolio pane (allocation bars, P&L over the session and
over the stored history).

Both draw what the app hands them once per frame (the active list's
:class:`~engine.positions.valuation.Totals` and its rows' figures); the lines are pure functions
(:func:`allocation_lines`, :func:`pnl_line`, :func:`widgets.position_columns.totals_text`) tested on their
own. Colours come from the theme through component classes, so every theme (``ansi16`` too) recolours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from widgets import formatting as fmt
from widgets import position_columns as pc
from widgets.sparkline import spark

if TYPE_CHECKING:
    from engine.positions.valuation import Totals

SESSION_SAMPLES = 3_600
"""Samples of the total P&L kept for the pane's sparkline (one per second: an hour, then the oldest go)."""
BAR_MIN = 4
EIGHTHS = " ▏▎▍▌▋▊▉█"


class Allocation(NamedTuple):
    """One position in the pane: its symbol, signed value (money) at ``decimals``, weight %."""

    symbol: str
    value: float
    weight: float
    decimals: int


def bar(fraction: float, width: int) -> str:
    """A horizontal bar ``fraction`` (0..1) of ``width`` cells, in eighths of a cell (at least one eighth
    for any position, so a small one never looks like none)."""
    eighths = max(1 if fraction > 0 else 0, min(width * 8, round(fraction * width * 8)))  # none vanish
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def allocation_lines(rows: Sequence[Allocation], width: int, height: int) -> list[tuple[str, str, str]]:
    """``(symbol part, bar, figures)`` per line: the largest positions by absolute value first, as many
    as ``height`` holds (the last line says how many more there are), each bar scaled to the largest."""
    ranked = sorted((r for r in rows if r.weight == r.weight), key=lambda r: -abs(r.weight))
    if not ranked or height <= 0:
        return []
    shown = ranked if len(ranked) <= height else ranked[: height - 1]
    name = max(6, min(12, max(len(r.symbol) for r in shown)))
    top = max(abs(r.weight) for r in shown) or 1.0
    out = []
    for r in shown:
        figures = f" {r.weight:5.1f}% {fmt.price(r.value, r.decimals, 12):>12}"
        room = max(BAR_MIN, width - name - 1 - len(figures))
        out.append((fmt.fit(r.symbol, name).ljust(name) + " ", bar(abs(r.weight) / top, room), figures))
    if len(shown) < len(ranked):
        out.append((f"… {len(ranked) - len(shown)} more", "", ""))
    return out


def pnl_line(series: Sequence[float], width: int) -> str:
    """The sparkline of the total P&L over the session, ``width`` cells, stretched while it is short."""
    return spark(series, max(1, width), stretch=True) if series else ""


class TotalsBar(Static):
    """One line under the watchlist: the active list's totals; hidden while the list holds nothing."""

    DEFAULT_CSS = """
    TotalsBar {
        height: 1;
        background: $panel;
        display: none;
    }
    TotalsBar > .totals--up { color: $text-success; }
    TotalsBar > .totals--down { color: $text-error; }
    TotalsBar > .totals--label { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"totals--up", "totals--down", "totals--label"}

    totals: reactive[Totals | None] = reactive(None, always_update=True, repaint=False)
    """The active list's totals (None: no position in it)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._drawn: tuple[Totals, int] | None = None

    def watch_totals(self, totals: Totals | None) -> None:
        """Redrawn only when the figures change, and without a layout (one line, always): a layout of
        the screen every frame cost the 1,000-symbol console several milliseconds a frame."""
        if (totals is not None) != self.display:
            self.display = totals is not None
        if totals is not None and (totals, self.size.width) != self._drawn:
            self._draw(totals)

    def _draw(self, totals: Totals) -> None:
        try:
            styles = {name: self.get_component_rich_style(f"totals--{name}", partial=True)
                      for name in ("up", "down", "label")}
        except KeyError:  # not styled yet (mounting) or any more (closing): drawn once it is
            self._drawn = None
            return
        self._drawn = (totals, self.size.width)
        self.update(pc.totals_text(totals, self.size.width or 80, styles), layout=False)

    def text(self, totals: Totals) -> Text:
        """What the row says for ``totals`` (uncoloured when not styled yet)."""
        return pc.totals_text(totals, self.size.width or 80)

    def notify_style_update(self) -> None:
        """A theme switch recolours the row."""
        super().notify_style_update()
        if self.totals is not None and self.is_attached:
            self.call_later(self._draw, self.totals)

    def on_resize(self) -> None:
        if self.totals is not None and self.is_attached:
            self._draw(self.totals)


class PortfolioPane(Widget):
    """Allocation bars of the active list's positions and its total P&L over the session."""

    DEFAULT_CSS = """
    PortfolioPane {
        height: auto;
        padding: 0 1;
    }
    PortfolioPane > .portfolio--bar { color: $text-primary; }
    PortfolioPane > .portfolio--up { color: $text-success; }
    PortfolioPane > .portfolio--down { color: $text-error; }
    PortfolioPane > .portfolio--muted { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"portfolio--bar", "portfolio--up", "portfolio--down", "portfolio--muted"}

    rows: reactive[tuple[Allocation, ...]] = reactive(())
    """The positions to draw (all the active list holds). Set every frame while the pane shows; it is
    redrawn only when they differ, and laid out again only when their number does (its height)."""
    totals: reactive[Totals | None] = reactive(None)
    history: reactive[tuple[float, ...]] = reactive(())
    """Total P&L (unrealized plus realized) sampled over the session, oldest first."""
    stored: reactive[tuple[float, ...]] = reactive((), layout=True)
    """Total P&L over the stored bars (``engine.positions.history``), oldest first; () when none."""
    stored_span: reactive[str] = reactive("")
    """How far back ``stored`` reaches, for its label (``6 d``)."""

    def watch_rows(self, old: tuple[Allocation, ...], new: tuple[Allocation, ...]) -> None:
        """A layout of the screen only for another height: one every frame cost milliseconds a frame."""
        if len(old) != len(new):
            self.refresh(layout=True)

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return max(2, len(self.rows) + 2 + (1 if self.stored else 0))

    def render(self) -> Text:
        width = max(20, self.content_region.width or 60)
        style = {n: self.get_component_rich_style(f"portfolio--{n}", partial=True)
                 for n in ("bar", "up", "down", "muted")}
        out = Text(no_wrap=True, overflow="crop", end="")
        totals = self.totals
        if totals is None or not self.rows:
            out.append("No position in this list (e enters one: SYMBOL QTY @ PRICE)", style["muted"])
            return out
        total = totals.unrealized + totals.realized
        label = "P&L over the session "
        series = self.history
        out.append(label, style["muted"])
        out.append(fmt.change(total, 0.0, totals.decimals, 16) if total == total else fmt.MISSING,
                   _signed(total, style))
        out.append(" ")
        room = width - len(label) - 18
        if room > 4 and series:
            out.append(pnl_line(series, room), _signed(series[-1] - series[0], style))
        stored = self.stored
        if stored:
            span = f" ({self.stored_span})" if self.stored_span else ""
            head = f"P&L over the stored bars{span} ".ljust(len(label) + 17)  # its line under the session's
            out.append("\n")
            out.append(head, style["muted"])
            room = width - len(head) - 1
            if room > 4:
                out.append(pnl_line(stored, room), _signed(stored[-1] - stored[0], style))
        parent = self.parent
        lines = 2 if stored else 1
        height = max(1, (parent.content_region.height if isinstance(parent, Widget) else 10) - lines)
        for symbol, drawn, figures in allocation_lines(self.rows, width, height):
            out.append("\n")
            out.append(symbol)
            out.append(drawn, style["bar"])
            out.append(figures, style["muted"])
        return out


def _signed(value: float, style: dict[str, Style]) -> Style:
    return style["up"] if value > 0 else style["down"] if value < 0 else style["muted"]


class SessionPnl:
    """The total P&L sampled at most once a second, kept to :data:`SESSION_SAMPLES` (per active list:
    :meth:`reset` when it changes)."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=SESSION_SAMPLES)
        self._last_s = -1

    def add(self, at_s: int, total: float) -> bool:
        """Record ``total`` for second ``at_s`` (once per second); True if a sample was added."""
        if at_s == self._last_s or total != total:
            return False
        self._last_s = at_s
        self.samples.append(total)
        return True

    def reset(self) -> None:
        self.samples.clear()
        self._last_s = -1
