"""What every signal sink implements, the per-sink filter, and the group the runtime delivers to.

A sink's life: ``start()`` (open files, connect; raises when it cannot), then ``deliver(signal)`` for
every signal, called on the event loop, so it never blocks: it filters and hands the signal to the sink's
own queue (``enqueue``). ``await drain(timeout)`` waits until everything handed over has been written
(or sent); ``await close(timeout)`` drains what it can and releases the sink's resources within
``timeout`` seconds (the headless service's stop shares one deadline between every step, so a close
that overruns is cancelled). ``stats()`` is a JSON-ready dict of counters, readable after ``close`` too
(the summary reads it then).

Pure Python (no numpy): the config is validated before anything heavy is imported.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.signals.events import Signal

log = logging.getLogger("tickdeck.sinks")

CANCEL_S = 0.1  # for a sink's close that overran its time to take its cancellation


class SinkStartError(OSError):
    """A sink that cannot start (a missing credential, a port in use). An ``OSError``, like a file that
    cannot be opened, so the headless service reports it as a start-up mistake (exit status 2)."""


@dataclass(frozen=True, slots=True)
class SignalFilter:
    """Which signals a sink takes: ``None`` for a field means any value; otherwise the signal's symbol,
    rule id and direction must each be in the given set. A warm-up signal (fired on history, not news)
    passes only when ``warmup`` is True: a restart must not flood a chat or a webhook with stale alerts."""

    symbols: frozenset[str] | None = None
    rules: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    warmup: bool = False

    def matches(self, signal: Signal) -> bool:
        return ((self.warmup or not signal.warmup)
                and (self.symbols is None or signal.symbol in self.symbols)
                and (self.rules is None or signal.rule in self.rules)
                and (self.directions is None or signal.direction in self.directions))

    @property
    def everything(self) -> bool:
        """Whether every live signal passes (warm-up ones are another matter: see ``warmup``)."""
        return self.symbols is None and self.rules is None and self.directions is None

    def describe(self) -> str:
        parts = [f"{label} {', '.join(sorted(values))}" for label, values in
                 (("symbols", self.symbols), ("rules", self.rules), ("directions", self.directions))
                 if values is not None]
        text = "; ".join(parts) or "every signal"
        return text + ("; warm-up signals too" if self.warmup else "")


ANY = SignalFilter()


class Sink(abc.ABC):
    """One destination for signals. Subclasses implement ``start``, ``enqueue``, ``drain`` and
    ``close``; ``deliver`` (the filter and the counters) is the same for all."""

    type: ClassVar[str] = "sink"

    def __init__(self, name: str, filter: SignalFilter = ANY) -> None:
        self.name = name
        self.filter = filter
        self.delivered = 0  # signals that passed the filter and were handed to ``enqueue``
        self.filtered = 0  # signals the filter turned away

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire what the sink needs (open a file, start a writer); raise if it cannot."""

    def deliver(self, signal: Signal) -> bool:
        """Filter ``signal`` and hand it over without blocking; True when the sink took it."""
        if not self.filter.matches(signal):
            self.filtered += 1
            return False
        self.delivered += 1
        self.enqueue(signal)
        return True

    @abc.abstractmethod
    def enqueue(self, signal: Signal) -> None:
        """Queue one signal that passed the filter; must not block the event loop."""

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued signal is written; True when none is left."""
        return True

    @abc.abstractmethod
    async def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for ``timeout`` seconds at most) and release the sink's resources; the
        sink takes no signal afterwards."""

    def stats(self) -> dict[str, Any]:
        return {"type": self.type, "delivered": self.delivered, "filtered": self.filtered}


class SinkGroup:
    """Every sink of a run: one ``deliver`` fans a signal out; a sink that raises is counted and logged,
    never allowed to stop the others or the runtime."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.errors: dict[str, int] = {}

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    async def start(self) -> None:
        """Start every sink in order; when one fails, close the ones already started and re-raise."""
        started: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.start()
                started.append(sink)
        except BaseException:
            await asyncio.gather(*(s.close() for s in started), return_exceptions=True)
            raise

    def deliver(self, signal: Signal) -> None:
        for sink in self.sinks:
            try:
                sink.deliver(signal)
            except Exception:
                first = sink.name not in self.errors
                self.errors[sink.name] = self.errors.get(sink.name, 0) + 1
                if first:
                    log.exception("sink %s failed to take a signal (logged once; counted after)", sink.name)

    async def drain(self, timeout: float) -> bool:
        """Drain every sink at once, ``timeout`` seconds at most; True when all of them are empty."""
        if not self.sinks:
            return True
        results = await asyncio.gather(*(s.drain(timeout) for s in self.sinks), return_exceptions=True)
        return all(r is True for r in results)

    async def close(self, timeout: float = 2.0) -> None:
        """Close every sink at once, in ``timeout`` seconds: a sink still closing then is cancelled
        (``CANCEL_S`` more at most) and logged, so one sink cannot hold up the service's exit."""
        if not self.sinks:
            return
        tasks = {asyncio.create_task(sink.close(timeout), name=f"tickdeck-close-{sink.name}"): sink
                 for sink in self.sinks}
        _, late = await asyncio.wait(tasks, timeout=max(timeout, 0.0))
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CANCEL_S)
        for task, sink in tasks.items():
            if task in late:
                log.error("sink %s had not closed %.1f s after it was asked to; it was cancelled", sink.name,
                          timeout)
            elif (exc := task.exception()) is not None:
                log.error("sink %s did not close cleanly: %s", sink.name, exc)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Every sink's figures; a sink whose ``stats`` fails is reported, not allowed to lose the others
        (the summary is the service's last word)."""
        out: dict[str, dict[str, Any]] = {}
        for sink in self.sinks:
            try:
                out[sink.name] = dict(sink.stats())
            except Exception as exc:
                log.exception("sink %s: cannot read its figures", sink.name)
                out[sink.name] = {"type": sink.type, "stats_error": f"{type(exc).__name__}: {exc}"}
            if sink.name in self.errors:
                out[sink.name]["deliver_errors"] = self.errors[sink.name]
        return out

