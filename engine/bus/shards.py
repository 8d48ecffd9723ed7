"""Which symbols of a feed an engine keeps: ``--shard K/N`` (a fixed share) or ``--shard auto`` (a share
of the live engines, kept in a key-value bucket by ``engine.bus.shard_keeper``).

Both use hashes that are the same in every process and on every machine (Python's ``hash()`` of a
string is salted per process, so it cannot be used):

* ``K/N``: the symbol's CRC-32 (``zlib.crc32`` of its UTF-8 bytes) modulo ``N`` is ``K - 1``. Every
  symbol is in exactly one of the ``N`` shards; ``N`` engines started with ``1/N`` ... ``N/N`` share the
  feed, with no bus needed to agree (but nothing takes over a shard whose engine stops).
* ``auto``: rendezvous (highest-random-weight) hashing over the live engines' names: a symbol goes to
  the engine whose ``weight(engine, symbol)`` (the first 8 bytes of BLAKE2b of both names) is the
  highest, ties (never seen in practice) to the smaller name. Every engine that sees the same live
  engines computes the same assignment with no message exchanged, and an engine leaving moves only its
  own symbols (each to the engine with the next highest weight); one joining takes about ``1/n`` of
  every other engine's.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence

from engine.shard_spec import AUTO, Shard, ShardError, parse_shard

__all__ = ["AUTO", "Shard", "ShardError", "assign", "in_shard", "owner", "parse_shard", "static_share",
           "weight"]


def in_shard(symbol: str, shard: Shard) -> bool:
    """Whether ``symbol`` is in the fixed share ``shard`` (``K/N``; see the module docstring)."""
    if shard.auto:
        raise ValueError("an auto shard is an assignment over the live engines: use assign()")
    return zlib.crc32(symbol.encode("utf-8")) % shard.count == shard.index - 1


def static_share(symbols: Iterable[str], shard: Shard) -> list[str]:
    """The symbols of ``symbols`` in ``shard``, in their order."""
    return [s for s in symbols if in_shard(s, shard)]


def weight(engine: str, symbol: str) -> int:
    """The rendezvous weight of ``symbol`` on ``engine``: the same in every process."""
    digest = hashlib.blake2b(f"{engine}\x00{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(symbol: str, engines: Sequence[str]) -> str:
    """The engine of ``engines`` (not empty) that holds ``symbol``."""
    return max(sorted(engines), key=lambda e: weight(e, symbol))  # max keeps the first of equals


def assign(symbols: Iterable[str], engines: Iterable[str]) -> dict[str, list[str]]:
    """Every engine's symbols (each symbol in exactly one list, in the order of ``symbols``); every
    engine has a list, possibly empty; no engines: no assignment."""
    names = sorted(set(engines))
    out: dict[str, list[str]] = {e: [] for e in names}
    if not names:
        return out
    for symbol in dict.fromkeys(symbols):
        out[owner(symbol, names)].append(symbol)
    return out
