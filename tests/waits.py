"""Waiting on a condition in an async test: polled, bounded, and failing with what was awaited (never a
sleep standing in for a condition, never an assertion on how long it took)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(condition: Callable[[], Any], what: str, timeout: float, every: float = 0.02) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


async def until_async(read: Callable[[], Awaitable[Any]], what: str, timeout: float,
                      every: float = 0.1) -> Any:
    """Poll the awaitable ``read()`` until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while not (got := await read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
    return got
