"""The threads that run the engine's work off the event loop: :class:`EngineThread` owns the engine while
a runtime runs (every batch and every read of it, in order), and :func:`in_daemon_thread` runs a slow
start (building the engine compiles its kernels on a first run) that a stop must not wait for.

Daemon threads, not ``asyncio.to_thread``: quitting must not wait for a first-run kernel compile to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["LATE_CALL_WAIT_S", "EngineThread", "in_daemon_thread"]

T = TypeVar("T")

LATE_CALL_WAIT_S = 120.0
"""How long a call made after the engine thread was stopped waits for it to finish its last batch (a
first-run kernel compile takes up to a minute on a small machine) before giving up with an error."""


class EngineThread:
    """One daemon thread that runs submitted calls in order and hands results back to the event loop.

    After :meth:`stop`, a :meth:`call` waits for the thread to finish what it was running (at most
    ``LATE_CALL_WAIT_S``) and then runs in the caller's thread: whatever owns the engine is never run
    by two threads at once."""

    def __init__(self, name: str = "tickdeck-engine") -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()  # a call is queued before the stop, or runs after the thread ended
        self._stopping = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while (item := self._calls.get()) is not None:
                fn, future = item
                result: Any = None
                error: BaseException | None = None
                try:
                    result = fn()
                except BaseException as exc:  # handed to the awaiting task, which decides
                    error = exc
                try:
                    future.get_loop().call_soon_threadsafe(_settle, future, result, error)
                except RuntimeError:  # the loop closed while we worked: nobody is waiting any more
                    return
        finally:
            self._done.set()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            queued = not self._stopping
            if queued:
                future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
                self._calls.put((functools.partial(fn, *args), future))
        if queued:
            return await future
        if not self._done.is_set() and not await asyncio.to_thread(self._done.wait, LATE_CALL_WAIT_S):
            raise RuntimeError(f"the engine thread was still busy {LATE_CALL_WAIT_S:.0f} s after it was "
                               "stopped")
        return fn(*args)

    def stop(self) -> None:
        """End the thread once the calls already queued have run."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._calls.put(None)

    @property
    def finished(self) -> bool:
        """Whether the thread has stopped (and runs nothing any more)."""
        return self._done.is_set()


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in a new daemon thread; its result or exception in the returned future (of the
    running loop). For a slow start (building the engine compiles its kernels on a first run) that a
    stop must not wait for: ``asyncio.to_thread`` would hold the loop's shutdown, and the exit, until it
    ends. If the loop has closed by then, the outcome is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=work, name=f"tickdeck-{getattr(fn, '__name__', 'start')}", daemon=True).start()
    return future
