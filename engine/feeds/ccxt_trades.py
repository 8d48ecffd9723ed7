"""ccxt's unified trades and tickers, checked one by one before they become ticks.

ccxt hands over what the exchange sent, parsed but not validated (measured on ccxt 4.5: a zero,
negative or missing price reaches the ``watch_trades`` caller, and a trade sent twice comes back twice),
so every field is checked here: a trade without a usable price, amount or time is counted under its
reason in ``FeedCounters.bad`` and skipped.

Duplicates and gaps are per symbol, because trade ids repeat across pairs. Where an id is a whole
number, the ``TradeSequencer`` drops any id at or below the last one delivered; on exchanges whose ids
count the trades of a book one by one (:data:`SEQUENTIAL_IDS`: Kraken documents ``trade_id`` as "a
sequence number unique per book") a jump is counted in ``counters.gaps``. Other ids (text, or numbers
that are not consecutive) are de-duplicated against the last :data:`RECENT_IDS` of the symbol.

A trade whose id is at or below the last one but whose time is after the last trade's is no repeat (a
replay after a reconnect carries the old times): the exchange numbered its trades afresh (a stand-in or
a venue restarted), so the symbol's sequence starts again there instead of every later trade being
dropped as a duplicate; logged once per symbol.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from engine.feeds.base import FeedCounters
from engine.feeds.batching import Tick, TradeSequencer

log = logging.getLogger("tickdeck.feeds")

MS = 1_000_000
SEQUENTIAL_IDS = frozenset({"kraken"})
"""Exchanges whose trade ids grow by one per trade of a book, so a jump is trades missed."""
RECENT_IDS = 1024  # non-numeric ids remembered per symbol, to drop a trade sent twice
_SIDE = {"buy": 1, "sell": -1}  # ccxt's ``side`` is the taker's (the aggressor's), as a tick's is
_INT64 = 2**63 - 1


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except (ValueError, OverflowError):
        return math.nan


def trade_id(value: Any) -> int | None:
    """The id as a whole number that fits a tick's int64 field, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        number = int(value)
    else:
        return None
    return number if 0 <= number <= _INT64 else None


