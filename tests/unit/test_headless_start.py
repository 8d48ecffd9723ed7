"""The headless service's start-up: the engine is built (a cold kernel compile takes up to a minute)
and a replay file loaded off the event loop, so a SIGTERM in that window stops the service at once."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine import headless
from engine.config import Config, load_config
from engine.tick_engine import Engine

WAIT_S = 30.0

pytestmark = pytest.mark.usefixtures("clean_env")  # (tests/conftest.py)


@pytest.fixture
def slow_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, threading.Event]]:
    """``build_engine`` that stands for a cold compile: it starts, then waits until released."""
    events = {"building": threading.Event(), "release": threading.Event(), "built": threading.Event()}
    real = headless.build_engine

    def slow(config: Config) -> Engine:
        events["building"].set()
        events["release"].wait(WAIT_S)
        try:
            return real(config)
        finally:
            events["built"].set()

    monkeypatch.setattr(headless, "build_engine", slow)
    yield events
    events["release"].set()


def test_sigterm_while_the_engine_is_built_stops_the_service_at_once(
        slow_engine: dict[str, threading.Event]) -> None:
    config = load_config(overrides={"engine.interval": "1s"}, env={})

    def stop_when_building() -> None:
        if slow_engine["building"].wait(WAIT_S):
            os.kill(os.getpid(), signal.SIGTERM)  # as systemd stops a service

    threading.Thread(target=stop_when_building, daemon=True).start()
    err = io.StringIO()
    code = headless.main(config, status_every=0, stdout_fd=None, stderr=err)
    assert not slow_engine["built"].is_set()  # it returned while the build was still under way
    assert code == 0
    lines = err.getvalue().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["event"] == "summary" and summary["stopped_by"] == "SIGTERM" and summary["exit_code"] == 0
    assert summary["started"] is False and summary["ticks"] == summary["signals"] == 0
    assert any("SIGTERM during start-up" in line for line in lines[:-1])


def test_a_build_that_fails_after_a_slow_start_is_still_a_start_up_error(
        slow_engine: dict[str, threading.Event], tmp_path: Any) -> None:
    gone = tmp_path / "gone.csv"
    config = load_config(overrides={"feed.name": "replay", "feeds.replay.file": str(gone)}, env={})
    slow_engine["release"].set()
    err = io.StringIO()
    assert headless.main(config, status_every=0, stdout_fd=None, stderr=err) == 2
    assert err.getvalue().splitlines()[-1] == f"tickdeck: {gone}: no such file"  # one line, no summary
