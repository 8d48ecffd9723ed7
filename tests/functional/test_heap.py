"""The console gives its start-up's freed heap pages back to the system once, after it has settled."""

from __future__ import annotations

import sys

import pytest

from console import heap
from console.app import build_app
from engine.config import Config
from tests.functional.support import wait_for


def test_freed_pages_inside_the_heap_are_given_back() -> None:
    """Blocks malloc serves (above Python's own small-object allocator, below the mmap threshold), every
    eighth kept: the heap cannot shrink from its top, so only the trim returns the holes' pages."""
    junk = [bytes(4_000) for _ in range(12_000)]  # ~48 MB
    kept = junk[::8]
    del junk
    assert heap.give_back() is sys.platform.startswith("linux")
    assert len(kept) == 1_500


def test_trims_are_due_at_doubling_frames_and_stop() -> None:
    assert [f for f in range(1, 5_000) if heap.due(f)] == [8, 16, 32, 64, 128, 256, 512, 1024]


async def test_the_app_trims_as_its_frames_double(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    app = build_app(config)
    monkeypatch.setattr(heap, "give_back", lambda: calls.append(None) or True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.frames > 40 and len(calls) == 3, "three trims by frame 40")
        await wait_for(pilot, lambda: app.frames > 60, "frames 41 to 60")
        assert len(calls) == 3
