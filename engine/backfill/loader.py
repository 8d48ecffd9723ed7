"""History inside a live feed: each symbol's past loaded while its live trades are held, then the seam.

Per symbol, in its own task (``LOADS_AT_ONCE`` at a time), never blocking the stream:

1. the bar store first (``BarStore``: closed bars kept by earlier runs), then only the missing span from
   the service's REST history (a ``cachetools.TTLCache`` keeps what was fetched, so a symbol removed and
   added back is not fetched twice);
2. the seam, by trade id (Binance's trade stream): the feed subscribed first, and holds the symbol's
   live trades (at most ``HOLD_MAX``; past that the oldest are let go, and fetched again below). The
   closed bars cover every trade before the forming bar ``F``; the trades of the forming bar come from
   the service too (Binance: aggregate trades from ``F``). ``X``, the last trade id they cover, becomes
   the sequencer's last id: held (and later) trades with ids up to ``X`` are dropped as counted already,
   and the first one after ``X`` continues. If it is beyond ``X + 1`` the trades in between are fetched
   (``GAP_TRIES`` times, the service's database may lag its stream by a moment) until the seam closes.
   A kline stream has no ids: its seam is the forming bar's open (held updates before it are dropped).
3. the feed yields ``HistoryBars`` (the closed bars), then one batch of the forming bar's trades and the
   released live ones; the row fills in.

A source whose market has sessions (Yahoo: nights, weekends) is asked for a wider span than ``bars``
intervals (``HistorySource.span_ns``), of which the newest ``bars`` are kept. A feed without trade ids
(Yahoo's quotes) meets its history by time: the closed bars before the forming bar come from the
service, the held ticks of the forming bar continue them.

History that fails at start for a reason that may pass (no answer, a throttle, a garbled page) is tried
again ``RETRIES`` times, after the feed's backoff, while the symbol streams live (its note says when the
next try is); since live ticks have reached the engine by then, a later try comes as a ``Refill`` from the
first bar the service was asked for, which rebuilds the symbol as if the history had come at once. A
refusal (an unknown symbol) or an empty range is not tried again.

A gap found later (a trade id beyond the next, after a reconnect) is refilled the same way when the
engine can re-run a symbol: the symbol's trades are held, every trade since the open of the bar that
holds the last trade received is fetched (klines for whole bars, then trades), and the feed yields a
``Refill``, then the released trades. A symbol added back after a removal resumes with a refill from
where it stopped. A feed without trade ids reports an outage (``resume``): when a bar has closed since
its last tick, the bars missed are refilled from the service by time. History that cannot be had
(``HistoryUnavailable``) is reported in the symbol's status and the symbol streams live as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Protocol

import cachetools
import numpy as np

from engine.backfill.convert import bar_ticks, newest, seconds, trade_ticks
from engine.backfill.source import HistorySource, HistoryUnavailable
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedCounters, FeedItem, FeedStatus, HistoryBars, Refill
from engine.feeds.batching import Tick, TradeSequencer
from engine.ticks import BAR_DTYPE, TICK_DTYPE, SymbolTable

log = logging.getLogger("tickdeck.backfill")

HOLD_MAX = 10_000
"""Live trades held per symbol while its history loads (about 10 s of the busiest Binance pair); past
it the oldest are let go, and the seam fetches them from REST with the rest of the gap."""
LOADS_AT_ONCE = 8  # symbols loading at the same time (each is a few requests in a row)
CACHE_SYMBOLS = 256  # fetched histories kept, one per (symbol, bar interval) ...
CACHE_TTL_S = 900.0  # ... for 15 minutes
GAP_TRIES = 5  # fetches that try to close a seam before the missing trades are reported as a gap
GAP_WAIT_S = 0.2  # waited before each further try, times the try's number
HELD = -2  # ``check``: the trade is held; the caller passes it to ``hold``
RETRIES = 4  # tries after the first for history that failed at start (each after the feed's backoff)
REACH_BACK = 3
"""Further, older windows asked for a symbol whose span held fewer bars than wanted: the engine makes no
bar for an interval without a trade, so a quiet symbol's ``bars`` intervals hold fewer bars. Each window
is sized by the density seen so far (at most ``REACH_WIDEST`` spans); an empty one ends the reach."""
REACH_WIDEST = 8


class BarStore(Protocol):
    """What the loader reads from the bar store (``engine.store.BarStore``; called in a thread)."""

    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray: ...


@dataclass
class _Symbol:
    name: str
    slot: int
    holding: bool = False
    held: deque[tuple[int, int, Tick | None]] = field(default_factory=lambda: deque(maxlen=HOLD_MAX))
    task: asyncio.Task[None] | None = None
    loaded: bool = False  # its first load is over (done or given up)
    missing: int | None = None  # the open of the first bar its failed history lacks (to try again)
    tries: int = 0  # history tries made after the first
    backoff: Backoff | None = None
    # ticks passed on while its history is to be tried again (a feed without ids): the try, a refill,
    # hands back those of the forming bar, which it rebuilds
    passed: deque[Tick] = field(default_factory=lambda: deque(maxlen=HOLD_MAX))


class HistoryLoader:
    """The history of one live feed's symbols (see the module docstring). The feed calls ``start`` and
    ``stop`` as symbols come and go, ``check``/``hold`` for every trade, and yields what ``take`` hands
    back whenever ``wake`` (which it sets) is called."""

    def __init__(self, feed: str, symbols: SymbolTable, counters: FeedCounters, sequencer: TradeSequencer,
                 interval_ns: int, bars: int, source: HistorySource | None = None,
                 store: BarStore | None = None, *, refills: bool = False, by_id: bool = True,
                 clock: Callable[[], int] = time.time_ns, backoff: Backoff | None = None,
                 sleep: Callable[[float], Coroutine[None, None, None]] = asyncio.sleep) -> None:
        self.feed = feed
        self.symbols = symbols
        self.counters = counters
        self.sequencer = sequencer
        self.interval_ns = interval_ns
        self.bars = bars
        self.source = source
        self.store = store
        self.by_id = by_id
        # by id where the service has trade ids; by time (bars only) for a feed without them
        self.refills = refills and source is not None and (source.trade_ids or not by_id)
        self.clock = clock
        self.backoff = backoff or Backoff()  # the feed's: each symbol's retries follow a copy of it
        self._sleep = sleep
        self.wake: Callable[[], None] = lambda: None
        # the feed's ticks received but not yet yielded, taken before what the loader hands over, so the
        # history and the refills keep their place in the tape: after every tick received before them,
        # before every tick after them (set by the feed)
        self.pending: Callable[[], np.ndarray | None] = lambda: None
        self.cache: cachetools.TTLCache[tuple[str, int], tuple[int, int, np.ndarray]] = cachetools.TTLCache(
            maxsize=CACHE_SYMBOLS, ttl=CACHE_TTL_S)
        self._symbols: dict[int, _Symbol] = {}
        self._last_ts: dict[int, int] = {}  # slot -> time of the last trade passed on (kept after a stop)
        self._items: list[FeedItem] = []
        self._gate = asyncio.Semaphore(LOADS_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return self.source is not None or self.store is not None

    # --- the feed's side ---------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """``name`` was subscribed: hold its trades and load its history (a symbol seen before resumes
        with a refill from where it stopped, when refills are possible; otherwise it just streams)."""
        slot = self.symbols.get(name)
        if not self.active or slot is None or slot in self._symbols:
            return
        sym = self._symbols[slot] = _Symbol(name, slot)
        if slot in self._last_ts:
            if self.refills:
                self._refill_now(sym)
            else:
                sym.loaded = True
            return
        self.counters.history_total += 1
        self._begin(sym, self._load(sym))

    def stop(self, name: str) -> None:
        """``name`` was unsubscribed: its load or refill is cancelled, its held trades dropped."""
        slot = self.symbols.get(name)
        sym = self._symbols.pop(slot, None) if slot is not None else None
        if sym is None:
            return
        if not sym.loaded and slot not in self._last_ts:
            self.counters.history_total -= 1
        if sym.task is not None:
            sym.task.cancel()
        self.sequencer.forget(sym.slot)

    def check(self, slot: int, trade_id: int, ts: int) -> int:
        """As ``TradeSequencer.check`` (-1 duplicate, else the trades missing before this one), or
        ``HELD``: the trade belongs to a symbol whose history or refill is loading."""
        sym = self._symbols.get(slot)
        if sym is not None and sym.holding:
            return HELD
        last = self.sequencer.last.get(slot)
        if (sym is not None and self.refills and last is not None and trade_id > last + 1
                and slot in self._last_ts):
            self._refill_now(sym)
            return HELD
        missing = self.sequencer.check(slot, trade_id)
        if missing >= 0:
            self._last_ts[slot] = ts
        return missing

    def resume(self, slot: int, last_ts: int, ts: int) -> bool:
        """A feed without trade ids (Yahoo) has a tick of ``slot`` at ``ts`` after an outage (requests
        that failed), its last tick before it at ``last_ts``: when a bar has closed in between, the bars
        missed are refilled from the service, and the symbol's ticks are held meanwhile. True when they
        are held (the caller holds the one in hand)."""
        sym = self._symbols.get(slot)
        if sym is None or sym.holding:
            return sym is not None
        step = self.interval_ns
        if self.by_id or not self.refills or ts - ts % step <= last_ts - last_ts % step:
            return False
        self._last_ts[slot] = last_ts
        self._refill_now(sym)
        return True

    def passing(self, slot: int, tick: Tick) -> None:
        """A tick that a feed without trade ids passes on to the engine (see ``_Symbol.passed``)."""
        sym = self._symbols.get(slot)
        if sym is not None and sym.missing is not None and not self.by_id:
            sym.passed.append(tick)

    def holding(self, slot: int) -> bool:
        sym = self._symbols.get(slot)
        return sym is not None and sym.holding

    def hold(self, slot: int, trade_id: int, ts: int, tick: Tick | None) -> None:
        """Keep a trade back (``tick`` None: a bad one, which still used its id)."""
        self._symbols[slot].held.append((trade_id, ts, tick))

    def take(self) -> list[FeedItem]:
        items, self._items = self._items, []
        return items

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self.source is not None:
            await self.source.aclose()
        close = getattr(self.store, "close", None)
        if close is not None:  # (in a thread: closing a database may wait for a disk)
            await asyncio.to_thread(close)

    # --- tasks ------------------------------------------------------------------------------------
    def _begin(self, sym: _Symbol, work: Coroutine[None, None, None]) -> None:
        if sym.task is not None and not sym.task.done():
            sym.task.cancel()  # a retry waiting for its turn: this refill does its work
        sym.holding = True
        task = asyncio.get_running_loop().create_task(work, name=f"history-{sym.name}")
        sym.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refill_now(self, sym: _Symbol) -> None:
        """Refill ``sym``: from the first bar its history lacks, when it failed and is to be tried again;
        else from the bar of the last trade passed on."""
        if sym.missing is not None:
            self._begin(sym, self._refill(sym, sym.missing, retry=True))
        else:
            last = self._last_ts[sym.slot]
            self._begin(sym, self._refill(sym, last - last % self.interval_ns))

    def _try_later(self, sym: _Symbol, since: int) -> float | None:
        """Schedule another try of ``sym``'s history from ``since`` after the backoff; the delay, or None
        when every try has been made."""
        if sym.tries >= RETRIES:
            sym.missing = None
            sym.passed.clear()
            return None
        if sym.backoff is None:
            sym.backoff = Backoff(self.backoff.base, self.backoff.cap)
        sym.tries += 1
        sym.missing = since
        delay = sym.backoff.next()

        async def later() -> None:
            await self._sleep(delay)
            if self._symbols.get(sym.slot) is sym and not sym.holding:
                sym.holding = True
                await self._refill(sym, since, retry=True)

        task = asyncio.get_running_loop().create_task(later(), name=f"history-retry-{sym.name}")
        sym.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delay

    def _deliver(self, *items: FeedItem) -> None:
        if (ticks := self.pending()) is not None:
            self._items.append(ticks)
        self._items.extend(items)
        self.wake()

    def _note(self, sym: _Symbol, what: str, why: str) -> None:
        log.warning("%s: %s: %s", self.feed, sym.name, f"{what} ({why})")
        self._deliver(FeedStatus(self.feed, "live", f"{sym.name}: {what} ({why})", symbols=(sym.name,)))

    async def _load(self, sym: _Symbol) -> None:
        closed, trades, seam, why, final = np.zeros(0, BAR_DTYPE), np.zeros(0, TICK_DTYPE), None, "", False
        step = self.interval_ns
        now = self.clock()
        forming = now - now % step
        since: int | None = None  # the first bar asked of the service (a later try starts there)
        try:
            async with self._gate:
                now = self.clock()
                forming = now - now % step
                span = self.source.span_ns(self.bars, step) if self.source is not None else self.bars * step
                start = forming - span
                parts = []
                if self.store is not None:
                    stored = await asyncio.to_thread(self.store.load, self.feed, sym.name, step, start)
                    stored = stored[stored["t"] < forming]
                    if len(stored):
                        parts.append(stored)
                        start = int(stored["t"][-1]) + step
                try:
                    if self.source is not None:
                        since = start
                        if start < forming:
                            parts.append(await self._closed_bars(sym.name, start, forming))
                        await self._reach_back(sym.name, parts, forming, forming - span)
                        if self.by_id:
                            trades, seam = await self._since(sym, forming)
                finally:
                    closed = np.concatenate(parts) if parts else closed
        except HistoryUnavailable as exc:
            why, final = str(exc), exc.final
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not stop the feed: the symbol streams live
            log.exception("%s: loading the history of %s failed", self.feed, sym.name)
            why = f"{type(exc).__name__}: {exc}"
        if not why and self.source is not None and not len(closed) and not len(trades):
            why, final = f"{self.feed} has no bars or trades of it", True  # (an empty range, counted as such)
        closed = newest(closed, self.bars, step)
        closed["sym"] = sym.slot
        items: list[FeedItem] = [HistoryBars(closed)] if len(closed) else []
        batch = self._release(sym, seam, trades, before=None if self.by_id else forming, reset=True)
        if batch is not None:
            items.append(batch)
        sym.loaded = True
        self.counters.history_done += 1
        self._deliver(*items)
        if why:
            self.counters.history_failed += 1
            again = (self._try_later(sym, since) if not final and self.refills and since is not None
                     and since < forming else None)
            what = "no history" if not len(closed) else "history incomplete"
            self._note(sym, what, why + (f"; next try in {seconds(again)}" if again is not None else ""))

    async def _refill(self, sym: _Symbol, since: int, *, retry: bool = False) -> None:
        """Fetch ``sym``'s trades (or, without ids, its bars) from the open ``since`` and hand them over as
        a ``Refill``; ``retry``: a later try of history that failed at start."""
        why, final, ticks, seam = "", False, np.zeros(0, TICK_DTYPE), None
        step = self.interval_ns
        forming = asked = since
        try:
            async with self._gate:
                now = self.clock()
                forming = max(now - now % step, since)
                parts = []
                if since < forming:
                    bars = await self._closed_bars(sym.name, since, forming)
                    if retry and len(bars):
                        bars = newest(bars, self.bars, step)
                        since = max(since, int(bars["t"][0]) - int(bars["t"][0]) % step)
                    parts.append(bar_ticks(bars, sym.slot, now))
                if self.by_id:
                    trades, seam = await self._since(sym, forming)
                    parts.append(trade_ticks(trades, sym.slot, now))
                elif retry and (kept := [t for t in sym.passed if t[1] >= forming]):
                    parts.append(np.array(kept, dtype=TICK_DTYPE))
                if parts:
                    ticks = np.concatenate(parts)
        except HistoryUnavailable as exc:
            why, final = str(exc), exc.final
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: refilling %s failed", self.feed, sym.name)
            why = f"{type(exc).__name__}: {exc}"
        if not why and (seam is None if self.by_id else not len(ticks)):
            why = (f"{self.feed} has no trades since the gap" if self.by_id
                   else f"{self.feed} has no bars since the gap")
        if why:  # every held tick goes on (the bars before them were not replaced)
            batch = self._release(sym, None, np.zeros(0, TICK_DTYPE), reset=False)
            self._deliver(*([batch] if batch is not None else []))
            if not retry:
                self._note(sym, "gap not refilled", why)
                return
            again = self._try_later(sym, asked) if not final else None
            if again is None:
                sym.missing = None
                sym.passed.clear()
            tail = (f"; next try in {seconds(again)}" if again is not None
                    else f"; gave up after {sym.tries + 1} tries")
            self._note(sym, "no history", why + tail)
            return
        batch = self._release(sym, seam, None, reset=True, before=None if self.by_id else forming)
        self._deliver(Refill(sym.slot, since, ticks), *([batch] if batch is not None else []))
        if retry:
            sym.missing = None
            sym.passed.clear()
            self.counters.history_failed -= 1
            self._note(sym, "history loaded", f"try {sym.tries + 1}")
        else:
            self.counters.refills += 1

    async def _reach_back(self, name: str, parts: list[np.ndarray], forming: int, asked: int) -> None:
        """Older bars in front of ``parts`` (ascending, stored and fetched; ``asked``: the start of the
        window asked for) until they hold ``bars`` engine bars, or ``REACH_BACK`` windows were asked for.

        Only while the symbol traded before the window: when its first bar comes later after the
        window's start than any gap between its bars, that is where its history begins (a listing),
        and nothing older is asked for. A window the service refuses (Yahoo's oldest intraday bars) or
        answers empty ends the reach; what is there is kept."""
        assert self.source is not None
        step = self.interval_ns
        for _ in range(REACH_BACK):
            starts = [p["t"] - p["t"] % step for p in parts] or [np.empty(0, np.int64)]
            opens = np.unique(np.concatenate(starts))
            have = len(opens)
            if not have or have >= self.bars:
                return
            earliest = int(opens[0])
            widest = max(int(np.diff(opens).max()) if have > 1 else step, step)
            if earliest - asked > widest:
                return
            density = have / max(1, (forming - earliest) // step)  # engine bars per interval so far
            widest_window = REACH_WIDEST * max(1, (forming - asked) // step)
            width = min(int((self.bars - have) / density) + 1, widest_window)
            asked = earliest - width * step
            try:
                older = await self.source.bars(name, asked, earliest, step, older=True)
            except HistoryUnavailable:
                return
            older = older[older["t"] < earliest]
            if not len(older):
                return
            parts.insert(0, older)

    async def _closed_bars(self, name: str, start: int, end: int) -> np.ndarray:
        """Closed bars in ``[start, end)``, from the cache as far as it reaches, the rest fetched."""
        assert self.source is not None
        step = self.source.bar_interval(self.interval_ns)
        key = (name, step)
        hit = self.cache.get(key)
        if hit is not None and hit[0] <= start <= hit[1]:
            lo, hi, bars = hit
            if hi < end:
                bars = np.concatenate([bars, await self.source.bars(name, hi, end, self.interval_ns)])
                hi = end
        else:
            lo, hi, bars = start, end, await self.source.bars(name, start, end, self.interval_ns)
        keep = max(self.bars, 1) * (self.interval_ns // step) + 1  # bounded per entry
        if len(bars) > keep:
            bars = bars[-keep:]
            lo = int(bars["t"][0])
        self.cache[key] = (lo, hi, bars)
        t = bars["t"]
        return bars[(t >= start) & (t < end)].copy()

    async def _since(self, sym: _Symbol, forming: int) -> tuple[np.ndarray, int | None]:
        """The trades from ``forming`` to now, and the last trade id they cover (the seam), fetched on
        until the seam meets the first held trade."""
        assert self.source is not None
        trades = await self.source.trades(sym.name, start_ns=forming)
        if len(trades):
            seam, cursor = int(trades["last_id"][-1]), int(trades["cursor"][-1])
        else:
            before = await self.source.last_trade_before(sym.name, forming)
            if not len(before):
                return trades, None  # never traded: the live tape starts the sequence
            seam, cursor = int(before["last_id"][0]), int(before["cursor"][0])
        parts = [trades]
        for attempt in range(GAP_TRIES):
            first = min((tid for tid, _, _ in sym.held if tid > seam), default=None)
            if first is None or first <= seam + 1:
                break
            more = await self.source.trades(sym.name, after=cursor, until_id=first - 1)
            if len(more):
                parts.append(more)
                seam, cursor = int(more["last_id"][-1]), int(more["cursor"][-1])
                continue
            await asyncio.sleep(GAP_WAIT_S * (attempt + 1))
        return np.concatenate(parts), seam

    def _release(self, sym: _Symbol, seam: int | None, trades: np.ndarray | None, *, reset: bool,
                 before: int | None = None) -> np.ndarray | None:
        """Stop holding: ``trades`` (the forming bar's, from the service) then the held trades after the
        seam, as one batch; the sequencer continues from the seam (``reset``: from nothing without
        one; otherwise from where it was, so a gap left open is counted as a gap)."""
        slot = sym.slot
        if seam is not None:
            self.sequencer.last[slot] = seam
        elif reset:
            self.sequencer.forget(slot)
        now = self.clock()
        rows: list[Tick] = []
        held = sorted(sym.held, key=lambda h: h[0]) if self.by_id else list(sym.held)
        sym.held.clear()
        sym.holding = False
        for tid, ts, tick in held:
            if before is not None and ts < before:
                continue  # a kline update of a bar the history holds whole
            if self.by_id:
                if seam is not None and tid <= seam:
                    continue  # counted in the history already
                missing = self.sequencer.check(slot, tid)
                if missing < 0:
                    self.counters.duplicates += 1
                    continue
                if missing:
                    self.counters.gaps += missing
                    log.warning("%s: %s: %d trade(s) missed at the seam, ids %d..%d", self.feed, sym.name,
                                missing, tid - missing, tid - 1)
            if tick is not None:
                rows.append(tick)
            self._last_ts[slot] = ts
        parts = []
        if trades is not None and len(trades):
            parts.append(trade_ticks(trades, slot, now))
            self._last_ts[slot] = max(self._last_ts.get(slot, -1), int(trades["ts"][-1]))
        if rows:
            parts.append(np.array(rows, dtype=TICK_DTYPE))
        if seam is not None and slot not in self._last_ts:
            self._last_ts[slot] = now  # nothing passed on yet: a later gap refills from this bar
        if not parts:
            return None
        batch = np.concatenate(parts)
        self.counters.ticks += len(batch)
        return batch
