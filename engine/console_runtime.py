"""What the console needs of a runtime, declared once: :class:`ConsoleRuntime`.

Two runtimes implement it: the local one (``engine.runtime.Runtime``: a feed and an engine in this
process) and the attached one (``engine.remote.RemoteRuntime``: a headless service's broadcast). They
differ in what they can do, and each says so with ``implements_*`` flags rather than by having or lacking
attributes, so the console asks a flag instead of probing with ``hasattr``:

========================  ======  ========  ===================================================
flag                      local   attached  what it covers
========================  ======  ========  ===================================================
``implements_subscribe``  yes     no        ``add_symbols``/``drop_symbols`` change what is delivered
``implements_watch``      yes     no        ``set_watch`` chooses the symbols the snapshots carry
``implements_history``    yes     no        ``chart``/``chart_reach``/``closed_bars`` read loaded bars
``implements_alerts``     yes     no        ``set_positions`` gives the detector the local positions
========================  ======  ========  ===================================================

A method whose flag is False raises ``NotImplementedError``; :class:`ViewOnlyRuntime` is the base of
the runtimes that only show what they are sent (the attached one, and test doubles), with every flag
False. The pattern is that of Harlequin's adapters: optional features are methods on the one interface,
each with an ``implements_*`` property, and the app checks the property before offering the feature.

No numpy, numba or textual here: the console imports this for its types before the engine is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from engine.chart_data import ChartData
    from engine.feeds.base import FeedStatus
    from engine.positions.book import PositionBook
    from engine.snapshot import Update

__all__ = ["ClosedBars", "ConsoleRuntime", "FeedLike", "ViewOnlyRuntime"]


class ClosedBars(NamedTuple):
    """Copies of one symbol's closed bars, oldest first, and the bar interval they were built on."""

    times: np.ndarray
    bars: np.ndarray  # open, high, low, close, volume
    interval_ns: int


class FeedLike(Protocol):
    """What the console reads of a runtime's feed."""

    @property
    def name(self) -> str: ...

    @property
    def closed_universe(self) -> bool:
        """True when ``universe()`` is every symbol there is (a simulation, a replay): the first
        watchlist then starts with the first rows only, and a symbol dropped from the lists stays
        delivered (there is nothing to unsubscribe)."""
        ...

    def universe(self) -> tuple[str, ...]:
        """The symbols the feed can deliver (the add prompt completes these); empty when unknown."""
        ...

    @property
    def market(self) -> str:
        """Whose market data this is (the publisher's feed for an attached console): the key of the
        positions kept on this machine."""
        ...


@runtime_checkable
class ConsoleRuntime(Protocol):
    """A runtime as the console uses it (see the module docstring for the capability flags)."""

    @property
    def implements_subscribe(self) -> bool:
        """Whether ``add_symbols`` and ``drop_symbols`` work: a local feed is asked for the symbols the
        lists hold; an attached console gets what the publisher sends."""
        ...

    @property
    def implements_watch(self) -> bool:
        """Whether ``set_watch`` works: a local runtime snapshots the active list's symbols; an attached
        console's snapshots carry the publisher's."""
        ...

    @property
    def implements_history(self) -> bool:
        """Whether ``chart`` and ``closed_bars`` work: only a local engine holds the loaded bars."""
        ...

    @property
    def implements_alerts(self) -> bool:
        """Whether ``set_positions`` works: the position rules (stop, target, pnl) run where the detector
        runs; an attached console's service reads the positions of its own machine."""
        ...

    @property
    def feed(self) -> FeedLike: ...

    @property
    def watch(self) -> tuple[str, ...]:
        """The symbols the snapshots carry."""
        ...

    async def run(self, on_update: Callable[[Update], None],
                  on_status: Callable[[FeedStatus], None]) -> None:
        """Deliver updates and feed statuses (on the event loop) until cancelled or the feed ends."""
        ...

    def check_symbol(self, name: str) -> str | None:
        """Why ``name`` cannot be added to a watchlist, or None when it can."""
        ...

    async def add_symbols(self, names: Sequence[str]) -> None:
        """Start delivering ``names`` (``implements_subscribe``)."""
        ...

    async def drop_symbols(self, names: Sequence[str]) -> None:
        """Stop delivering ``names``, which no list holds any more (``implements_subscribe``)."""
        ...

    def set_watch(self, symbols: Sequence[str]) -> None:
        """Carry ``symbols`` in the snapshots from the next frame on (``implements_watch``)."""
        ...

    async def chart(self, symbol: str, factor: int, bars: int) -> ChartData | None:
        """``symbol``'s last ``bars`` bars at ``factor`` times the bar interval, read consistently
        (``implements_history``); None for a symbol without bars."""
        ...

    def chart_reach(self) -> int:
        """Bars a chart can have at the bar interval (``implements_history``): the engine's ring, or more
        when older bars can be read from the bar store."""
        ...

    async def closed_bars(self, symbol: str, stored: int | None = None) -> ClosedBars | None:
        """Copies of ``symbol``'s loaded closed bars, with older ones from the bar store when it has them
        (at most ``stored`` of those; ``implements_history``); None for an unknown symbol."""
        ...

    def close_history(self) -> None:
        """Release what reading bars opened (the bar store); nothing to do when nothing was read."""
        ...

    async def set_positions(self, book: PositionBook) -> None:
        """Hand the position book to the detector's position rules (``implements_alerts``); called when
        the book changes, never per tick."""
        ...


class ViewOnlyRuntime:
    """The base of a runtime that shows what it is sent and nothing more: it takes no symbols, chooses
    none, and holds no bars. A subclass provides ``feed``, ``watch`` and ``run``."""

    implements_subscribe = False
    implements_watch = False
    implements_history = False
    implements_alerts = False
    watch: tuple[str, ...] = ()

    def check_symbol(self, name: str) -> str | None:
        """Only the symbols already sent can be listed."""
        if name not in self.watch:
            return f"{name} is not among the symbols the attached instance publishes"
        return None

    async def add_symbols(self, names: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot subscribe to symbols")

    async def drop_symbols(self, names: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot unsubscribe from symbols")

    def set_watch(self, symbols: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} shows the symbols it is sent")

    async def chart(self, symbol: str, factor: int, bars: int) -> ChartData | None:
        raise NotImplementedError(f"{type(self).__name__} has no local engine")

    def chart_reach(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} has no local engine")

    async def closed_bars(self, symbol: str, stored: int | None = None) -> ClosedBars | None:
        raise NotImplementedError(f"{type(self).__name__} has no local engine")

    def close_history(self) -> None:
        return None  # nothing was opened

    async def set_positions(self, book: PositionBook) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no local detector")


if TYPE_CHECKING:
    from engine.remote import RemoteRuntime
    from engine.runtime import Runtime

    def _both_runtimes_implement_it(local: Runtime, attached: RemoteRuntime) -> list[ConsoleRuntime]:
        return [local, attached]  # mypy checks each against the protocol here
