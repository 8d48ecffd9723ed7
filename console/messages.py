"""The Textual messages the console's runtime worker posts to the app.

The engine emits plain dataclass events (``MarketSnapshot``, ``Signal``, ``FeedStatus``); the worker
wraps each in one of these messages and posts it, and the app hands their contents down to the widgets.
Snapshots come at the frame rate and only the latest matters, so :class:`SnapshotReady` replaces a
pending one (``can_replace``): when the app falls behind it skips frames, it never queues them.
Signals and status changes are never dropped.

Engine types are imported for type checking only: this module must not load numpy or numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from engine.feeds.base import FeedStatus
    from engine.runtime import PipelineHealth
    from engine.signals.events import Signal
    from engine.snapshot import MarketSnapshot


@dataclass
class RuntimeReady(Message):
    """The engine and feed are built: the feed's name and the symbols it can deliver."""

    feed: str
    universe: tuple[str, ...]


@dataclass
class SymbolsAdded(Message):
    """The runtime carries symbols its ``watch`` did not hold at ready (a fleet's engine started later):
    posted once per growth, never per tick, and never replaced."""

    symbols: tuple[str, ...]


@dataclass
class SnapshotReady(Message):
    """A new frame of market data (only the latest pending one is handled)."""

    snapshot: MarketSnapshot
    health: PipelineHealth | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


@dataclass
class SignalsDetected(Message):
    """Rules fired, in the order they were detected."""

    signals: tuple[Signal, ...]


@dataclass
class FeedStatusChanged(Message):
    """The feed connected, went stale, is reconnecting, failed or stopped."""

    status: FeedStatus
