"""``tickdeck bench --faults [SECONDS]``: the headless service against a feed server that keeps failing.

The service runs in this process as ``tickdeck --headless`` runs it (``engine.headless``: the runtime,
its bounded queue and engine thread, the real ``BinanceFeed`` pointed at ``feeds.binance.url``), against
``bench.servers.faults.FaultServer`` on 127.0.0.1: a fault every ``every`` seconds (a clean close, a
dropped TCP connection, a stall past the feed's stale timeout, a refused handshake), garbage frames and
duplicate trades in between, for ``SECONDS`` (180 by default). Then the books are compared, exactly:

- every trade id the server made is processed by the engine, reported as a gap, or a bad-price trade
  counted as a bad message; the gaps are exactly the trades made while no healthy connection was there;
- duplicates dropped == duplicates sent; bad messages == garbage frames sent, reason by reason;
- the feed's status sequence only takes allowed steps (connecting -> live -> stale/reconnecting ->
  connecting -> live ...), with as many of each as the faults caused; reconnects == faults + refusals;
- the service is still running at the end and stops with exit status 0.

The feed's stale timeout (``stall_s``, 15 s in production) is set to ``stall_s`` (2 s) for the run, so a
stall costs 4 s rather than 30 and a run sees many of them; nothing else is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import Figure, emit
from bench.servers.faults import FAULTS, FaultBook, FaultServer, wrong_transitions
from engine.config import CONFIG_DIR_VAR, Config, load_config
from engine.feeds.base import FeedStatus

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
DEFAULT_SECONDS = 180.0
# what the feed calls each kind of garbage the server sends
REASONS = {"malformed json": "malformed json", "truncated frame": "truncated frame",
           "unknown event type": "unknown event type", "negative price": "bad price",
           "nan price": "bad price", "unknown symbol": "unknown symbol"}


@dataclass
class FaultRun:
    """What one run did (the server's books) and saw (the client's counters and statuses)."""

    seconds: float
    book: FaultBook
    statuses: list[str] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    engine_ticks: int = 0
    stayed_up: bool = False
    exit_code: int = -1
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def bad(self) -> Counter[str]:
        return Counter(self.counters.get("bad", {}))

    def expected_bad(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for kind, n in self.book.garbage.items():
            out[REASONS[kind]] += n
        return out


def bench_config(url: str, symbols: Sequence[str], config_dir: str) -> Config:
    """Defaults plus the feed; ``config_dir`` (empty) keeps the user's own config out of the run, no bar
    store (the stand-in's bars are not the market's) and no history (the fault server has no REST side)."""
    return load_config(overrides={"feed.name": "binance", "feeds.binance.url": url,
                                  "feeds.binance.symbols": tuple(symbols), "engine.interval": "1s",
                                  "history.store": "", "history.fetch": False},
                       env={CONFIG_DIR_VAR: config_dir})


async def run_faults(seconds: float = DEFAULT_SECONDS, *, every: float = 4.0, stall_s: float = 2.0,
                     rate: float = 500.0, faults: Sequence[str] = FAULTS, garbage: int = 3,
                     duplicates: int = 3, symbols: Sequence[str] = SYMBOLS, seed: int = 7) -> FaultRun:
    from engine.feeds.ws import WsFeed
    from engine.headless import Headless, prepare

    class Recording(Headless):
        def on_status(self, status: FeedStatus) -> None:
            statuses.append(status.state)
            super().on_status(status)

    statuses: list[str] = []
    async with FaultServer(symbols, rate=rate, every=every, faults=faults, garbage=garbage,
                           duplicates=duplicates, seed=seed) as server:
        with tempfile.TemporaryDirectory() as config_dir:
            config = bench_config(server.url, symbols, config_dir)
        runtime, feed, sinks = prepare(config, stdout_fd=None)
        if not isinstance(feed.inner, WsFeed):
            raise TypeError(f"the faults bench needs a WebSocket feed, got {feed.inner.name}")
        feed.inner.stall_s = stall_s
        service = Recording(runtime, feed, sinks, status_every=0)
        await sinks.start()
        run = asyncio.create_task(service.run(), name="bench-faults-headless")
        result = FaultRun(seconds, server.book, statuses)
        try:
            await _until(lambda: "live" in statuses or run.done(), 120.0, "the feed to go live")
            server.start()
            started = time.monotonic()
            while time.monotonic() - started < seconds and not run.done():
                await asyncio.sleep(0.2)
            await server.finish()
            counters = runtime.feed.counters

            def accounted() -> bool:
                got = counters.ticks + counters.gaps + counters.bad["bad price"]
                return got >= server.book.trade_ids or run.done()

            await _until(accounted, 30.0, "the client to account for every trade id")
            # a stop cancels the feed mid-batch (what it read in the last 5 ms would be lost), so first
            # let the engine take every tick the feed counted
            await _until(lambda: runtime.engine.stats.ticks >= counters.ticks or run.done(), 30.0,
                         "the engine to process every tick")
            result.stayed_up = not run.done()
        finally:
            if not run.done():
                service.request_stop("SIGTERM")
            result.exit_code = await run
        result.counters = runtime.feed.counters.as_dict()
        result.engine_ticks = runtime.engine.stats.ticks
        result.summary = service.summary()
    return result


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def figures(r: FaultRun) -> list[Figure]:
    book, c = r.book, r.counters
    bad_price = r.bad["bad price"]
    accounted = r.engine_ticks + c["gaps"] + bad_price
    seen = Counter(r.statuses)
    expected = book.expected_statuses()
    wrong = wrong_transitions(r.statuses)
    faults = ", ".join(f"{book.faults[k]} {k}" for k in FAULTS if book.faults[k])
    shown_bad = ", ".join(f"{k} {n}" for k, n in sorted(r.bad.items()))

    def fig(key: str, label: str, value: Any, shown: str, target: str = "", ok: bool | None = None) -> Figure:
        return Figure(key, label, value, shown, target, ok)

    return [
        fig("seconds", "faulty stretch, s", r.seconds, f"{r.seconds:g}"),
        fig("faults", "faults (+ refused handshakes)", dict(book.faults), f"{faults} (+{book.refused})"),
        fig("trade_ids", "trade ids made", book.trade_ids, f"{book.trade_ids:,}"),
        fig("accounted", "  processed + gaps + bad-price trades", accounted,
            f"{r.engine_ticks:,} + {c['gaps']:,} + {bad_price}", f"= {book.trade_ids:,}",
            accounted == book.trade_ids),
        fig("feed_to_engine", "  ticks the feed passed on = ticks the engine processed", r.engine_ticks,
            f"{c['ticks']:,} / {r.engine_ticks:,}", "equal", c["ticks"] == r.engine_ticks),
        fig("gaps", "gaps reported = trades made while no healthy connection", c["gaps"],
            f"{c['gaps']:,} / {book.trades_unsent:,}", "equal",
            c["gaps"] == book.trades_unsent + book.price_garbage - bad_price),
        fig("duplicates", "duplicates dropped / sent", c["duplicates"],
            f"{c['duplicates']:,} / {book.duplicates:,}", "equal", c["duplicates"] == book.duplicates),
        fig("bad_messages", "bad messages / garbage frames sent", sum(r.bad.values()),
            f"{sum(r.bad.values()):,} / {book.garbage_total:,}", "equal, per reason",
            r.bad == r.expected_bad()),
        fig("bad_by_reason", "  by reason", dict(r.bad), shown_bad or "none"),
        fig("wrong_transitions", "wrong status transitions", wrong, str(len(wrong)) if not wrong
            else f"{len(wrong)}: {'; '.join(wrong[:3])}", "0", not wrong),
        fig("statuses", "statuses: connecting / live / stale / reconnecting", dict(seen),
            " / ".join(str(seen[s]) for s in ("connecting", "live", "stale", "reconnecting")),
            " / ".join(str(expected[s]) for s in ("connecting", "live", "stale", "reconnecting")),
            all(seen[s] == expected[s] for s in expected) and set(seen) <= set(expected)),
        fig("reconnects", "reconnects counted", c["reconnects"], str(c["reconnects"]),
            str(expected["reconnecting"]), c["reconnects"] == expected["reconnecting"]),
        fig("stayed_up", "headless service running at the end", r.stayed_up, "yes" if r.stayed_up else "NO",
            "yes", r.stayed_up),
        fig("exit_code", "exit status after SIGTERM", r.exit_code, str(r.exit_code), "0", r.exit_code == 0),
    ]


def main(args: argparse.Namespace) -> int:
    seconds = float(args.faults)
    if not seconds > 0:
        print(f"tickdeck: bench --faults takes a number of seconds > 0, got {args.faults:g}", file=sys.stderr)
        return 2
    r = asyncio.run(run_faults(seconds))
    notes = [f"{len(SYMBOLS)} symbols at 500 trades/s over 127.0.0.1; a fault every 4 s, 3 garbage frames "
             "and 3 duplicates between faults; the feed's stale timeout set to 2 s (15 s in production)",
             f"trades made while no healthy connection was there: {r.book.trades_unsent:,} "
             f"(the gaps); sent: {r.book.trades_sent:,}; bad-price trades (ids used): "
             f"{r.book.price_garbage}"]
    return emit("faults", f"tickdeck bench --faults {seconds:g}", figures(r), args.json, notes,
                price_garbage=r.book.price_garbage, trades_sent=r.book.trades_sent,
                trades_unsent=r.book.trades_unsent)

