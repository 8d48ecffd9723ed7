"""Ring-buffer history: fixed capacity, wrap-around keeps the newest bars in order."""

from __future__ import annotations

from engine.history import BarHistory


def _push(h: BarHistory, slot: int, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        h.append(slot, i, i + 0.1, i + 0.2, i - 0.2, i + 0.05, float(i % 7))

def test_tail_before_wrap() -> None:
    h = BarHistory(capacity=3, depth=10)
    _push(h, 1, 4)
    t, bars = h.tail(1)
    assert t.tolist() == [0, 1, 2, 3]
    assert bars[:, 3].tolist() == [0.05, 1.05, 2.05, 3.05]
    assert h.size(0) == 0 and h.size(2) == 0

def test_wrap_around_keeps_newest_in_order() -> None:
    h = BarHistory(capacity=2, depth=5)
    _push(h, 0, 13)
    t, bars = h.tail(0)
    assert t.tolist() == [8, 9, 10, 11, 12]
    assert bars[:, 0].tolist() == [8.1, 9.1, 10.1, 11.1, 12.1]
    t3, _ = h.tail(0, 3)
    assert t3.tolist() == [10, 11, 12]
    assert h.size(0) == 5

def test_wrap_exactly_at_capacity_and_memory_is_fixed() -> None:
    h = BarHistory(capacity=2, depth=4)
    before = h.nbytes
    _push(h, 1, 4)
    assert h.tail(1)[0].tolist() == [0, 1, 2, 3]
    _push(h, 1, 1, start=4)
    assert h.tail(1)[0].tolist() == [1, 2, 3, 4]
    assert h.nbytes == before

def test_tail_is_a_copy() -> None:
    h = BarHistory(capacity=1, depth=4)
    _push(h, 0, 3)
    t, bars = h.tail(0)
    bars[:] = -1
    t[:] = -1
    assert h.tail(0)[0].tolist() == [0, 1, 2]
    assert h.tail(0)[1][:, 3].tolist() == [0.05, 1.05, 2.05]
