"""``tickdeck bench --faults [SECONDS]``: the headless service against a feed server that keeps failing.

The service runs in this process as ``tickdeck --headless`` runs it (``engine.headless``: the runtime,
its bounded queue and engine thread, the real ``BinanceFeed`` pointed at ``feeds.binance.url``), against
``FaultServer`` on 127.0.0.1 (the Binance stand-in, ``bench.servers.binance``, on a fault schedule): a
fault every ``every`` seconds (a clean close, a dropped TCP connection, a stall past the feed's stale
timeout, a refused handshake), garbage frames and duplicate trades in between, for ``SECONDS`` (180 by
default). Then the books are compared, exactly:

- every trade id the server made is processed by the engine, reported as a gap, or a bad-price trade
  counted as a bad message; the gaps are exactly the trades made while no healthy connection was there;
- duplicates dropped == duplicates sent; bad messages == garbage frames sent, reason by reason;
- the feed's status sequence only takes allowed steps (connecting -> live -> stale/reconnecting ->
  connecting -> live ...), with as many of each as the faults caused; reconnects == faults + refusals;
- the service is still running at the end and stops with exit status 0.

The feed's stale timeout (``stall_s``, 15 s in production) is set to ``stall_s`` (2 s) for the run, so a
stall costs 4 s rather than 30 and a run sees many of them; nothing else is changed.

The server's tape makes trades at a steady rate (ids 1, 2, ... per symbol) whether or not anyone is
connected, as an exchange does, so trades made while the client is away are gaps it must report. Every
``every`` seconds of healthy streaming ends in a fault, in turn: ``close`` (a clean close, as Binance's
24-hour cut), ``abort`` (the TCP connection dropped without a close frame), ``stall`` (the connection
stays open and silent, answers included, until the client gives up on it) and ``refuse`` (a clean close,
then the next handshake answered with HTTP 503). Between faults it sends garbage frames and duplicates of
trades the connection already carried.

The books (``FaultBook``) count only what certainly reached the client: garbage and duplicates go out on
a healthy connection, and before an ``abort`` the connection is kept quiet for ``quiet_s`` so nothing is
in flight when it drops. That is what makes exact accounting possible: ``trade ids made == ticks
processed + gaps reported + bad-price trades`` (a trade with a bad price uses an id, as a real broken
trade would), ``duplicates dropped == duplicates sent`` and ``bad messages == garbage sent``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from bench.report import Figure, emit
from bench.servers.binance import GARBAGE, PRICE_GARBAGE, BinanceServer, Connection
from engine.config import CONFIG_DIR_VAR, Config, load_config
from engine.feeds.base import FeedStatus

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
DEFAULT_SECONDS = 180.0
# what the feed calls each kind of garbage the server sends
REASONS = {"malformed json": "malformed json", "truncated frame": "truncated frame",
           "unknown event type": "unknown event type", "negative price": "bad price",
           "nan price": "bad price", "unknown symbol": "unknown symbol"}
FAULTS = ("close", "abort", "stall", "refuse")
# what the feed may report after each state; anything else is a wrong transition
TRANSITIONS: dict[str, frozenset[str]] = {
    "connecting": frozenset({"live", "reconnecting"}),
    "live": frozenset({"stale", "reconnecting"}),
    "stale": frozenset({"live", "reconnecting"}),
    "reconnecting": frozenset({"connecting"}),
}


def wrong_transitions(states: Sequence[str]) -> list[str]:
    """Every step of ``states`` that a feed must never take (the first must be ``connecting``)."""
    wrong = [] if not states or states[0] == "connecting" else [f"starts with {states[0]}"]
    for i, (a, b) in enumerate(itertools.pairwise(states), start=1):
        if b not in TRANSITIONS.get(a, frozenset()):
            wrong.append(f"#{i}: {a} -> {b}")
    return wrong


@dataclass
class FaultBook:
    """What the server did, counting only what certainly reached the client (see the module docstring)."""

    server: BinanceServer = field(repr=False)
    trade_ids: int = 0  # ids given to trades, valid or with a bad price
    trades_sent: int = 0  # valid trades written to a healthy connection
    trades_unsent: int = 0  # made while no healthy connection was there: the client's gaps
    price_garbage: int = 0  # trades with a bad price (sent, with an id)
    duplicates: int = 0
    garbage: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def connections(self) -> int:
        """Handshakes accepted."""
        return self.server.accepted

    @property
    def refused(self) -> int:
        """Handshakes answered 503."""
        return self.server.refused

    @property
    def garbage_total(self) -> int:
        return sum(self.garbage.values())

    def expected_statuses(self) -> Counter[str]:
        """The feed statuses the faults must have caused (one client, the final connection still live)."""
        f = self.faults
        return Counter({"connecting": self.connections + self.refused, "live": self.connections,
                        "stale": f["stall"],
                        "reconnecting": f["close"] + f["abort"] + f["stall"] + f["refuse"] + self.refused})


class FaultServer(BinanceServer):
    """``async with FaultServer(("BTCUSDT", "ETHUSDT")) as server:`` then point the feed at ``server.url``,
    ``start()`` the tape and the faults, ``finish()`` them, and read ``server.book``.

    ``rate`` trades a second over all symbols; a fault every ``every`` seconds of healthy streaming, with
    ``garbage`` garbage frames and ``duplicates`` duplicates sent at random moments in between.
    """

    def __init__(self, symbols: Sequence[str], *, rate: float = 500.0, every: float = 4.0,
                 faults: Sequence[str] = FAULTS, garbage: int = 3, duplicates: int = 3,
                 quiet_s: float = 0.5, seed: int = 7) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown or not faults:
            raise ValueError(f"faults must be some of {', '.join(FAULTS)}; got {list(faults)}")
        super().__init__(compression=None)
        self.symbols = tuple(s.upper() for s in symbols)
        self.rate = rate
        self.every = every
        self.fault_cycle = tuple(faults)
        self.garbage_per_cycle = garbage
        self.duplicates_per_cycle = duplicates
        self.quiet_s = quiet_s
        self.book = FaultBook(self)
        self.faulting = False  # the schedule is running
        self._rng = random.Random(seed)
        self._price = {s: 100.0 + 10.0 * i for i, s in enumerate(self.symbols)}
        self._stopping = False  # the tape stops
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FaultServer:
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().__aexit__(*exc)

    def start(self) -> None:
        """Start the tape (at the first subscription, so the client's first trade is id 1) and the
        fault schedule."""
        self.faulting = True
        self._tasks = [asyncio.create_task(self._tape(), name="fault-server-tape"),
                       asyncio.create_task(self._schedule(), name="fault-server-faults")]

    async def finish(self, timeout: float = 30.0) -> None:
        """End the faults (a fault under way completes; none starts), stop the tape once a healthy
        connection is back, send one more trade of every symbol (so the client sees every earlier gap),
        and wait until the client has read it all."""
        self.faulting = False
        tape, schedule = self._tasks
        async with asyncio.timeout(timeout):
            await schedule  # it ends at its next step
            await self.wait(lambda: bool(self._healthy()), timeout)
            self._stopping = True
            self._bump()
            await tape  # it ends after the trade it is sending
        self._tasks = []
        for symbol in self.symbols:
            await self._trade(symbol)
        for conn in self._healthy():  # a pong comes back after every frame before the ping was read
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(await conn.ws.ping(), timeout)

    def _healthy(self) -> list[Connection]:
        return [c for c in self.connections if not c.stalled and c.subs]

    async def _tape(self) -> None:
        await self.wait(lambda: bool(self._healthy()) or self._stopping, 3600.0)
        loop = asyncio.get_running_loop()
        last, carry, k = loop.time(), 0.0, 0
        while not self._stopping:
            await asyncio.sleep(0.01)
            now = loop.time()
            carry += (now - last) * self.rate
            last = now
            while carry >= 1.0 and not self._stopping:
                carry -= 1.0
                await self._trade(self.symbols[k % len(self.symbols)])
                k += 1

    async def _schedule(self) -> None:
        n = 0
        while self.faulting:
            await self.wait(lambda: bool(self._healthy()), 3600.0)
            loop = asyncio.get_running_loop()
            start = loop.time()
            moments = sorted([(self._rng.uniform(0.1, 0.9) * self.every, "garbage")
                              for _ in range(self.garbage_per_cycle)]
                             + [(self._rng.uniform(0.1, 0.9) * self.every, "duplicate")
                                for _ in range(self.duplicates_per_cycle)])
            for at, what in moments:
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                if not self.faulting:
                    return
                if what == "garbage":
                    await self._garbage(GARBAGE[self.book.garbage_total % len(GARBAGE)])
                else:
                    self.book.duplicates += await self.duplicate(self._rng)
            await asyncio.sleep(max(0.0, start + self.every - loop.time()))
            if not self.faulting:
                return
            await self._fault(self.fault_cycle[n % len(self.fault_cycle)])
            n += 1

    async def _fault(self, kind: str) -> None:
        conns = self._healthy()
        if not conns:
            return
        self.book.faults[kind] += 1
        self.stall(conns)  # they carry nothing more
        self._bump()
        if kind == "stall":
            return  # open and silent: the client notices, goes stale, and gives up on it
        if kind == "refuse":
            self.refuse_next += 1
        if kind == "abort":
            await asyncio.sleep(self.quiet_s)  # nothing in flight when the connection drops
            await self.disconnect(abort=True, only=conns)
            return
        await self.disconnect(1001, f"fault: {kind}", only=conns)

    async def _trade(self, symbol: str) -> None:
        self._price[symbol] *= 1.0 + self._rng.gauss(0.0, 5e-4)
        data = self._trade_data(symbol, f"{self._price[symbol]:.2f}", "0.010", self._rng.random() < 0.5)
        self.book.trade_ids += 1
        stream = f"{symbol.lower()}@trade"
        if await self.publish(stream, {"stream": stream, "data": data}):
            self.book.trades_sent += 1
        else:
            self.book.trades_unsent += 1

    async def _garbage(self, kind: str) -> None:
        healthy = len(self._healthy())
        if not healthy:
            return
        reached = await self.send_garbage(kind, self.symbols[self.book.garbage_total % len(self.symbols)])
        if kind in PRICE_GARBAGE:
            self.book.price_garbage += 1
            self.book.trade_ids += 1
        if reached == healthy:
            self.book.garbage[kind] += 1


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

