"""One connection of the ``websocket`` sink (``Client``) and the messages a client may send.

A client sends JSON objects: ``{"op": "subscribe", "symbols": [...] | null, "rules": [...] | null,
"snapshots": true | false}`` (a key left out keeps its value) and ``{"op": "ping", "id": ...}``. Anything
else is a ``BadMessage``, whose text says why without quoting the client (it goes to the log).
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Iterator, Mapping
from typing import Any

from websockets.asyncio.server import ServerConnection

from engine.signals.events import Signal
from engine.sinks.frames import CLIENT_MESSAGES, Subscription, Symbols, dumps, pong_frame, subscribed_frame

MAX_NAMES = 10_000  # symbols or rules in one subscription
SUBSCRIBE_KEYS = ("op", *CLIENT_MESSAGES["subscribe"])


class BadMessage(ValueError):
    """A client message that cannot be used; the message says why (it never quotes the client)."""


class Client:
    """One connection: its subscription, its bounded queue, its pending snapshot and its writer."""

    def __init__(self, ws: ServerConnection, number: int) -> None:
        self.ws = ws
        self.number = number
        self.peer = peer(ws)
        self.queue: collections.deque[str] = collections.deque()
        self.frame: str | None = None  # the newest snapshot not yet sent (replaced, never queued)
        self.wants_frame = False  # subscribed to snapshots: the latest is due at the next frame
        self.wake = asyncio.Event()
        self.in_flight = False
        self.sending_since = 0.0  # time.monotonic() when the frame in flight was handed to the connection
        self.symbols: Symbols = None
        self.rules: frozenset[str] | None = None
        self.snapshots = False
        self.bad = 0
        self.refusals = 0  # subscriptions refused (too many distinct lists)
        self.gone = False  # disconnected by the server (too slow, too many bad messages) or closed
        self.writer: asyncio.Task[None] | None = None

    @property
    def subscription(self) -> Subscription:
        return Subscription(self.symbols, self.rules, self.snapshots)

    def wants(self, signal: Signal) -> bool:
        return ((self.symbols is None or signal.symbol in self.symbols)
                and (self.rules is None or signal.rule in self.rules))

    @property
    def idle(self) -> bool:
        return not self.queue and not self.in_flight

    def stuck(self, now: float, after: float) -> bool:
        """True when a frame has been on its way for ``after`` seconds: the client is not reading."""
        return self.in_flight and now - self.sending_since >= after


class SnapshotLists:
    """The distinct ``symbols`` lists that take snapshots (each costs one frame built per snapshot), with
    how many clients have each; at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_subscriptions must be >= 1, got {limit!r}")
        self.limit = limit
        self.refused = 0
        self._clients: collections.Counter[Symbols] = collections.Counter()

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Symbols]:
        return iter(self._clients)

    def move(self, old: Subscription, new: Subscription) -> bool:
        """Account for a client going from ``old`` to ``new``; False (nothing changed) when ``new`` would
        be one list too many."""
        was = old.symbols if old.snapshots else _NONE
        will = new.symbols if new.snapshots else _NONE
        if was == will:
            return True
        if will is not _NONE and will not in self._clients:
            freed = 1 if was is not _NONE and self._clients[was] == 1 else 0
            if len(self._clients) - freed >= self.limit:
                self.refused += 1
                return False
        if was is not _NONE:
            self.leave(was)
        if will is not _NONE:
            self._clients[will] += 1
        return True

    def leave(self, symbols: Symbols) -> None:
        """A client with this list gone (or no longer taking snapshots)."""
        self._clients[symbols] -= 1
        if self._clients[symbols] <= 0:
            del self._clients[symbols]


_NONE: Any = object()  # "takes no snapshots", distinct from None (every symbol)


def peer(ws: ServerConnection) -> str:
    """``host:port`` of the client, for log lines."""
    try:
        address = ws.remote_address
    except Exception:  # a transport already gone
        return "?"
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def peer_host(ws: ServerConnection) -> str:
    """The client's IP address alone: what refusals are counted and throttled by."""
    try:
        address = ws.remote_address
    except Exception:
        return "?"
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def parse(raw: str | bytes) -> dict[str, Any]:
    """A client message as a dict with an ``op``, or BadMessage."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadMessage("not JSON") from None
    except RecursionError:
        raise BadMessage("nested too deeply") from None
    if not isinstance(msg, dict):
        raise BadMessage("a message must be a JSON object")
    op = msg.get("op")
    if not isinstance(op, str) or op not in CLIENT_MESSAGES:
        shown = repr(op)[:40] if isinstance(op, str) else type(op).__name__
        raise BadMessage(f"unknown op {shown}; known: {', '.join(CLIENT_MESSAGES)}")
    return msg


def pong(msg: Mapping[str, Any]) -> str:
    """The answer to a ping: its ``id`` back as it came, which must be strict JSON."""
    try:  # no NaN, no lone surrogate
        text = dumps(pong_frame(msg.get("id")))
        text.encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise BadMessage("'id' of a ping must be JSON that can be sent back as it is (no NaN, "
                         "Infinity or lone surrogate)") from None
    return text


def subscription(msg: Mapping[str, Any], current: Subscription) -> Subscription:
    """The subscription a ``subscribe`` message asks for (keys left out keep ``current``'s values)."""
    unknown = sorted(str(k)[:40] for k in msg if k not in SUBSCRIBE_KEYS)
    if unknown:
        raise BadMessage(f"unknown key {unknown[0]!r} in subscribe; allowed: symbols, rules, snapshots")
    symbols = names(msg, "symbols") if "symbols" in msg else current.symbols
    rules = names(msg, "rules") if "rules" in msg else current.rules
    snapshots = msg.get("snapshots", current.snapshots)
    if not isinstance(snapshots, bool):
        raise BadMessage("'snapshots' must be true or false")
    return Subscription(symbols, rules, snapshots)


def subscribed(sub: Subscription) -> str:
    return dumps(subscribed_frame(sub))


def names(msg: Mapping[str, Any], key: str) -> frozenset[str] | None:
    value = msg[key]
    if value is None:
        return None
    what = f"{key!r} must be a list of names, or null for all"
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise BadMessage(f"{what} (at most {MAX_NAMES:,})")
    if not all(isinstance(v, str) and v for v in value):
        raise BadMessage(f"{what}; every name must be a non-empty string")
    if not all(_sendable(v) for v in value):  # echoed in ``subscribed``: it must encode as UTF-8
        raise BadMessage(f"{what}; a name must not hold a lone surrogate (\\ud800-\\udfff)")
    return frozenset(value)


def _sendable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
