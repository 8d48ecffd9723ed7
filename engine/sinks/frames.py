"""The broadcast protocol's frames, both ways: what the ``websocket`` sink sends (``*_frame``, encoded by
``dumps`` as strict JSON text, a non-finite number as ``null``) and what a client such as ``tickdeck
attach`` makes of them (``decode``). ``FRAMES`` names every frame type and its fields, ``QUOTE_FIELDS``
and ``HEALTH_FIELDS`` the fields inside a snapshot, and ``CLIENT_MESSAGES`` what a client may send;
PROTOCOL.md describes them for people writing a client, and a test holds it to these tables.

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
- ``symbols``: the publisher's symbols changed (a sharded engine took symbols over or gave some up):
  ``symbols`` (all of them now, as a new ``hello`` would list them), ``added`` and ``removed``; sent
  only to clients whose subscription covers every symbol (``symbols: null``);
- ``subscribed``: the subscription now in force, after each ``subscribe``;
- ``pong``: the answer to a ``ping``, with its ``id``;
- ``error``: a client message the server did not take (``bad_message``, ``too_many_subscriptions``).

Decoding is lenient where versions differ (a field a newer publisher added is ignored; one an older
publisher lacked takes its default: ``decimals``, ``previous_close``, the later health figures,
``warmup``) and strict elsewhere: anything else malformed raises ``FrameError``, and a frame type this
version does not know decodes to ``Unknown`` (skipped, not an error: a newer publisher may send more types).

A snapshot of 1,000 symbols is a 1.26 MB frame whose encoding took 48 ms on the event loop, the loop
that also pumps the feed; encoding it again for every distinct ``symbols`` list let a few clients stall
the service. ``SnapshotFrames`` encodes each quote of a snapshot at most once, and the frame of a
``symbols`` list is then a join of the quotes' texts (byte for byte what ``dumps(snapshot_frame(...))``
gives), built once per list and shared by every client that has that list.

Decoding such a frame (1,000 symbols, 1.34 MB) with ``json`` and a check of every number took 34 ms on
the event loop of an attached console, four times a second for a fleet of four engines. A snapshot
frame as this module writes it (it starts ``{"type":"snapshot"``) is decoded first by msgspec into typed
structs, which checks the types in C while parsing: 7.0 ms (``python -m bench.decode``, both ways in one
process, load average 2.0). Only a success counts: anything it refuses (a bool for a number, a float
``bar_time``, ``NaN``, a huge integer) is decoded again the lenient way below, so the outcome is that
way's in every case.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, get_args

import msgspec
import numpy as np

from engine.feeds.base import FeedStatus, State
from engine.precision import MAX_DECIMALS
from engine.signals.events import Signal
from engine.snapshot import MarketSnapshot, PipelineHealth, Quote

PROTOCOL = 1
"""The version ``hello`` announces."""

SIGNAL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Signal))
HEALTH_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PipelineHealth))
QUOTE_FIELDS: tuple[str, ...] = ("symbol", "last", "change", "change_pct", "volume", "closes", "values",
                                 "bar_time", "decimals", "previous_close")
FRAMES: dict[str, tuple[str, ...]] = {
    "hello": ("protocol", "feed", "symbols", "outputs", "interval", "fps"),
    "signal": SIGNAL_FIELDS,
    "snapshot": ("at_ns", "ticks", "bars", "quotes", "health"),
    "status": ("feed", "state", "reason", "retry_in", "at_ns", "symbols"),
    "symbols": ("symbols", "added", "removed"),
    "subscribed": ("symbols", "rules", "snapshots"),
    "pong": ("id",),
    "error": ("error", "message"),
}
"""Every frame type the server sends, with its fields after ``type``, in the order they are written."""
CLIENT_MESSAGES: dict[str, tuple[str, ...]] = {
    "subscribe": ("symbols", "rules", "snapshots"),
    "ping": ("id",),
}
"""What a client may send: ``op`` and these keys (all optional)."""
ERRORS: tuple[str, ...] = ("bad_message", "too_many_subscriptions")
"""The values of an ``error`` frame's ``error``."""
STATES: tuple[str, ...] = get_args(State)

Symbols = frozenset[str] | None
"""A client's snapshot subscription: the symbols whose quotes it gets, or None for all of them."""


class FrameError(ValueError):
    """A frame that cannot be decoded; ``kind`` is its type (``"?"`` when it is not a JSON object)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Hello:
    feed: str
    symbols: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    interval: str = ""
    fps: float = 0.0
    protocol: int = PROTOCOL


@dataclass(frozen=True, slots=True)
class SymbolsChanged:
    """The publisher's symbols now (``symbols``), and how they differ from what it said before."""

    symbols: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    market: MarketSnapshot
    health: PipelineHealth | None


