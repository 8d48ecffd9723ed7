"""Starting the engine behind the console's first frame, with the kernels' first compile shown.

The runtime is built in a daemon thread: on a first run (the cache is not complete) that thread first
compiles the numba kernels, which takes up to a minute, and quitting meanwhile must not wait for it
(``asyncio.to_thread`` would hold the exit until it ended). The compile's progress is a counter the
compiling thread updates (``engine.compile_progress``); the event loop reads it twice a second into
the watchlist's message ("starting engine: compiling its kernels ... 23 of 113, ..."), so no message
is posted per kernel and nothing runs on the hot path.

Nothing here imports numpy or numba on the event loop: ``engine.precompile`` and
``engine.compile_progress`` are light; ``engine.runtime`` is imported in a thread.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App

    from engine.compile_progress import CompileProgress
    from engine.config import Config
    from engine.runtime import Runtime
    from widgets.watchlist import Watchlist

STARTING = "starting engine…"
"""The watchlist's message until the first snapshot, when nothing compiles."""
POLL_S = 0.5
"""How often the message is refreshed from the counter while the runtime is built."""


def build_runtime(config: Config, progress: CompileProgress) -> Runtime:
    """Compile the kernels if the cache is not complete (counting into ``progress``), then build the
    runtime. Runs in a daemon thread."""
    from engine.precompile import compile_kernels, compiled

    if not compiled():
        compile_kernels(progress)
    from engine.precompile import compile_chart_sets
    from engine.runtime import Runtime

    runtime = Runtime(config)
    compile_chart_sets(runtime.engine.bank.names, progress)  # the detail pane's sets for this config
    return runtime


def message(progress: CompileProgress) -> str:
    """The watchlist's message while the runtime is built."""
    if not progress.started:
        return STARTING
    now = progress.now()
    if now.finished or not (now.done or now.kernel):  # done, or loading from the cache: nothing compiles
        return STARTING
    return f"starting engine: compiling its kernels (first run of this version only)\n{now.count_text()}"


async def start_runtime(app: App[Any], watchlist: Watchlist, config: Config) -> Runtime:
    """Build the runtime for ``config`` in a daemon thread, showing a first compile's progress in
    ``watchlist.message`` until the runtime is built."""
    from engine.precompile import new_progress

    progress = new_progress()

    def show() -> None:
        if watchlist.snapshot is None:
            watchlist.message = message(progress)

    timer = app.set_interval(POLL_S, show)
    try:
        await asyncio.to_thread(importlib.import_module, "engine.runtime")  # numpy, numba: off the loop
        from engine.engine_thread import in_daemon_thread

        return await in_daemon_thread(build_runtime, config, progress)
    finally:
        timer.stop()
        if watchlist.snapshot is None:
            watchlist.message = STARTING
