"""What the webhook and Telegram sinks share: ``HttpSink`` (a bounded queue, one sender task with one
``aiohttp.ClientSession``, retries, a dead-letter file) and ``DeadLetterFile``. Each sink makes its own
request (``engine.sinks.webhook``, ``engine.sinks.telegram``); the defaults are ``engine.sinks.defaults``'.

``deliver`` never blocks: it puts the signal on the sink's queue (``queue`` signals at most). One task sends
them in order, one at a time. An attempt that times out (``timeout`` s), cannot connect, or gets a 5xx or
429 answer is retried up to ``retries`` times, after an exponential backoff with jitter (``backoff`` s,
doubling up to ``max_backoff``); a delay the server asks for (``Retry-After``, in seconds or as an HTTP
date; Telegram's ``retry_after``) replaces the backoff, up to ``MAX_WAIT_S``. Any other answer (a 4xx
other than 429, a redirect) is not retried.

Nothing is dropped silently: a signal that is not delivered is appended to the dead-letter file, one JSON
line ``{"ts", "sink", "reason", "detail", "attempts", "signal"}`` (``signal`` is ``Signal.to_dict()``),
with the reason one of

- ``rejected``: the server refused it (``detail``: the status and the start of the answer);
- ``gave_up``: every attempt failed (``detail``: the last failure);
- ``queue_full``: ``queue`` signals were already waiting;
- ``shutdown``: still queued, or in flight, when the sink closed after its drain timeout (one in flight
  may have reached the server: delivery is at least once);
- ``not_running``: handed over before ``start`` or after ``close``;
- ``error``: a bug in the sink (logged once with its traceback).

The dead-letter file is written by its own thread like a jsonl sink (``JsonlSink``: whole lines, a
partial last line repaired at start, rotation at 100 MiB keeping 5 older files). It is opened (created
empty if need be) by ``start``, so a path that cannot be written is a start-up error, not a surprise
during an outage. Its writer's queue is bounded too (``LineSink.max_queue``, 100,000 lines), so a dead
letter is lost in these cases only, each counted in the sink's stats and logged:

- the writer is ``max_queue`` lines behind (the disk stopped keeping up): the newest dead letters are
  dropped (``dropped``) until it has room again; the start of each such stretch is logged as an error,
  its end with the number dropped (two lines per 100,000 dead letters at most);
- the file is not open (``not_running``: before ``start``, after ``close``): ``dropped``, logged once;
- a write fails (a full disk): ``dead_letter_errors``, logged once per errno;
- ``close`` runs out of time while the writer is stuck: logged with the number of lines left.

There is nowhere else to put them: the dead-letter file is the last resort, and it is what fell behind.

Everything a sink logs or records passes through its ``redact`` (the Telegram token is in its URL).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import email.utils
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from engine.feeds.backoff import Backoff
from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, Sink
from engine.sinks.defaults import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_QUEUE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
)
from engine.sinks.jsonl import JsonlSink

log = logging.getLogger("tickdeck.sinks")

MAX_WAIT_S = 600.0  # the longest delay a server may ask for (Retry-After, retry_after) that is honoured
MAX_ANSWER_BYTES = 64 * 1024  # of an answer's body read (a webhook or Telegram answers briefly)
_DETAIL_CHARS = 200  # of an answer kept in a dead letter's detail
_RESERVE_S = 0.2  # of ``close``'s timeout kept for writing the dead letters
USER_AGENT = "tickdeck"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: delivered (``ok``), to be retried (after ``wait`` s when the server said),
    or refused for good (``reason`` and ``detail`` go to the dead-letter file)."""

    ok: bool
    retry: bool = False
    wait: float | None = None
    reason: str = "rejected"
    detail: str = ""


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None when absent or
    unreadable. ``now`` is the Unix time to count a date from (default: the clock)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what may be logged of it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class DeadLetterFile(JsonlSink):
    """Undelivered signals with their reasons, one JSON line each, appended by a writer thread."""

    type = "dead-letter"

    def __init__(self, path: str | os.PathLike[str], *, name: str) -> None:
        super().__init__(path, name=name)
        self.overflow = 0  # dead letters dropped since the writer's queue last had room

    def add(self, record: Mapping[str, Any]) -> bool:
        """Queue one record without blocking; False when it was dropped (counted as ``dropped``): the file
        is not open, or ``max_queue`` lines are already waiting for the writer."""
        text = json.dumps(record, separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=str)
        line = (text + "\n").encode("utf-8")
        with self._cond:
            if self._thread is None or self._closing:
                self.dropped += 1
                self.log_once("closed", logging.ERROR, "%s is not open; an undelivered signal was dropped "
                              "(counted in the stats)", self.path)
                return False
            full = len(self._pending) >= self.max_queue
            overflow = self.overflow
            if full:
                self.dropped += 1
                self.overflow += 1
            else:
                self.overflow = 0
                self._pending.append(line)
                self._cond.notify_all()
            dropped = self.dropped
        # logged outside the lock, once as a stretch of drops begins and once as it ends: the queue has
        # to fill again (max_queue more dead letters) before the next stretch can begin
        if full and not overflow:
            log.error("%s is %d lines behind (the disk is not keeping up); dropping undelivered signals "
                      "until it catches up (counted as dropped in the stats)", self.path, self.max_queue)
        elif not full and overflow:
            log.warning("%s is keeping up again; %d undelivered signals were dropped meanwhile (%d in all)",
                        self.path, overflow, dropped)
        return not full


