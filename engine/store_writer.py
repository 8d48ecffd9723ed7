"""Persisting the bars the engine closes: from the engine thread to the bar store, on a thread of its own.

One place persists bars: the engine calls ``Engine.on_closed`` for every bar it closes (live ticks,
history, a refill's rebuilt bars), ``BarCollector`` gathers them during one ``Runtime.process`` call
and hands them over once, and ``StoreWriter`` writes them on its thread, never on the event loop nor
on the engine thread. Its queue holds at most ``QUEUE_BATCHES`` hand-overs: a store that cannot keep up
(a stuck disk) makes the writer drop batches, counted in ``dropped`` and logged once, never slow the
engine. The writer writes whatever has queued as one transaction each time it wakes (so the bars are
on disk moments after they closed: a crash loses only those not yet written), applies the retention
every ``PRUNE_EVERY_S``, and at the end writes what is left within the time it is given.

A bar is upserted by its open time, so a bar written again (from history, or rebuilt by a refill)
replaces the stored one. One bar is never stored: a symbol's first bar when nothing came before it in
this run (no history), because it began at the first trade the feed received, not at its open, and a
stored bar is never fetched again.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from engine.store import PERSISTED_FEEDS, PRUNE_EVERY_S, BarStore, StoreError, open_store
from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.config import Config
    from engine.tick_engine import Engine

log = logging.getLogger("tickdeck.store")

QUEUE_BATCHES = 256
"""Hand-overs (one per ``Runtime.process`` call that closed bars) waiting for the writer at most."""

Batch = tuple[np.ndarray, tuple[str, ...]]  # bars (sym = index into the names), symbol names


class StoreWriter:
    """Writes closed bars of one feed and interval to a bar store, on its own daemon thread.

    ``opener`` builds the store on that thread (opening prunes, which may take a while); when it fails,
    the reason is logged and every batch is dropped.
    """

    def __init__(self, opener: Callable[[], BarStore | None], feed: str, interval_ns: int, *,
                 prune_every_s: float = PRUNE_EVERY_S) -> None:
        self.feed = feed
        self.interval_ns = int(interval_ns)
        self.prune_every_s = prune_every_s
        self.written = 0  # bars written
        self.dropped = 0  # bars dropped (queue full, store unusable, a failed write, after close)
        self.failures = 0  # writes that failed
        self.error = ""  # the last failure, for the log and the tests
        self._opener = opener
        self._queue: queue.Queue[Batch | None] = queue.Queue(QUEUE_BATCHES)
        self._pending = threading.Condition()  # guards _queued: batches queued and not yet written
        self._queued = 0
        self._closing = False
        self._warned_full = False
        self._thread = threading.Thread(target=self._serve, name="tickdeck-store", daemon=True)
        self._thread.start()

    # --- the engine thread's side ------------------------------------------------------------------
    def put(self, bars: np.ndarray, names: tuple[str, ...]) -> None:
        """Queue ``bars`` (``BAR_DTYPE``, ``sym`` an index into ``names``); never blocks."""
        if self._closing:
            self.dropped += len(bars)
            return
        with self._pending:
            try:
                self._queue.put_nowait((bars, names))
            except queue.Full:
                self.dropped += len(bars)
                if not self._warned_full:
                    self._warned_full = True
                    log.warning("the bar store is not keeping up (%d batches queued); closed bars are "
                                "dropped until it does (the feed's history fetches them again)",
                                QUEUE_BATCHES)
                return
            self._queued += 1

    # --- the writer thread ---------------------------------------------------------------------------
    def _serve(self) -> None:
        store = self._open()
        next_prune = time.monotonic() + self.prune_every_s
        try:
            ended = False
            while not ended:
                try:
                    first = self._queue.get(timeout=max(next_prune - time.monotonic(), 0.0))
                except queue.Empty:  # time to prune
                    first = ()  # type: ignore[assignment]
                ended = first is None
                batches = [first] if first else []
                more, end = self._drain()
                batches += more
                ended = ended or end
                self._write(store, batches)
                with self._pending:
                    self._queued -= len(batches)
                    self._pending.notify_all()
                if store is not None and not ended and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.prune_every_s
                    self._prune(store)
        finally:
            if store is not None:
                try:
                    store.close()
                except StoreError as exc:
                    log.warning("%s", exc)

    def _open(self) -> BarStore | None:
        try:
            return self._opener()
        except StoreError as exc:
            self.error = str(exc)
        except Exception as exc:  # anything else opening raised: the run goes on without a store
            self.error = f"cannot open the bar store: {type(exc).__name__}: {exc}"
        log.warning("%s; closed bars are not kept", self.error)
        return None

    def _drain(self) -> tuple[list[Batch], bool]:
        """Everything queued now, and whether the end (``close``) was among it."""
        out: list[Batch] = []
        ended = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out, ended
            if item is None:
                ended = True
            else:
                out.append(item)

    def _write(self, store: BarStore | None, batches: list[Batch]) -> None:
        if not batches:
            return
        count = sum(len(bars) for bars, _ in batches)
        if store is None:
            self.dropped += count
            return
        series = []
        for bars, names in batches:
            for code in np.unique(bars["sym"]).tolist():
                mine = bars[bars["sym"] == code]
                series.append((self.feed, names[code], self.interval_ns, mine))
        try:
            self.written += store.append_many(series)
        except StoreError as exc:  # a full disk, a store locked by another process for too long
            self.failures += 1
            self.dropped += count
            if self.error != str(exc):
                log.warning("%s; %d closed bars were not kept", exc, count)
            self.error = str(exc)

    def _prune(self, store: BarStore) -> None:
        try:
            store.prune()
        except StoreError as exc:
            log.warning("%s", exc)

    # --- the end -------------------------------------------------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued batch is written (or dropped); whether that happened in time."""
        with self._pending:
            return self._pending.wait_for(lambda: self._queued == 0, timeout)

    def close(self, timeout: float, engine: Engine | None = None) -> bool:
        """Write what is queued and close the store, waiting up to ``timeout`` seconds; whether all of it
        was done in time (if not, the thread finishes on its own, or ends with the process: SQLite then
        keeps every transaction that committed). Bars put after this are dropped. ``engine``: stop
        listening to it first."""
        if engine is not None:
            engine.on_closed = None
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._closing:
            self._closing = True
            try:
                self._queue.put(None, timeout=max(timeout, 0.0))
            except queue.Full:
                return False
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            log.warning("the bar store had not written its last bars %.1f s after the run ended; they are "
                        "written if the process lives long enough", timeout)
            return False
        return True


