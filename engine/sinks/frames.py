"""What the ``websocket`` sink sends: each frame as strict JSON text (a non-finite number is ``null``),
and the snapshot frames of one snapshot, encoded once and shared by every client that wants the same
symbols (``SnapshotFrames``).

Every frame is one JSON object with a ``type``:

- ``hello``, first, on every connection: ``protocol``, ``feed`` (the publisher's feed), ``symbols``,
  ``outputs`` (indicator names of ``values``), ``interval`` and ``fps``;
- ``signal``: every signal that passes the sink's filter and the client's subscription, in detection
  order (the fields of ``Signal.to_dict()``);
- ``snapshot``, to clients that asked for them: ``at_ns``, ``ticks``, ``bars``, ``quotes`` (``symbol``,
  ``last``, ``change``, ``change_pct``, ``volume``, ``closes``, ``values``, ``bar_time``, and
  ``decimals``, the instrument's tick-size decimals when the feed knows them, else absent;
  ``previous_close``, the previous session's close, absent when unknown) and ``health``
  (the fields of ``PipelineHealth``);
- ``status``: the publisher's feed status (``feed``, ``state``, ``reason``, ``retry_in``, ``at_ns``,
  ``symbols``); the latest one is also sent after ``hello``;
- ``subscribed``: the subscription now in force, after each ``subscribe``;
- ``pong``: the answer to a ``ping``, with its ``id``;
- ``error``: the answer to a message the server did not take (``error``: ``bad_message`` for a malformed
  one, ``too_many_subscriptions`` for a refused subscription; ``message``: why).

A snapshot of 1,000 symbols is a 1.26 MB frame whose encoding took 48 ms on the event loop, the loop
that also pumps the feed; encoding it again for every distinct ``symbols`` list let a few clients stall
the service. Here each quote of a snapshot is encoded at most once, and the frame of a ``symbols`` list
is then a join of the quotes' texts (byte for byte what ``dumps(snapshot_frame(...))`` gives), built once
per list and shared by every client that has that list.

Pure Python; imports neither numpy nor the engine (the snapshot's types are only annotations).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from engine.signals.events import Signal

if TYPE_CHECKING:
    from engine.feeds.base import FeedStatus
    from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

Symbols = frozenset[str] | None
"""A client's snapshot subscription: the symbols whose quotes it gets, or None for all of them."""


def dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def signal_frame(signal: Signal) -> dict[str, Any]:
    return {"type": "signal", **signal.to_dict()}


def quote_frame(q: Quote) -> dict[str, Any]:
    frame = {"symbol": q.symbol, "last": _finite(q.last), "change": _finite(q.change),
             "change_pct": _finite(q.change_pct), "volume": _finite(q.volume),
             "closes": [_finite(c) for c in q.closes.tolist()],
             "values": {k: _finite(v) for k, v in q.values.items()}, "bar_time": int(q.bar_time)}
    if q.decimals is not None:  # absent when unknown: a frame then reads as before the field existed
        frame["decimals"] = int(q.decimals)
    if math.isfinite(q.previous_close):  # the previous session's close (day P&L); absent when unknown
        frame["previous_close"] = q.previous_close
    return frame


def health_frame(health: PipelineHealth | None) -> dict[str, Any] | None:
    if health is None:
        return None
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(health).items()}


def snapshot_frame(snapshot: MarketSnapshot, health: PipelineHealth | None,
                   symbols: Collection[str] | None = None) -> dict[str, Any]:
    """A snapshot frame, with only the quotes of ``symbols`` (all when None)."""
    quotes = [quote_frame(q) for q in snapshot.quotes if symbols is None or q.symbol in symbols]
    return {"type": "snapshot", "at_ns": int(snapshot.at_ns), "ticks": int(snapshot.ticks),
            "bars": int(snapshot.bars), "quotes": quotes, "health": health_frame(health)}


def status_frame(status: FeedStatus) -> dict[str, Any]:
    return {"type": "status", "feed": status.feed, "state": status.state, "reason": status.reason,
            "retry_in": _finite(status.retry_in), "at_ns": int(status.at_ns), "symbols": list(status.symbols)}


def error_frame(error: str, message: str) -> str:
    return dumps({"type": "error", "error": error, "message": message})


class SnapshotFrames:
    """The frames of one snapshot (with its health), one per ``symbols`` list, built on demand.

    ``frame(symbols)`` returns the same text object for the same list until ``reset`` installs the next
    snapshot. Counters: ``frames_built`` (frame texts joined) and ``quotes_encoded`` (quotes turned into
    JSON); with every client on one list, one frame is built per snapshot sent, whatever the number of
    clients. What is kept is bounded by the snapshot (one text per quote) and by the lists asked for
    since the last ``reset`` or ``keep_only``.
    """

    def __init__(self) -> None:
        self.snapshot: MarketSnapshot | None = None
        self._health = "null"
        self._quotes: dict[str, str] = {}  # symbol -> its quote's JSON, for this snapshot
        self._frames: dict[Symbols, str] = {}
        self.frames_built = 0
        self.quotes_encoded = 0

    def reset(self, snapshot: MarketSnapshot, health: PipelineHealth | None) -> None:
        """Forget the texts of the previous snapshot; the next ``frame`` calls encode ``snapshot``."""
        self.snapshot = snapshot
        self._health = dumps({"h": health_frame(health)})[5:-1]  # the health value, as dumps writes it
        self._quotes.clear()
        self._frames.clear()

    def cached(self, symbols: Symbols) -> str | None:
        """The frame for ``symbols`` if it was built already (nothing is encoded here)."""
        return self._frames.get(symbols)

    def frame(self, symbols: Symbols) -> str:
        """The frame for ``symbols``: built once per snapshot, then shared."""
        text = self._frames.get(symbols)
        if text is None:
            text = self._frames[symbols] = self._build(symbols)
            self.frames_built += 1
        return text

    def keep_only(self, wanted: Collection[Symbols]) -> None:
        """Drop the built frames of lists no client has any more (they would only hold memory)."""
        for key in [k for k in self._frames if k not in wanted]:
            del self._frames[key]

    def _build(self, symbols: Symbols) -> str:
        snapshot = self.snapshot
        if snapshot is None:
            raise RuntimeError("no snapshot to encode")
        parts: list[str] = []
        for quote in snapshot.quotes:
            if symbols is not None and quote.symbol not in symbols:
                continue
            text = self._quotes.get(quote.symbol)
            if text is None:
                text = self._quotes[quote.symbol] = dumps(quote_frame(quote))
                self.quotes_encoded += 1
            parts.append(text)
        head = dumps({"type": "snapshot", "at_ns": int(snapshot.at_ns), "ticks": int(snapshot.ticks),
                      "bars": int(snapshot.bars)})
        # the same text as dumps(snapshot_frame(...)): the keys in its order, its separators
        return f'{head[:-1]},"quotes":[{",".join(parts)}],"health":{self._health}}}'
