"""Helpers for the functional tests: waiting on conditions, never on fixed sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot

WAIT_STEPS = 1200
"""Polls of 0.1 s before a wait gives up: generous, because the first engine use in a fresh checkout
compiles the numba kernels (30-60 s); later runs load them from the cache."""


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], what: str,
                   steps: int = WAIT_STEPS) -> None:
    """Let the app run until ``condition()`` holds, polling every 0.1 s; fail naming ``what``."""
    for _ in range(steps):
        if condition():
            return
        await pilot.pause(0.1)
    assert condition(), f"timed out waiting for {what}"


def record_notifications(app: App[Any], monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """(title, message, severity) of every notification the app shows from now on."""
    seen: list[tuple[str, str, str]] = []
    notify = app.notify

    def spy(message: str, *, title: str = "", severity: Any = "information", **kwargs: Any) -> None:
        seen.append((title, str(message), str(severity)))
        notify(message, title=title, severity=severity, **kwargs)

    monkeypatch.setattr(app, "notify", spy)
    return seen
