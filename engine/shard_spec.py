"""A shard setting (``--shard``, ``[bus] shard``): ``K/N``, ``auto`` or nothing. Read by the config's
check and by ``engine.bus.shards``, which says what the shares are; here, apart from the bus, because
the config (which the runtime imports) must not import the bus."""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"


class ShardError(ValueError):
    """A shard setting that cannot be used: one line naming where it came from."""


@dataclass(frozen=True)
class Shard:
    """``K/N`` (``index`` is K, 1-based; ``count`` is N), or ``auto`` (``count`` 0)."""

    index: int = 0
    count: int = 0

    @property
    def auto(self) -> bool:
        return self.count == 0

    def __str__(self) -> str:
        return AUTO if self.auto else f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard | None:
    """``""`` (every symbol: None), ``"auto"``, or ``"K/N"`` with 1 <= K <= N; else ``ShardError`` saying
    what is allowed (the caller adds where the value came from)."""
    text = text.strip()
    if not text:
        return None
    if text.lower() == AUTO:
        return Shard()
    k, slash, n = text.partition("/")
    if not slash or not k.strip().isdigit() or not n.strip().isdigit():
        raise ShardError(f"must be K/N (this engine's share K of N, e.g. 1/2) or auto, got {text!r}")
    index, count = int(k), int(n)
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"must be K/N with 1 <= K <= N (shares are numbered from 1), got {text!r}")
    return Shard(index, count)
