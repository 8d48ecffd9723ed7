"""The headless service's portfolio: the feed's positions read from the local state file, reloaded when
the file changes, and valued at the latest snapshot for the status line and ``/metrics``.

Positions stay on the machine of the person who entered them: the service reads the state file the
console writes (``engine.positions.stored.read_feed``, read only; a damaged file gives no positions and
one warning). :meth:`Portfolio.refresh` looks at the file's size and modification time (one ``stat``)
and reads it again only when they changed, so a console on the same machine can add a position and a
running service picks it up at its next refresh. Valuation is :mod:`engine.positions.valuation`'s,
vectorised over the positions, per status line or scrape, never per tick.

A position whose symbol is not in the feed's symbol list is subscribed (:func:`follow`), as the console's
watchlists are: its price, P&L, stop, target and ``pnl`` rules are then live. A symbol the feed refuses
(a sim or a replay has a fixed universe) is logged once, with the feed's reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.positions.book import PositionBook
from engine.positions.stored import read_feed
from engine.positions.valuation import Holdings, holdings, price_decimals, value
from engine.snapshot import MarketSnapshot

log = logging.getLogger("tickdeck.positions")

WATCH_EVERY_S = 2.0
"""How often a service looks whether the state file changed (one stat): an edit in a console on the same
machine reaches the service's alerts within this."""


@dataclass(frozen=True)
class PortfolioFigures:
    """Totals as the valuation rounds them (sums of the rows as shown), and each position's P&L."""

    positions: int  # open or flat positions in the book
    value: float  # market value of the priced positions (a short's is negative)
    unrealized: float
    day: float | None  # None: not known for every priced position (no previous close)
    realized: float
    decimals: int  # the money decimals the totals are rounded to
    unrealized_by_symbol: dict[str, float]  # priced positions only

    def fields(self) -> dict[str, Any]:
        """The status line's JSON fields."""
        return {"positions": self.positions, "portfolio_value": self.value,
                "portfolio_unrealized": self.unrealized, "portfolio_day": self.day,
                "portfolio_realized": self.realized, "portfolio_decimals": self.decimals}


def portfolio_text(fields: Mapping[str, Any]) -> str:
    """The status line's part for the portfolio (``PortfolioFigures.fields``), or "" without one."""
    if "portfolio_value" not in fields:
        return ""
    d = fields["portfolio_decimals"]

    def money(x: float | None, sign: str = "+") -> str:
        return "n/a" if x is None else f"{x:{sign},.{d}f}"

    return (f", {fields['positions']} positions worth {money(fields['portfolio_value'], '')}, unrealized "
            f"{money(fields['portfolio_unrealized'])}, day {money(fields['portfolio_day'])}")


class Portfolio:
    """One feed's positions from the state file at ``path``."""

    def __init__(self, path: Path, feed: str) -> None:
        self.path = path
        self.feed = feed
        self.book = PositionBook()
        self.warning: str | None = None
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the file last read
        self._holdings: Holdings | None = None
        self.refused: dict[str, str] = {}  # symbol -> why the feed refused it (logged once; one per position)

    def refresh(self) -> bool:
        """Read the file again if it changed since the last read; True if the book was replaced."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except OSError:
            seen = None  # no file (yet): no positions; read_feed says why if it is something else
        if seen == self._seen and self._holdings is not None:
            return False
        self._seen = seen
        book, warning = read_feed(self.path, self.feed)
        if warning is not None and warning != self.warning:
            log.warning("positions: %s", warning,
                        extra={"event": "positions", "fields": {"warning": warning}})
        self.warning = warning
        self.book = book
        self._holdings = holdings(book, book.symbols())
        log.info("positions: %d on the %s feed, from %s", len(book), self.feed, self.path,
                 extra={"event": "positions", "fields": {"positions": len(book), "feed": self.feed}})
        return True

    def figures(self, snapshot: MarketSnapshot | None) -> PortfolioFigures | None:
        """The portfolio valued at ``snapshot``'s quotes; None before the first snapshot. A quote's
        ``previous_close`` (where the snapshot carries one) gives the day P&L."""
        if snapshot is None:
            return None
        if self._holdings is None:
            self.refresh()
        h = self._holdings
        assert h is not None
        last, known, previous = snapshot.market(h.symbols)
        v = value(h, last, previous, price_decimals(last, known))
        t = v.totals
        priced = h.held & np.isfinite(last)
        day_known = bool(priced.any()) and t.no_previous_close == 0
        by_symbol = {s: float(u) for s, u, ok in zip(h.symbols, v.unrealized.tolist(), priced.tolist(),
                                                     strict=True) if ok}
        return PortfolioFigures(t.positions, t.value, t.unrealized, t.day if day_known else None,
                                t.realized, t.decimals, by_symbol)


class Subscribing(Protocol):
    """What :func:`follow` needs of a runtime (``engine.runtime.Runtime``)."""

    @property
    def watch(self) -> tuple[str, ...]: ...

    def check_symbol(self, name: str) -> str | None: ...

    async def add_symbols(self, names: Sequence[str]) -> None: ...

    def set_watch(self, symbols: Sequence[str]) -> None: ...


async def follow(runtime: Subscribing, portfolio: Portfolio) -> list[str]:
    """Subscribe the positions' symbols the runtime does not carry yet and add them to its snapshots;
    returns those added. A symbol the feed refuses is logged once (per refusal reason) and left out."""
    carried = set(runtime.watch)
    new = []
    held = set(portfolio.book.symbols())
    for gone in [s for s in portfolio.refused if s not in held]:  # kept for the positions there are only
        del portfolio.refused[gone]
    for symbol in portfolio.book.symbols():
        if symbol in carried:
            continue
        why = runtime.check_symbol(symbol)
        if why is None:
            new.append(symbol)
            portfolio.refused.pop(symbol, None)
        elif portfolio.refused.get(symbol) != why:
            portfolio.refused[symbol] = why
            log.warning("positions: %s is not followed: %s", symbol, why,
                        extra={"event": "positions", "fields": {"symbol": symbol, "refused": why}})
    if new:
        await runtime.add_symbols(new)
        runtime.set_watch((*runtime.watch, *new))
        log.info("positions: subscribed %s (held, not in the feed's symbol list)", ", ".join(new),
                 extra={"event": "positions", "fields": {"subscribed": new}})
    return new


async def watch(portfolio: Portfolio, changed: Callable[[PositionBook], Awaitable[None]],
                every: float = WATCH_EVERY_S) -> None:
    """Refresh ``portfolio`` every ``every`` seconds until cancelled; ``changed`` gets each new book (to
    hand it to the detector). A failing refresh is logged and tried again at the next turn."""
    while True:
        await asyncio.sleep(every)
        try:
            if await asyncio.to_thread(portfolio.refresh):  # a large file is parsed off the loop
                await changed(portfolio.book)
        except Exception:  # a bug here must not end the service: logged, and the loop goes on
            log.exception("positions: reading %s failed", portfolio.path)

