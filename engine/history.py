"""Closed bars per symbol in fixed-capacity, preallocated ring buffers.

One block per field (``t`` and ``bars[..., o h l c v]``), one row per symbol, so a symbol's history is
contiguous and a snapshot is one or two slice copies. Memory is ``capacity * depth * 48`` bytes, fixed
at construction; nothing grows while a feed runs.
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit

FIELDS = ("open", "high", "low", "close", "volume")


@njit
def push_bar(ht, hb, head, count, s, t, o, h, l, c, v):
    depth = ht.shape[1]
    pos = head[s]
    ht[s, pos] = t
    hb[s, pos, 0] = o
    hb[s, pos, 1] = h
    hb[s, pos, 2] = l
    hb[s, pos, 3] = c
    hb[s, pos, 4] = v
    pos += 1
    if pos == depth:
        pos = 0
    head[s] = pos
    if count[s] < depth:
        count[s] += 1


class BarHistory:
    def __init__(self, capacity: int, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"history depth must be at least 1, got {depth}")
        self.capacity = capacity
        self.depth = depth
        self.t = np.zeros((capacity, depth), dtype=np.int64)
        self.bars = np.zeros((capacity, depth, 5), dtype=np.float64)
        self.head = np.zeros(capacity, dtype=np.int64)
        self.count = np.zeros(capacity, dtype=np.int64)

    def append(self, slot: int, t: int, o: float, h: float, l: float, c: float, v: float) -> None:
        push_bar(self.t, self.bars, self.head, self.count, slot, t, o, h, l, c, v)

    def __len__(self) -> int:
        return int(self.count.sum())

    def size(self, slot: int) -> int:
        return int(self.count[slot])

    def tail(self, slot: int, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the last ``n`` bars of ``slot``, oldest first: (times[n], bars[n, 5])."""
        have = int(self.count[slot])
        n = have if n is None else min(n, have)
        end = int(self.head[slot])
        idx = (np.arange(end - n, end) % self.depth) if n else np.empty(0, dtype=np.int64)
        return self.t[slot, idx], self.bars[slot, idx]  # fancy indexing copies

    def truncate(self, slot: int, before_ns: int) -> tuple[int, int]:
        """Drop the newest bars of ``slot`` that opened at or after ``before_ns`` (a refill rebuilds them);
        returns (bars kept, bars dropped). A slot's bars are in time order, so they are a suffix."""
        have = int(self.count[slot])
        end = int(self.head[slot])
        times = self.t[slot, np.arange(end - have, end) % self.depth]
        kept = int(np.searchsorted(times, before_ns, side="left"))
        self.head[slot] = (end - (have - kept)) % self.depth
        self.count[slot] = kept
        return kept, have - kept

    def reset(self, slot: int) -> None:
        self.head[slot] = 0
        self.count[slot] = 0

    @property
    def nbytes(self) -> int:
        return self.t.nbytes + self.bars.nbytes + self.head.nbytes + self.count.nbytes
