"""The one interface every feed implements, and the status events it reports."""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.ticks import SymbolTable

State = Literal["connecting", "live", "stale", "reconnecting", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class FeedStatus:
    feed: str
    state: State
    reason: str = ""
    retry_in: float = 0.0  # seconds until the next attempt, while reconnecting
    at_ns: int = field(default_factory=time.time_ns)


class Feed(abc.ABC):
    """A source of tick batches. ``stream`` yields numpy ``TICK_DTYPE`` arrays and ``FeedStatus``."""

    name: str = "feed"

    def __init__(self, symbols: SymbolTable) -> None:
        self.symbols = symbols

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[np.ndarray | FeedStatus]:
        """Yield batches until cancelled; never raise for bad data (count it and skip it)."""

    def universe(self) -> tuple[str, ...]:
        """Symbols this feed can deliver (for autocomplete); empty when unknown."""
        return ()
