"""The bars other engines published on the bus, as history: what lets an engine that takes a symbol over
continue its indicators instead of starting them again.

:class:`BusBars` is a bar store for the live feeds' history loader (``engine.backfill.loader.BarStore``:
``load`` is called in a worker thread): a symbol's closed bars from the ``TICKDECK_BARS`` stream (the
departed engine's, history and live), merged over what the local bar store holds (the bus's bar wins
where both have one). The loader then asks the service's REST history only for what comes after the
last of them, up to the forming bar, and the seam with the live trades is the usual one, so the taker's
indicators see the same bars, in the same order, as the engine that held the symbol before.

The read is bounded: one ephemeral JetStream consumer on the symbol's subject from the start of the span
the loader asks for (by the messages' store time: a bar is stored after it closes, so every bar from that
start on is in it), at most ``MAX_READ`` messages per bar wanted, ``READ_S`` seconds in all. A bus that
does not answer in time is logged and read as empty: the history then comes from the store and REST.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.subjects import BARS_STREAM, bar_subject
from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.backfill.loader import BarStore

log = logging.getLogger("tickdeck.bus")

READ_S = 10.0  # one symbol's read, in all
FETCH = 256  # messages asked for at once
MAX_READ = 4  # messages read per bar wanted at most (a bar published again by a taker is stored again)
SLACK_NS = 5 * 10**9  # read from this much before the span: a bar stored at its close, clocks apart


async def read_bars(js: Any, feed: str, interval: str, symbol: str, since_ns: int, limit: int) -> np.ndarray:
    """``symbol``'s bars with an open time from ``since_ns`` on in the bar stream, ascending, one per open
    time (the last stored wins), ``limit`` at most (the newest); ``BAR_DTYPE`` with ``sym`` 0."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    start = datetime.fromtimestamp(max(since_ns - SLACK_NS, 0) / 1e9, UTC)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start,
                            ack_policy=AckPolicy.NONE, inactive_threshold=READ_S, mem_storage=True)
    sub = await js.pull_subscribe(bar_subject(feed, interval, symbol), stream=BARS_STREAM, config=config)
    found: dict[int, tuple[float, float, float, float, float]] = {}
    try:
        left = min(int((await sub.consumer_info()).num_pending or 0), max(limit, 1) * MAX_READ)
        while left > 0:
            msgs = await sub.fetch(min(left, FETCH), timeout=READ_S)
            left -= len(msgs)
            for msg in msgs:
                try:
                    frame = json.loads(msg.data)
                    t = int(frame["t"])
                    row = (float(frame["open"]), float(frame["high"]), float(frame["low"]),
                           float(frame["close"]), float(frame["volume"]))
                except (ValueError, KeyError, TypeError):  # not ours to judge: skipped, the REST fills
                    log.debug("bus: %s: an unreadable bar frame skipped", symbol)
                    continue
                if t >= since_ns and frame.get("symbol") == symbol:
                    found[t] = row
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # the ephemeral consumer goes away by itself after READ_S
            log.debug("bus: unsubscribing a bar read failed", exc_info=True)
    times = sorted(found)[-max(limit, 0):] if limit > 0 else []
    out = np.zeros(len(times), dtype=BAR_DTYPE)
    for i, t in enumerate(times):
        out[i]["t"] = t
        out[i]["open"], out[i]["high"], out[i]["low"], out[i]["close"], out[i]["volume"] = found[t]
    out["trades"] = -1
    return out


class BusBars:
    """A ``BarStore`` over the bus (see the module docstring); ``js`` returns the current JetStream
    context (None while the bus is away), used on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, js: Callable[[], Any], interval: str, limit: int,
                 fallback: BarStore | None = None) -> None:
        self.loop = loop
        self.js = js
        self.interval = interval
        self.limit = limit
        self.fallback = fallback
        self.reads = 0  # symbols read from the bus
        self.bars = 0  # bars they gave
        self.failed = 0  # reads that failed (timed out, the bus away)

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        stored = (self.fallback.load(feed, symbol, interval_ns, since_ns) if self.fallback is not None
                  else np.zeros(0, dtype=BAR_DTYPE))
        js = self.js()
        if js is None:
            return stored
        future = asyncio.run_coroutine_threadsafe(
            read_bars(js, feed, self.interval, symbol, since_ns, self.limit), self.loop)
        try:
            bus = future.result(READ_S + 1.0)
        except Exception as exc:  # (TimeoutError included) the store and REST give what they have
            future.cancel()
            self.failed += 1
            log.warning("%s: %s: the bars on the bus could not be read (%s); history from the store and "
                        "the service", feed, symbol, f"{type(exc).__name__}: {exc}".rstrip(": "))
            return stored
        self.reads += 1
        self.bars += len(bus)
        if not len(stored):
            return bus
        merged = np.concatenate([stored[~np.isin(stored["t"], bus["t"])], bus])
        return merged[np.argsort(merged["t"], kind="stable")]

    def close(self) -> None:
        if self.fallback is not None and (close := getattr(self.fallback, "close", None)) is not None:
            close()