def persisting(config: Config, feed: str, engine: Engine) -> tuple[StoreWriter | None, BarCollector | None]:
    """A writer and the collector listening to ``engine`` when ``feed`` is live and a store is
    configured (``engine.store.PERSISTED_FEEDS`` says why the sim and a replay keep none)."""
    if feed not in PERSISTED_FEEDS or not config.history.store.strip():
        return None, None
    writer = StoreWriter(functools.partial(open_store, config), feed, engine.interval_ns)
    collector = BarCollector(writer, engine.symbols.name)
    engine.on_closed = collector.collect
    return writer, collector


class BarCollector:
    """The bars the engine closes during one ``Runtime.process`` call, handed to a writer at its end.

    ``collect`` is ``Engine.on_closed``; ``hand_over`` ends the call. Both run on the engine thread.
    ``names`` maps a slot to its symbol. A slot's first bar in this run is not handed over when it
    contains live trades and nothing came before it (see the module docstring).
    """

    def __init__(self, writer: StoreWriter, names: Callable[[int], str]) -> None:
        self.writer = writer
        self._names = names
        self._parts: list[np.ndarray] = []
        self._started: set[int] = set()  # slots that closed a bar in this run (at most the engine's)
        self.skipped = 0  # first bars not stored because they began at the feed's first trade

    def collect(self, slots: np.ndarray, t: np.ndarray, bar: np.ndarray, warm: np.ndarray) -> None:
        keep = np.ones(len(slots), dtype=bool)
        for i, slot in enumerate(slots.tolist()):
            if slot not in self._started:
                self._started.add(slot)
                if not warm[i]:  # live trades, and no bar before it: it began at the first trade
                    keep[i] = False
                    self.skipped += 1
        if not keep.any():
            return
        out = np.empty(int(keep.sum()), dtype=BAR_DTYPE)
        out["sym"] = slots[keep]
        out["t"] = t[keep]
        for j, name in enumerate(("open", "high", "low", "close", "volume")):
            out[name] = bar[keep, j]
        out["trades"] = -1
        self._parts.append(out)

    def hand_over(self) -> None:
        if not self._parts:
            return
        bars = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        self._parts = []
        slots, codes = np.unique(bars["sym"], return_inverse=True)
        bars["sym"] = codes
        self.writer.put(bars, tuple(self._names(int(s)) for s in slots.tolist()))
