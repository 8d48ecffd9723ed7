"""Any exchange ccxt knows (Kraken, OKX, Bybit, KuCoin, Bitstamp, ...), through ccxt's WebSocket watchers.

ccxt (``pip install tickdeck[exchanges]``) is imported when this feed is built, never before: importing
``ccxt.pro`` loads every exchange (about 0.4 s and 100 MB), which the other feeds must not pay for.

One task per symbol awaits ``watch_trades`` (measured on ccxt 4.5: ``watch_trades_for_symbols`` could hold
a quiet symbol's trades back, one call per symbol did not); on an exchange whose ``has['watchTrades']`` is
false, ``watch_ticker`` instead, each change of the last price a tick without size. Every trade is checked
(``engine.feeds.ccxt_trades``): ccxt passes on bad prices and repeated trades.

The life of the connection is the built-in feeds' (``engine.feeds.ws``): ``connecting``, ``live``, ``stale``
after ``stale_after`` seconds without a frame, a reconnect after twice that, ``reconnecting`` with the delay
of the feed's ``Backoff`` (which never gives up), and ``failed`` with the reason only for what waiting
cannot cure (a bug: a TypeError, an AttributeError); an exchange ccxt does not know is refused when the feed
is built (``FeedUnavailable``, with some of the ids it knows). ccxt's own client reconnects lazily and, on
some malformed frames, stops reading until its keepalive gives up; so every frame goes through a guard that
counts what ccxt could not handle ("malformed frame") instead of letting it stop the receive loop, and a
network error in any watcher closes every WebSocket client and starts again after the backoff.

A symbol the exchange does not list is refused when it is added (``refuse``), with the reason, from the
exchange's markets: loaded once, and again when older than ``MARKETS_TTL_S`` (a ``cachetools.TTLCache``).
History and gap refills come from ``fetch_ohlcv`` (``engine.backfill.ccxt``), by time: after a reconnect,
a symbol whose first trade falls in a later bar than its last one has the bars in between refilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import cachetools
import numpy as np

from engine.feeds.backoff import Backoff
from engine.feeds.base import Feed, FeedItem, FeedStatus, State
from engine.feeds.batching import TickBatcher
from engine.feeds.ccxt_trades import TradeTape
from engine.ticks import SymbolTable, SymbolTableFull

if TYPE_CHECKING:
    from engine.backfill.loader import HistoryLoader

log = logging.getLogger("tickdeck.feeds")

MARKETS_TTL_S = 3600.0  # the exchange's list of markets is loaded again after an hour
MARKETS_TIMEOUT_S = 30.0  # one load of the markets (a few REST requests, rate limited)
CLOSE_TIMEOUT_S = 5.0  # closing the WebSocket clients
MAX_QUEUE = 4096  # watcher results waiting for the stream: past it the watchers wait (backpressure)
DEFAULTS: dict[str, Any] = {"enableRateLimit": True, "newUpdates": True}
"""What the feed gives every exchange's constructor before ``feeds.ccxt.options``: ccxt's own rate
limiter, and watchers that return only what is new since the last call."""


class Stalled(Exception):
    """No frame from the exchange for twice ``stale_after``."""


class FeedBroken(Exception):
    """A watcher hit a network error: every client is closed and the feed connects again."""


def load_ccxt() -> Any:
    """``ccxt.pro``, or a FeedUnavailable that says how to install it."""
    try:
        import ccxt.pro as ccxtpro
    except ImportError:
        from engine.feeds.registry import FeedUnavailable

        raise FeedUnavailable("the ccxt feed needs the exchanges extra: pip install 'tickdeck[exchanges]' "
                              "(make run installs it)") from None
    return ccxtpro


def make_exchange(exchange_id: str, options: Mapping[str, Any]) -> Any:
    """The ccxt.pro exchange ``exchange_id`` built with ``options`` over :data:`DEFAULTS` (ccxt deep-merges a
    ``urls`` table into its own, so a test points it at a loopback stand-in); FeedUnavailable when ccxt
    does not know it."""
    ccxtpro = load_ccxt()
    cls = getattr(ccxtpro, exchange_id, None) if exchange_id in ccxtpro.exchanges else None
    if cls is None:
        from engine.feeds.registry import FeedUnavailable

        raise FeedUnavailable(f"ccxt has no WebSocket exchange {exchange_id!r} (feeds.ccxt.exchange); "
                              f"some: {', '.join(sorted(ccxtpro.exchanges)[:12])}, ... "
                              f"({len(ccxtpro.exchanges)} in all)")
    return cls({**DEFAULTS, **options})


def describe(exc: BaseException) -> str:
    """One line for a status: ccxt's error class and its message (which never holds a key)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class CcxtFeed(Feed):
    name = "ccxt"
    stall_s: float = 15.0

    def __init__(self, symbols: SymbolTable, exchange: Any, wanted: Iterable[str] = (),
                 backoff: Backoff | None = None, stale_after: float | None = None) -> None:
        super().__init__(symbols)
        if stale_after is not None:
            if not (0 < stale_after < math.inf):
                raise ValueError(f"stale_after must be a number of seconds > 0, got {stale_after}")
            self.stall_s = stale_after
        self.exchange = exchange
        self.exchange_id = str(getattr(exchange, "id", "exchange"))
        self.wanted: list[str] = list(dict.fromkeys(wanted))
        self.backoff = backoff or Backoff()
        self.batcher = TickBatcher()
        self.tape = TradeTape(self.exchange_id, self.counters)
        self.history: HistoryLoader | None = None
        self.state: State = "connecting"
        #: symbols the exchange does not list, with the reason (bounded by the symbols asked for)
        self.refused: dict[str, str] = {}
        self._markets: cachetools.TTLCache[str, frozenset[str]] = cachetools.TTLCache(maxsize=1,
                                                                                       ttl=MARKETS_TTL_S)
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._ready = asyncio.Event()
        self._broken: BaseException | None = None
        self._reports: list[FeedStatus] = []
        self._last_frame = time.monotonic()
        self._frame_ns = time.time_ns()
        self._last_ts: dict[int, int] = {}  # slot -> time of its last tick (a refill after an outage)
        self._resuming: set[int] = set()
        self._connected = False
        self._stale = False
        self._clock = time.monotonic
        self._sleep = asyncio.sleep
        self._guard(exchange)

    @property
    def market(self) -> str:
        return f"ccxt:{self.exchange_id}"

    @property
    def trades_stream(self) -> bool:
        has = getattr(self.exchange, "has", {}) or {}
        return bool(has.get("watchTrades"))

    # --- frames: counted, timed, and kept from stopping ccxt's receive loop ---------------------------
    def _guard(self, exchange: Any) -> None:
        make_client = getattr(exchange, "client", None)
        if make_client is None:
            return

        def client(url: str) -> Any:
            made = make_client(url)
            if not getattr(made, "_tickdeck_guarded", False):
                inner = made.handle_text_or_binary_message

                def guarded(data: Any) -> None:
                    self.frame(inner, data)

                made.handle_text_or_binary_message = guarded
                made._tickdeck_guarded = True
            return made

        exchange.client = client

    def frame(self, handle: Any, data: Any) -> None:
        """One frame from the exchange, handed to ccxt's ``handle``; what ccxt raises on is counted."""
        self.counters.messages += 1
        self._last_frame = self._clock()
        self._frame_ns = time.time_ns()
        if not self._connected or self._stale:  # the stream has a status to say: live
            self._ready.set()
        self._connected = True
        try:
            handle(data)
        except Exception as exc:  # ccxt's parsers raise anything on garbage: the frame is skipped
            self.counters.bad_message("malformed frame", f"{describe(exc)}: {str(data)[:160]}")

    # --- symbols -----------------------------------------------------------------------------------
    def universe(self) -> tuple[str, ...]:
        known = self._markets.get("symbols")
        return tuple(dict.fromkeys([*self.wanted, *sorted(known or ())]))

    def refuse(self, name: str) -> str | None:
        """Why ``name`` cannot be added (the exchange does not list it), or None; None too while the
        markets are not loaded (the watcher then reports a refusal)."""
        known = self._markets.get("symbols")
        if known is None or name in known:
            return None
        upper = name.upper()
        hint = f" (did you mean {upper}?)" if upper != name and upper in known else ""
        if "/" not in name:
            hint = hint or " (ccxt names markets BASE/QUOTE, as BTC/USD)"
        return f"{name} is not listed on {self.exchange_id}{hint}"

    async def markets(self) -> frozenset[str]:
        """The exchange's symbols, loaded once and again after ``MARKETS_TTL_S``."""
        known = self._markets.get("symbols")
        if known is None:
            async with asyncio.timeout(MARKETS_TIMEOUT_S):
                reload = bool(getattr(self.exchange, "markets", None))  # older than the TTL
                markets = await self.exchange.load_markets(reload=reload)
            known = frozenset(markets or ())
            self._markets["symbols"] = known
        return known

    async def subscribe(self, symbols: Iterable[str]) -> None:
        new = [s for s in symbols if s not in self.wanted]
        for name in new:
            self.symbols.slot(name)  # may raise SymbolTableFull before anything changes
        self.wanted += new
        if self._connected or self._watchers:
            for name in new:
                self._watch(name)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        gone = [s for s in symbols if s in self.wanted]
        self.wanted = [s for s in self.wanted if s not in gone]
        for name in gone:
            task = self._watchers.pop(name, None)
            if task is not None:
                task.cancel()
            if self.history is not None:
                self.history.stop(name)
            slot = self.symbols.get(name)
            if slot is not None:
                self.tape.forget(slot)
                self._resuming.discard(slot)

    # --- history -----------------------------------------------------------------------------------
    def use_history(self, loader: HistoryLoader) -> None:
        self.history = loader
        loader.wake = self._ready.set
        loader.pending = self.batcher.flush

    def _side(self) -> list[FeedItem]:
        if self.history is None:
            return []
        return [dataclasses.replace(item, state=self.state) if isinstance(item, FeedStatus) else item
                for item in self.history.take()]

    def _pending(self) -> list[FeedItem]:
        """What waits to go out, in order: the history loader's items, the trades batched, the reports."""
        items = self._side()
        if (batch := self.batcher.flush()) is not None:
            items.append(batch)
        items += self._reports
        self._reports.clear()
        return items

    def take_pending(self) -> np.ndarray | None:
        return self.batcher.flush()

    # --- watchers ----------------------------------------------------------------------------------
    def _watch(self, name: str) -> None:
        task = self._watchers.get(name)
        if task is not None and not task.done():
            return
        if name in self.refused:
            return
        if self.history is not None:
            self.history.start(name)
        self._watchers[name] = asyncio.get_running_loop().create_task(self._watcher(name),
                                                                     name=f"ccxt-{name}")

    async def _watcher(self, name: str) -> None:
        trades = self.trades_stream
        watch = self.exchange.watch_trades if trades else self.exchange.watch_ticker
        try:
            slot = self.symbols.slot(name)
        except SymbolTableFull as exc:
            self._refuse(name, str(exc))
            return
        while True:
            try:
                got = await watch(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._symbol_error(exc):
                    self._refuse(name, describe(exc))
                    return
                if self._broken is None:
                    self._broken = exc
                self._ready.set()
                return
            if trades:
                for tick, missing in self.tape.trades(slot, name, got if isinstance(got, list) else [got],
                                                      self._frame_ns):
                    self._add(name, slot, tick, missing)
            elif (moved := self.tape.ticker(slot, name, got, self._frame_ns)) is not None:
                self._add(name, slot, moved, 0)
            self._ready.set()
            if len(self.batcher) >= MAX_QUEUE:
                await asyncio.sleep(0)  # let the stream take the batch

    def _symbol_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` concerns the symbol only (not listed, not watchable), not the connection. Any
        other error reconnects after the backoff: ccxt rejects every watcher of a client for one error
        frame without a request id (OKX's ``handle_error_message``), which must not refuse them all."""
        ccxt = load_ccxt()
        return isinstance(exc, ccxt.BadSymbol | ccxt.NotSupported)

    def _refuse(self, name: str, why: str) -> None:
        self.refused[name] = why
        self.report(FeedStatus(self.name, "live", f"{name}: not streamed ({why})", symbols=(name,)))

    def _add(self, name: str, slot: int, tick: Any, missing: int) -> None:
        history = self.history
        ts = tick[1]
        last = self._last_ts.get(slot)
        if missing:
            self.counters.gaps += missing
            if slot not in self._resuming:
                log.warning("%s: %s: %d trade(s) never arrived before id %d", self.market, name, missing,
                            tick[6])
        self._last_ts[slot] = ts
        resuming = slot in self._resuming
        self._resuming.discard(slot)
        if history is not None:
            if history.holding(slot) or (resuming and last is not None and history.resume(slot, last, ts)):
                history.hold(slot, -1, ts, tick)  # counted as a tick when it is let go
                return
            history.passing(slot, tick)
        self.batcher.add(*tick)
        self.counters.ticks += 1

    def report(self, status: FeedStatus) -> None:
        self._reports.append(status)
        self._ready.set()

    # --- the connection loop -----------------------------------------------------------------------
    async def stream(self) -> AsyncGenerator[FeedItem, None]:
        try:
            async with contextlib.aclosing(self._connections()) as items:
                async for item in items:
                    if isinstance(item, FeedStatus) and not item.symbols:
                        self.state = item.state
                    yield item
        finally:
            await self._stop_watchers()
            if self.history is not None:
                await self.history.aclose()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.exchange.close()

    async def _connections(self) -> AsyncGenerator[FeedItem, None]:
        first = True
        while True:
            if not first:
                self.counters.reconnects += 1
                self._resuming = {s for s in (self.symbols.get(n) for n in self.wanted) if s is not None}
            first = False
            yield FeedStatus(self.name, "connecting")
            reason = ""
            try:
                await self.markets()
                self._broken = None
                self._connected = False
                self._last_frame = self._clock()
                for name in self.wanted:
                    self._watch(name)
                async with contextlib.aclosing(self._read()) as items:
                    async for item in items:
                        yield item
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:  # ccxt's NetworkError and ExchangeError, timeouts, a stall
                if self._fatal(exc):
                    yield FeedStatus(self.name, "failed", describe(exc))
                    raise
                reason = str(exc) if isinstance(exc, Stalled | FeedBroken) else describe(exc)
            finally:
                await self._stop_watchers()
            for item in self._pending():
                yield item
            delay = self.backoff.next()
            yield FeedStatus(self.name, "reconnecting", reason or "connection ended", retry_in=delay)
            await self._sleep(delay)

    def _fatal(self, exc: BaseException) -> bool:
        """Errors that waiting cannot cure: a bug of ours (a TypeError, an AttributeError)."""
        return isinstance(exc, TypeError | AttributeError | NameError)

    async def _stop_watchers(self) -> None:
        tasks = list(self._watchers.values())
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.exchange.close_ws_clients()
        self._connected = False

    async def _read(self) -> AsyncGenerator[FeedItem, None]:
        live = self._stale = False
        while True:
            self._ready.clear()
            if not live and self._connected:
                live = True
                self.backoff.reset()
                yield FeedStatus(self.name, "live")
            for item in self._pending():
                yield item
            if self._broken is not None:
                raise FeedBroken(describe(self._broken))
            if all(n in self.refused for n in self.wanted):
                self._last_frame = self._clock()  # nothing to watch: quiet is expected, not a stall
            quiet = self._clock() - self._last_frame
            if quiet >= 2 * self.stall_s:
                raise Stalled(f"no data from {self.exchange_id} for {2 * self.stall_s:g} s")
            if quiet >= self.stall_s and not self._stale:
                self._stale = True
                yield FeedStatus(self.name, "stale", f"no data for {self.stall_s:g} s")
            elif self._stale and quiet < self.stall_s:
                self._stale = False
                yield FeedStatus(self.name, "live")
            wait = (self.stall_s if not self._stale else 2 * self.stall_s) - quiet
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._ready.wait()