@dataclass(frozen=True, slots=True)
class Subscription:
    symbols: Symbols = None
    rules: frozenset[str] | None = None
    snapshots: bool = False


@dataclass(frozen=True, slots=True)
class Pong:
    id: Any


@dataclass(frozen=True, slots=True)
class Error:
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


Frame = Hello | Signal | Snapshot | FeedStatus | SymbolsChanged | Subscription | Pong | Error | Unknown


# --- encoding ------------------------------------------------------------------------------------------

def dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def hello_frame(hello: Hello) -> dict[str, Any]:
    return {"type": "hello", "protocol": hello.protocol, "feed": hello.feed, "symbols": list(hello.symbols),
            "outputs": list(hello.outputs), "interval": hello.interval, "fps": hello.fps}


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


def symbols_frame(change: SymbolsChanged) -> dict[str, Any]:
    return {"type": "symbols", "symbols": list(change.symbols), "added": list(change.added),
            "removed": list(change.removed)}


def subscribed_frame(sub: Subscription) -> dict[str, Any]:
    return {"type": "subscribed", "symbols": _listed(sub.symbols), "rules": _listed(sub.rules),
            "snapshots": sub.snapshots}


def pong_frame(id: Any) -> dict[str, Any]:
    return {"type": "pong", "id": id}


def error_frame(error: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": error, "message": message}


def subscribe_message(sub: Subscription) -> dict[str, Any]:
    """What a client sends to get ``sub``."""
    return {"op": "subscribe", "symbols": _listed(sub.symbols), "rules": _listed(sub.rules),
            "snapshots": sub.snapshots}


def _listed(names: Collection[str] | None) -> list[str] | None:
    return None if names is None else sorted(names)


# --- decoding ------------------------------------------------------------------------------------------

def decode(raw: str | bytes) -> Frame:
    """The frame ``raw`` holds; ``FrameError`` when it is malformed."""
    if raw[:_HEAD_LEN] in _SNAPSHOT_HEADS and (fast := _fast_snapshot(raw)) is not None:
        return fast
    kind = "?"
    try:
        msg = json.loads(raw)
        if not isinstance(msg, dict):
            raise TypeError("not a JSON object")
        kind = str(msg.get("type"))
        decoder = _DECODERS.get(kind)
        return Unknown(kind) if decoder is None else decoder(msg)
    # OverflowError: Infinity or a huge number where an int goes; RecursionError: deep nesting
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        if isinstance(exc, FrameError):
            raise
        raise FrameError(kind, f"bad {kind} frame" if kind != "?" else "not a JSON object") from None


def _float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | None):
        raise TypeError(f"not a number: {type(x).__name__}")
    return math.nan if x is None else float(x)


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"not an integer: {type(x).__name__}")
    return int(x)


def _names(x: Any) -> tuple[str, ...]:
    if not isinstance(x, list):
        raise TypeError("not a list of names")
    return tuple(str(s) for s in x)


def _name_set(x: Any) -> frozenset[str] | None:
    return None if x is None else frozenset(_names(x))


def decode_hello(msg: Mapping[str, Any]) -> Hello:
    return Hello(feed=str(msg.get("feed") or ""), symbols=_names(msg["symbols"]),
                 outputs=_names(msg.get("outputs", [])), interval=str(msg.get("interval") or ""),
                 fps=_float(msg.get("fps", 0.0)), protocol=_int(msg.get("protocol", PROTOCOL)))


def decode_quote(q: Mapping[str, Any]) -> Quote:
    closes = np.array([_float(c) for c in q["closes"]], dtype=np.float64)
    closes.flags.writeable = False
    return Quote(symbol=str(q["symbol"]), last=_float(q["last"]), change=_float(q["change"]),
                 change_pct=_float(q["change_pct"]), volume=_float(q["volume"]), closes=closes,
                 values={str(k): _float(v) for k, v in q["values"].items()}, bar_time=_int(q["bar_time"]),
                 decimals=_decimals(q.get("decimals")), previous_close=_price(q.get("previous_close")))