class HttpSink(Sink):
    """A sink that sends each signal with one HTTP request (see the module docstring). Subclasses make
    the request (``attempt``) and say what must never be shown (``redact``)."""

    def __init__(self, name: str, filter: SignalFilter = ANY, *, dead_letter: str | os.PathLike[str],
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF_S, max_backoff: float = DEFAULT_MAX_BACKOFF_S,
                 queue: int = DEFAULT_QUEUE, rng: random.Random | None = None) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be at least 0, got {retries}")
        if queue < 1:
            raise ValueError(f"queue must be at least 1, got {queue}")
        Backoff(backoff, max_backoff)  # checks 0 < backoff <= max_backoff
        super().__init__(name, filter)
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.queue_size = queue
        self.dead_letter = DeadLetterFile(Path(dead_letter), name=f"{name}.dead-letter")
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # tests replace it to see the delays
        self.sent = 0
        self.retried = 0  # attempts after the first, over all signals
        self.dead_lettered = 0  # signals handed to the dead-letter file's writer
        self.reasons: collections.Counter[str] = collections.Counter()  # dead letters by reason
        self._rng = rng or random.Random()
        self._queue: collections.deque[Signal] = collections.deque()
        self._current: Signal | None = None  # the signal being sent
        self._tries = 0  # attempts made for it so far
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._failing = False  # the last attempt failed: say so once, and again when it recovers
        self._logged: set[str] = set()

    # --- what subclasses implement ---------------------------------------------------------------------
    def check(self) -> None:
        """Raise ``SinkStartError`` when the sink cannot start (called first by ``start``)."""

    def session_headers(self) -> Mapping[str, str]:
        return {"User-Agent": USER_AGENT}

    @abc.abstractmethod
    async def attempt(self, session: aiohttp.ClientSession, signal: Signal) -> Outcome:
        """Send ``signal`` once. Timeouts and ``aiohttp.ClientError`` may propagate (they are retried)."""

    def redact(self, text: str) -> str:
        """``text`` with any secret removed; everything this sink logs or records passes through it."""
        return text

    @property
    def endpoint(self) -> str:
        """Where signals go, as it may be shown."""
        return ""

    # --- the sink --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None or self._closing:
            raise RuntimeError(f"sink {self.name} is already started")
        loop = asyncio.get_running_loop()  # a sink sends from the event loop it was started on
        self.check()
        self.dead_letter.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                              headers=self.session_headers())
        self._task = loop.create_task(self._run(), name=f"tickdeck-sink-{self.name}")

    def enqueue(self, signal: Signal) -> None:
        if self._task is None or self._closing:
            self._dead(signal, "not_running", "handed over while the sink was not running", 0)
        elif len(self._queue) >= self.queue_size:
            self._dead(signal, "queue_full", f"{self.queue_size} signals were already waiting", 0)
        else:
            self._queue.append(signal)
            self._idle.clear()
            self._wake.set()

    async def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                return False
        return await self.dead_letter.drain(max(deadline - time.monotonic(), 0.0))

    async def close(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            if not self._idle.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), max(timeout - _RESERVE_S, 0.0))
            # read before cancelling: no await in between, so this is exactly what was not delivered
            in_flight, queued = self._current, list(self._queue)
            self._queue.clear()
            task.cancel()
            await asyncio.wait({task})
            self._current = None
            if in_flight is not None:
                self._dead(in_flight, "shutdown", "in flight when the sink closed (it may have arrived)",
                           self._tries)
            for signal in queued:
                self._dead(signal, "shutdown", "still queued when the sink closed", 0)
            if in_flight is not None or queued:
                log.warning("sink %s: %d signals were not delivered within the %.1f s it had to close; "
                            "they are in %s", self.name, len(queued) + (in_flight is not None), timeout,
                            self.dead_letter.path)
            self._idle.set()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.dead_letter.close(max(deadline - time.monotonic(), _RESERVE_S))

    def stats(self) -> dict[str, Any]:
        pending = len(self._queue) + (self._current is not None)
        return {**super().stats(), "endpoint": self.endpoint, "sent": self.sent, "retried": self.retried,
                "dead_lettered": self.dead_lettered, "dead_letter_reasons": dict(self.reasons),
                "pending": pending, "dropped": self.dead_letter.dropped,
                "dead_letter_errors": self.dead_letter.errors, "dead_letter": str(self.dead_letter.path)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} to {self.endpoint}>"

    # --- sending -----------------------------------------------------------------------------------------
    async def _run(self) -> None:
        session = self._session
        assert session is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            signal = self._current = self._queue.popleft()
            try:
                await self._send(session, signal)
            except Exception as exc:  # a bug: the signal is kept, the sender stays alive
                self._dead(signal, "error", describe(exc), 0)
                if "bug" not in self._logged:
                    self._logged.add("bug")
                    shown = self.redact(describe(exc))
                    secret = shown != describe(exc)  # then the traceback would show it: leave it out
                    log.error("sink %s: cannot send a signal: %s (logged once)", self.name, shown,
                              exc_info=None if secret else exc)
            self._current = None

    async def _send(self, session: aiohttp.ClientSession, signal: Signal) -> None:
        backoff = Backoff(self.backoff, self.max_backoff, self._rng)
        attempts = 0
        while True:
            attempts = self._tries = attempts + 1
            try:
                outcome = await self.attempt(session, signal)
            except TimeoutError:
                outcome = Outcome(False, retry=True, detail=f"no answer within {self.timeout:g} s")
            except aiohttp.ClientError as exc:
                outcome = Outcome(False, retry=True, detail=describe(exc))
            if outcome.ok:
                self.sent += 1
                if self._failing:
                    self._failing = False
                    log.info("sink %s: delivering to %s again", self.name, self.endpoint)
                return
            if not outcome.retry:
                self._dead(signal, outcome.reason, outcome.detail, attempts)
                return
            if attempts > self.retries:
                self._dead(signal, "gave_up", f"{attempts} attempts failed; the last: {outcome.detail}",
                           attempts)
                return
            if not self._failing:
                self._failing = True
                log.warning("sink %s: %s from %s; retrying (retries and dead letters are counted in its "
                            "stats)", self.name, self.redact(outcome.detail), self.endpoint)
            self.retried += 1
            delay = backoff.next() if outcome.wait is None else min(outcome.wait, MAX_WAIT_S)
            await self.sleep(delay)

    def _dead(self, signal: Signal, reason: str, detail: str, attempts: int) -> None:
        detail = self.redact(detail)
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "sink": self.name, "reason": reason, "detail": detail, "attempts": attempts,
                  "signal": signal.to_dict()}
        self.reasons[reason] += 1
        if self.dead_letter.add(record):
            self.dead_lettered += 1
        if reason not in self._logged and reason not in ("shutdown", "not_running", "error"):
            self._logged.add(reason)
            log.error("sink %s: a signal was not delivered (%s: %s); it is in %s (further ones are counted "
                      "in the stats)", self.name, reason, detail, self.dead_letter.path)

    async def read_answer(self, response: aiohttp.ClientResponse) -> bytes:
        """The start of an answer's body (``MAX_ANSWER_BYTES`` at most)."""
        return await response.content.read(MAX_ANSWER_BYTES)


def excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:_DETAIL_CHARS] + ("..." if len(text) > _DETAIL_CHARS else "")
