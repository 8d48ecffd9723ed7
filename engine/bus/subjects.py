"""Subjects, streams and message ids of the bus (PROTOCOL.md, "The bus", describes them for clients).

Every subject starts with ``tickdeck`` and then names what it carries, the feed, the bar interval and
the symbol, so a consumer picks what it wants with NATS wildcards (``tickdeck.signals.binance.1m.*``,
``tickdeck.bars.*.*.BTCUSDT``)::

    tickdeck.signals.<feed>.<interval>.<symbol>     JetStream stream TICKDECK_SIGNALS
    tickdeck.bars.<feed>.<interval>.<symbol>        JetStream stream TICKDECK_BARS
    tickdeck.status.<feed>.<engine>                 plain subject: the engine's feed status
    tickdeck.snapshots.<feed>.<interval>.<engine>   plain subject: throttled snapshots for consoles

A name becomes one subject token (:func:`token`): letters, digits, ``_`` and ``-`` stay as they are, any
other character (``.``, ``*``, ``>``, spaces, ``/`` and ``%`` itself) is written as ``%XX`` for each of its
UTF-8 bytes, so ``BRK.B`` is ``BRK%2EB`` and every symbol is exactly one token. The ``tickdeck.shards``
prefix stays reserved; the symbol assignment of sharded engines is the key-value bucket
``TICKDECK_SHARDS`` (``engine.bus.shard_keeper``).

A signal's message id (the ``Nats-Msg-Id`` header, JetStream's de-duplication key) is made of what
identifies the signal and nothing that depends on who detected it or when: the feed, the interval (a 1m
and a 5m bar can open at the same instant), the symbol, the rule, the direction and the bar's open time.
Two engines running the same symbols therefore publish each signal under one id, and the stream keeps
the first (within its duplicate window). A bar's id is its feed, interval, symbol and open time.
"""

from __future__ import annotations

from engine.signals.events import Signal

ROOT = "tickdeck"
SIGNALS_STREAM = "TICKDECK_SIGNALS"
BARS_STREAM = "TICKDECK_BARS"
SIGNALS = f"{ROOT}.signals"
BARS = f"{ROOT}.bars"
STATUS = f"{ROOT}.status"
SNAPSHOTS = f"{ROOT}.snapshots"
SHARDS = f"{ROOT}.shards"  # reserved (the assignment of sharded engines is a key-value bucket)
MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication header (docs.nats.io, "JetStream Model Deep Dive")

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def token(name: str) -> str:
    """``name`` as one subject token (see the module docstring); the empty name is ``%``."""
    if not name:
        return "%"
    if all(c in _PLAIN for c in name):
        return name
    return "".join(c if c in _PLAIN else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in name)


def untoken(text: str) -> str:
    """The name :func:`token` made ``text`` of."""
    if text == "%":
        return ""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out += text[i].encode("utf-8")
            i += 1
    return out.decode("utf-8")


def signal_subject(feed: str, interval: str, symbol: str) -> str:
    return f"{SIGNALS}.{token(feed)}.{token(interval)}.{token(symbol)}"


def bar_subject(feed: str, interval: str, symbol: str) -> str:
    return f"{BARS}.{token(feed)}.{token(interval)}.{token(symbol)}"


def status_subject(feed: str, engine: str) -> str:
    return f"{STATUS}.{token(feed)}.{token(engine)}"


def snapshot_subject(feed: str, interval: str, engine: str) -> str:
    return f"{SNAPSHOTS}.{token(feed)}.{token(interval)}.{token(engine)}"


def signal_id(feed: str, interval: str, signal: Signal) -> str:
    """The signal's message id: the same for every engine that detects it (module docstring)."""
    return ".".join((token(feed), token(interval), token(signal.symbol), token(signal.rule),
                     signal.direction, str(int(signal.bar_time))))


def bar_id(feed: str, interval: str, symbol: str, bar_time: int) -> str:
    return ".".join((token(feed), token(interval), token(symbol), str(int(bar_time))))
