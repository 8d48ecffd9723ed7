"""The one interface every feed implements, its status events, its history, and its per-reason counters."""

from __future__ import annotations

import abc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.ticks import SymbolTable, check_refill

State = Literal["connecting", "live", "stale", "reconnecting", "failed", "stopped"]
log = logging.getLogger("tickdeck.feeds")


@dataclass(frozen=True, slots=True)
class FeedStatus:
    feed: str
    state: State
    reason: str = ""
    retry_in: float = 0.0  # seconds until the next attempt, while reconnecting
    at_ns: int = field(default_factory=time.time_ns)
    symbols: tuple[str, ...] = ()  # the symbols it concerns, when not the whole feed (a stale quote)


def valid_utf8(raw: str | bytes) -> bool:
    """Whether ``raw`` is UTF-8 throughout (a ``str``: encodable as UTF-8, so no lone surrogate).

    JSON exchanged between systems must be UTF-8 (RFC 8259, section 8.1), so a frame that is not is a
    malformed message, whichever field holds the bad byte. Checked here, once, because msgspec's own
    answer depends on its version and on the target type: 0.23 rejects invalid UTF-8 only in fields it
    decodes and skips unknown ones unread; earlier versions raise ``UnicodeDecodeError`` instead.
    WebSocket text frames are validated by ``websockets`` already; binary frames and HTTP bodies are not.
    """
    if raw.isascii():  # the usual case, and a fast one
        return True
    try:
        if isinstance(raw, bytes):
            raw.decode()
        else:
            raw.encode()
    except UnicodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HistoryBars:
    """Bars from the past, which a feed yields before its live batches (or a store hands over later).

    ``bars`` is an array of ``engine.ticks.BAR_DTYPE``, in time order within each symbol. History warms
    the indicators and fills the charts like the live tape, but what it makes the rules fire is not news:
    those signals carry ``warmup=True``. The type, not a flag inside the array, says "history", so a
    batch cannot lose the mark on its way (the runtime never merges history into a live batch).
    """

    bars: np.ndarray

    def __len__(self) -> int:
        return len(self.bars)


@dataclass(frozen=True, slots=True)
class Refill:
    """Trades a feed missed (a gap, a reconnect), fetched again: the engine re-runs the symbol from
    ``since_ns`` so its state is what an uninterrupted stream would have built.

    ``since_ns`` is the open time of the first bar to rebuild (the bar that holds the last trade received
    before the gap); every bar of the symbol from there on is rebuilt. ``ticks`` (``TICK_DTYPE``, time
    ordered, all of slot ``sym``) are EVERY trade of the symbol from ``since_ns`` up to, not including,
    the first live trade the feed holds back until the refill has gone in: none of the symbol's live
    trades after the gap may reach the engine before it. Like ``HistoryBars``, the type says what the
    ticks are, so the runtime never merges them into a live batch nor hands them to a recorder. Checked
    here, where the feed builds it, so a mistake names the feed's call, not the engine thread.
    """

    sym: int  # the symbol's slot
    since_ns: int  # open time of the first bar to rebuild
    ticks: np.ndarray  # TICK_DTYPE: every trade of the symbol from since_ns to the first held-back one

    def __post_init__(self) -> None:
        check_refill(self.sym, self.since_ns, self.ticks)

    def __len__(self) -> int:
        return len(self.ticks)


FeedItem = np.ndarray | FeedStatus | HistoryBars | Refill
"""What a feed's stream yields: a batch of live ticks, a status, history, or a gap's trades refetched."""