def _price(x: Any) -> float:
    """A positive finite number, else NaN (absent: a publisher older than the field, or unknown)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < math.inf
    return float(x) if ok else math.nan


def _decimals(x: Any) -> int | None:
    """A quote's tick-size decimals; absent (a publisher older than the field), or not a small
    non-negative integer, reads as unknown: the console then derives them from the price."""
    return x if isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_DECIMALS else None


_HEALTH = {f.name: f for f in dataclasses.fields(PipelineHealth)}


def decode_health(h: Mapping[str, Any] | None) -> PipelineHealth | None:
    """Fields this version knows, typed like their defaults; others (a newer publisher's) are ignored."""
    if h is None:
        return None
    values: dict[str, Any] = {}
    for name, f in _HEALTH.items():
        if name in h and h[name] is not None:
            value, default = h[name], f.default
            values[name] = (float(value) if isinstance(default, float)
                            else str(value) if isinstance(default, str) else int(value))
    return PipelineHealth(**values)


def decode_snapshot(msg: Mapping[str, Any]) -> tuple[MarketSnapshot, PipelineHealth | None]:
    snapshot = MarketSnapshot(at_ns=_int(msg["at_ns"]), quotes=tuple(decode_quote(q) for q in msg["quotes"]),
                              ticks=_int(msg.get("ticks", 0)), bars=_int(msg.get("bars", 0)))
    return snapshot, decode_health(msg.get("health"))


def decode_status(msg: Mapping[str, Any]) -> FeedStatus:
    """The publisher's feed status, as it sent it (its own feed's name)."""
    state = msg["state"]
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    at_ns = msg.get("at_ns")
    return FeedStatus(str(msg["feed"]), state, str(msg.get("reason") or ""),
                      retry_in=_float(msg.get("retry_in") or 0.0),
                      at_ns=_int(at_ns) if at_ns else time.time_ns(),  # absent: as it arrives
                      symbols=_names(msg.get("symbols") or []))


def decode_symbols(msg: Mapping[str, Any]) -> SymbolsChanged:
    """``added`` and ``removed`` may be absent (empty); ``symbols`` may not: it is what the frame says."""
    return SymbolsChanged(_names(msg["symbols"]), _names(msg.get("added") or []),
                          _names(msg.get("removed") or []))


def decode_subscribed(msg: Mapping[str, Any]) -> Subscription:
    snapshots = msg["snapshots"]
    if not isinstance(snapshots, bool):
        raise TypeError("snapshots must be true or false")
    return Subscription(_name_set(msg["symbols"]), _name_set(msg["rules"]), snapshots)


class _QuoteStruct(msgspec.Struct):
    """A quote as ``quote_frame`` writes it (a null number: NaN)."""

    symbol: str
    last: float | None
    change: float | None
    change_pct: float | None
    volume: float | None
    closes: list[float | None]
    values: dict[str, float | None]
    bar_time: int
    decimals: Any = None  # read as _decimals reads it
    previous_close: Any = None  # read as _price reads it


class _SnapshotStruct(msgspec.Struct):
    type: str
    at_ns: int
    quotes: list[_QuoteStruct]
    ticks: int = 0
    bars: int = 0
    health: Any = None  # read by decode_health


_SNAPSHOT_HEADS = ('{"type":"snapshot"', b'{"type":"snapshot"')  # how dumps writes one
_HEAD_LEN = len(_SNAPSHOT_HEADS[0])
_snapshot_decoder = msgspec.json.Decoder(_SnapshotStruct)


def _fast_snapshot(raw: str | bytes) -> Snapshot | None:
    """The snapshot frame ``raw`` holds, decoded by msgspec; None when that way refuses it or fails
    anywhere (the lenient way then decides: the module docstring)."""
    nan = math.nan
    try:
        m = _snapshot_decoder.decode(raw)
        if m.type != "snapshot":  # a later "type" key wins, as in json.loads
            return None
        quotes = []
        for q in m.quotes:
            closes = np.array(q.closes, dtype=np.float64)  # None -> NaN
            closes.flags.writeable = False
            values: dict[str, float | None] = q.values
            if None in values.values():
                values = {k: nan if v is None else v for k, v in values.items()}
            quotes.append(Quote(
                q.symbol, nan if q.last is None else q.last, nan if q.change is None else q.change,
                nan if q.change_pct is None else q.change_pct, nan if q.volume is None else q.volume,
                closes, values, q.bar_time,  # type: ignore[arg-type]  # no None left in values
                _decimals(q.decimals), _price(q.previous_close)))
        return Snapshot(MarketSnapshot(m.at_ns, tuple(quotes), m.ticks, m.bars), decode_health(m.health))
    except (msgspec.MsgspecError, KeyError, TypeError, ValueError, AttributeError, OverflowError,
            RecursionError):
        return None


def _snapshot(msg: Mapping[str, Any]) -> Snapshot:
    return Snapshot(*decode_snapshot(msg))


def _error(msg: Mapping[str, Any]) -> Error:
    return Error(str(msg["error"]), str(msg.get("message") or ""))


def _pong(msg: Mapping[str, Any]) -> Pong:
    return Pong(msg.get("id"))


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Frame]] = {
    "hello": decode_hello,
    "signal": Signal.from_dict,
    "snapshot": _snapshot,
    "status": decode_status,
    "symbols": decode_symbols,
    "subscribed": decode_subscribed,
    "pong": _pong,
    "error": _error,
}


# --- snapshot frames shared between clients --------------------------------------------------------------

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