class TradeTape:
    """Turns ccxt trades (``watch_trades``) and tickers (``watch_ticker``) into ticks."""

    def __init__(self, exchange: str, counters: FeedCounters,
                 sequencer: TradeSequencer | None = None) -> None:
        self.exchange = exchange
        self.counters = counters
        self.sequencer = sequencer or TradeSequencer()
        self.sequential = exchange in SEQUENTIAL_IDS
        #: per slot: the last non-numeric ids (bounded by RECENT_IDS each, and by the symbol table)
        self._recent: dict[int, tuple[deque[str], set[str]]] = {}
        #: per slot: the last ticker's (time, price), so a ticker that did not move is not a tick
        self._last_ticker: dict[int, tuple[int, float]] = {}
        #: per slot: the time (ms) of the last trade let through, which tells a renumbering from a replay
        self._last_ms: dict[int, int] = {}
        self._renumbered: set[int] = set()  # slots whose renumbering was logged (bounded by the slots)
        self.renumberings = 0  # sequences started again (each lets ids already seen through once more)

    def forget(self, slot: int) -> None:
        self.sequencer.forget(slot)
        self._recent.pop(slot, None)
        self._last_ticker.pop(slot, None)
        self._last_ms.pop(slot, None)

    def trades(self, slot: int, symbol: str, trades: Iterable[Any], recv_ns: int) -> list[tuple[Tick, int]]:
        """The usable ticks among ``trades`` in time order, each with the trades missed before it
        (0 when none); bad ones counted and skipped, duplicates counted and dropped."""
        out: list[tuple[Tick, int]] = []
        rows: list[tuple[int, int | None, str | None, Any]] = []
        for trade in trades:
            if not isinstance(trade, Mapping):
                self.counters.bad_message("not a trade", trade)
                continue
            if trade.get("symbol") not in (symbol, None):
                self.counters.bad_message("another symbol", trade)
                continue
            raw_id = trade.get("id")
            number = trade_id(raw_id)
            text = None if number is not None or raw_id is None else str(raw_id)[:64]
            ts = trade.get("timestamp")
            order = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
            rows.append((order, number, text, trade))
        if len(rows) > 1:  # ccxt keeps the exchange's order; some send the newest first
            rows.sort(key=lambda r: (r[0], -1 if r[1] is None else r[1]))
        for ms, number, text, trade in rows:
            # the id first: a trade sent again is a duplicate (counted once as bad, not twice), and a
            # bad trade still used its id, so the next one is no gap
            missing = 0
            if number is not None:
                missing = self.sequencer.check(slot, number)
                if missing < 0 and ms > self._last_ms.get(slot, _INT64):
                    self._renumber(slot, symbol, number)
                    missing = self.sequencer.check(slot, number)
                if missing < 0:
                    self.counters.duplicates += 1
                    continue
                if not self.sequential:
                    missing = 0
            elif text is not None and self._seen(slot, text):
                self.counters.duplicates += 1
                continue
            tick = self._tick(slot, trade, recv_ns, -1 if number is None else number)
            if tick is not None:
                self._last_ms[slot] = ms
                out.append((tick, missing))
            elif missing:
                self.counters.gaps += missing  # (the trades before a bad one were missed all the same)
        return out

    def _tick(self, slot: int, trade: Mapping[str, Any], recv_ns: int, tid: int) -> Tick | None:
        bad = self.counters.bad_message
        price, size = _number(trade.get("price")), _number(trade.get("amount"))
        if not (price > 0.0 and price < math.inf):
            bad("bad price", trade)
            return None
        if not (size >= 0.0 and size < math.inf):
            bad("bad size", trade)
            return None
        ts = trade.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _INT64 // MS:
            bad("bad time", trade)
            return None
        return (slot, ts * MS, recv_ns, price, size, _SIDE.get(str(trade.get("side")), 0), tid)

    def _renumber(self, slot: int, symbol: str, number: int) -> None:
        if slot not in self._renumbered:
            self._renumbered.add(slot)
            log.warning("%s: %s: trade ids start again at %d (after %d), with later times: the exchange "
                        "renumbered its trades; the sequence restarts there", self.exchange, symbol, number,
                        self.sequencer.last.get(slot, -1))
        self.renumberings += 1
        self.sequencer.forget(slot)

    def _seen(self, slot: int, text: str) -> bool:
        recent = self._recent.get(slot)
        if recent is None:
            recent = self._recent[slot] = (deque(), set())
        order, ids = recent
        if text in ids:
            return True
        order.append(text)
        ids.add(text)
        if len(order) > RECENT_IDS:
            ids.discard(order.popleft())
        return False

    def ticker(self, slot: int, symbol: str, ticker: Any, recv_ns: int) -> Tick | None:
        """A tick from a ticker (an exchange without a trade stream): its last price at its time, with
        no size, because a ticker's volume is a rolling 24-hour figure, not a trade's; None when it is
        bad (counted) or did not change."""
        bad = self.counters.bad_message
        if not isinstance(ticker, Mapping):
            bad("not a ticker", ticker)
            return None
        if ticker.get("symbol") not in (symbol, None):
            bad("another symbol", ticker)
            return None
        price = _number(ticker.get("last"))
        if not (price > 0.0 and price < math.inf):
            bad("bad ticker price", ticker)
            return None
        ts = ticker.get("timestamp")
        ts_ns = ts * MS if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts <= _INT64 // MS \
            else recv_ns
        if self._last_ticker.get(slot) == (ts_ns, price):
            return None
        self._last_ticker[slot] = (ts_ns, price)
        return (slot, ts_ns, recv_ns, price, 0.0, 0, -1)