class FeedCounters:
    """What a feed received, skipped and survived, counted per reason.

    A bad message is counted and logged once per reason with a sample, then only counted: a feed that
    receives garbage at a high rate must not turn its log into the bottleneck.
    """

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.messages = 0
        self.ticks = 0
        self.reconnects = 0
        self.duplicates = 0
        self.gaps = 0  # trades known to be missing (by trade id or sequence number)
        self.out_of_order = 0
        self.bad: Counter[str] = Counter()
        # history from the service's REST API (engine.backfill): symbols queued and done (loaded, or
        # given up on), refills delivered, and REST answers skipped, per reason
        self.history_total = 0
        self.history_done = 0
        self.history_failed = 0
        self.refills = 0
        self.rest_bad: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

    def bad_message(self, reason: str, sample: bytes | str | object) -> None:
        self.bad[reason] += 1
        if reason not in self.samples:
            text = sample.decode("utf-8", "replace") if isinstance(sample, bytes) else str(sample)
            self.samples[reason] = text[:200]
            log.warning("%s: skipped a message (%s); first sample: %r", self.feed, reason, text[:200])

    def bad_answer(self, reason: str, sample: bytes | str | object) -> None:
        """A REST answer skipped (an error, HTML, a partial page, bad rows): counted apart from the
        stream's bad messages, and logged once per reason with a sample, as they are."""
        self.rest_bad[reason] += 1
        key = f"rest: {reason}"
        if key not in self.samples:
            text = sample.decode("utf-8", "replace") if isinstance(sample, bytes) else str(sample)
            self.samples[key] = text[:200]
            log.warning("%s: skipped a REST answer (%s); first sample: %r", self.feed, reason, text[:200])

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "feed": self.feed, "messages": self.messages, "ticks": self.ticks,
            "reconnects": self.reconnects, "duplicates": self.duplicates, "gaps": self.gaps,
            "out_of_order": self.out_of_order, "bad": dict(self.bad),
        }


class Feed(abc.ABC):
    """A source of tick batches. ``stream`` yields numpy ``TICK_DTYPE`` arrays, ``FeedStatus`` and, for a
    feed that knows the past, ``HistoryBars`` (first, before the live batches) and ``Refill`` (a gap's
    trades fetched again, before the symbol's live trades after the gap).

    A feed never raises for bad data: it counts it (``counters``) and skips it. It raises only when it
    cannot go on at all, after reporting why in a ``failed`` status.
    """

    name: str = "feed"
    #: receive times are this run's clock (False for a replay, whose times come from its file)
    realtime: bool = True
    #: True when ``universe()`` is every symbol the feed can ever deliver (a simulation, a replay)
    closed_universe: bool = False
    #: set when the feed was stopped early (a shutdown): its stream ends, but its last bars are not done
    stopped: bool = False

    def __init__(self, symbols: SymbolTable) -> None:
        self.symbols = symbols
        self.counters = FeedCounters(self.name)
        #: tick-size decimals per symbol, for those whose service publishes one (``engine.precision``);
        #: at most one entry per symbol the feed was asked for, so bounded by the symbol table
        self.decimals: dict[str, int] = {}
        #: the previous session's close per symbol, for those whose service reports one (Yahoo); the
        #: others' comes from their bars (``engine.positions.session``)
        self.previous_closes: dict[str, float] = {}

    @property
    def market(self) -> str:
        """Whose market data this is: the feed's own name (an attached feed answers with its publisher's),
        the key positions and watchlists are kept under."""
        return self.name

    @abc.abstractmethod
    def stream(self) -> AsyncIterator[FeedItem]:
        """Yield batches until cancelled."""

    def universe(self) -> tuple[str, ...]:
        """Symbols this feed can deliver (for autocomplete); empty when unknown."""
        return ()

    def refuse(self, name: str) -> str | None:
        """Why ``name`` cannot be streamed (the service does not list it), or None when it may be."""
        return None

    def now_ns(self) -> int:
        """The feed's clock, which closes bars of quiet symbols: wall time for live feeds; a replay
        returns the time it has replayed up to."""
        return time.time_ns()

    def take_pending(self) -> np.ndarray | None:
        """Ticks received but not yet yielded, taken (a stream stopped in the middle of gathering a batch
        hands them over this way instead of dropping them); None when there are none."""
        return None

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Start delivering ``symbols`` (live feeds send a subscription; others ignore it)."""
        return None

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Stop delivering ``symbols``."""
        return None
