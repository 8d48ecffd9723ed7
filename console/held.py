"""What the console holds back while its display is paused: what unpausing will show, and no more.

Signals keep coming while the display is frozen (the runtime keeps running); at 1,000 symbols they come
by the million an hour. The log shows only the newest ``widgets.signal_log.LIMIT`` and the watchlist only
the latest signal per symbol it lists, so that is all that is kept: unpausing shows exactly what an
unpaused display would show.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import TYPE_CHECKING

from widgets.signal_log import LIMIT, newest_first

if TYPE_CHECKING:
    from engine.signals.events import Signal


def latest_per_symbol(signals: Iterable[Signal], watched: Set[str] | None) -> dict[str, Signal]:
    """The last of ``signals`` per symbol, for the ``watched`` symbols only (all when None)."""
    return {s.symbol: s for s in signals if watched is None or s.symbol in watched}


class HeldSignals:
    """Signals that arrived while paused: the log's newest ``limit`` and the latest per watched symbol,
    so at most ``limit`` + (symbols in the watchlists) of them, however long the pause."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.log: tuple[Signal, ...] = ()
        """Newest first, as ``SignalLog`` orders them (``newest_first``), at most ``limit``."""
        self.latest: dict[str, Signal] = {}

    def __len__(self) -> int:
        return len(self.log) + len(self.latest)

    def add(self, signals: Iterable[Signal], watched: Set[str] | None) -> None:
        signals = tuple(signals)
        self.log = newest_first(self.log, signals, self.limit)
        self.latest.update(latest_per_symbol(signals, watched))

    def forget(self, watched: Set[str]) -> None:
        """Drop the latest signal of symbols no list holds any more."""
        if any(symbol not in watched for symbol in self.latest):
            self.latest = {k: v for k, v in self.latest.items() if k in watched}

    def take(self) -> tuple[tuple[Signal, ...], dict[str, Signal]]:
        """(the log's signals, oldest first as they came; the latest per symbol), and start afresh."""
        log, latest = self.log, self.latest
        self.log, self.latest = (), {}
        return tuple(reversed(log)), latest
