"""The console's first frame while the engine starts: a first run's kernel compile shows its progress
(n of N, the kernel, the time) in the watchlist's message, then the rows replace it.

The compile is a stand-in that reports kernels the way ``engine.compile_progress`` counts numba's
events and then holds until the test lets it go (a wait on an event, with a timeout), so the test is
fast and sees the message mid-compile; the runtime it then builds is the real one.
"""

from __future__ import annotations

import threading

import pytest

from console import startup
from console.app import build_app
from engine.compile_progress import CompileProgress
from engine.config import Config
from engine.runtime import Runtime
from tests.functional.support import wait_for


async def test_the_watchlist_shows_the_compile_progress_until_the_engine_runs(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    go_on = threading.Event()
    threads: list[str] = []

    def slow_build(config: Config, progress: CompileProgress) -> Runtime:
        threads.append(threading.current_thread().name)
        progress.total = 4
        progress.start()
        for name in ("ingest_kernel", "close_kernel"):
            progress.began(name)
            progress.ended()
        progress.began("apply_bars")
        assert go_on.wait(60), "the test never let the compile finish"
        progress.ended()
        progress.finish()
        return Runtime(config)

    monkeypatch.setattr(startup, "build_runtime", slow_build)
    app = build_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "2 of 4" in app.watchlist.message, "the compile's progress")
        message = app.watchlist.message
        assert message.startswith("starting engine: compiling its kernels (first run")
        assert "(apply_bars)" in message and " s" in message
        shown = str(app.watchlist.query_one("#watchlist-message").render())
        assert "2 of 4" in shown  # on screen, not only in the attribute
        assert threads and threads[0] != threading.main_thread().name  # built off the event loop

        go_on.set()
        await wait_for(pilot, lambda: app.watchlist.snapshot is not None, "the first snapshot")
        assert not app.watchlist.query_one("#watchlist-message").display
