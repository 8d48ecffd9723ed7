"""Stand-ins for time shared by the tests: nothing here waits on the wall clock."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that moves only when someone sleeps on it; the sleeps are recorded. Call it for the time
    (``clock()``), await ``clock.sleep(s)`` where the code under test would sleep."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
