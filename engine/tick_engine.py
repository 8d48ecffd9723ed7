"""Engine: ticks in, closed bars, indicator values and signals out — one compiled call per batch.

This is the object the console, the headless service and the tests share. It owns every per-symbol
array (forming bars, history rings, indicator state, rule state), all preallocated for
``capacity`` symbols, so memory is fixed when it is built and nothing allocates per tick.

Live ticks go in through ``ingest``; history (bars from the past) through ``ingest_history``, which
takes the same path but marks it: a bar built only from history gives signals with ``warmup=True``.
Trades a feed missed and fetched again go in through ``refill``, which re-runs one symbol from the bar
where its gap began.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine import bars as barkernel
from engine.history import BarHistory
from engine.indicators.bank import IndicatorBank
from engine.memory import pin_mmap_threshold, release_compiler_pages
from engine.signals.detector import SignalDetector
from engine.signals.events import Signal
from engine.signals.rules import Rule, required_outputs
from engine.ticks import SymbolTable, check_refill, make_ticks

_compiler_released = False  # once per process: LLVM's pages, after the first batch loaded the kernels

_Arrays4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_Arrays5 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class EngineStats:
    ticks: int
    bars: int
    late_ticks: int
    bad_ticks: int
    history_bars: int = 0  # bars taken in as history (``ticks`` counts the live tape only)
    refills: int = 0  # symbols re-run from an earlier bar with trades a feed missed (``Engine.refill``)


class Engine:
    def __init__(
        self,
        outputs: Sequence[str],
        interval_ns: int,
        capacity: int = 1024,
        depth: int = 2000,
        rules: Sequence[Rule] = (),
        batch_capacity: int = 8192,
        specialise: bool | None = None,
    ) -> None:
        """``specialise``: the indicators on the kernel compiled for their set (True), on the plan
        interpreter (False), or on the kernel when the set was compiled ahead (None, see
        ``engine.indicators.specialised``); the values are the same either way."""
        if interval_ns <= 0:
            raise ValueError(f"bar interval must be positive, got {interval_ns} ns")
        pin_mmap_threshold()  # transient arrays (history at start) are given back when freed
        self.interval_ns = int(interval_ns)
        self.capacity = capacity
        self.symbols = SymbolTable(capacity)
        names = list(outputs)
        names += [n for n in required_outputs(rules) if n not in names]
        self.bank = IndicatorBank(names, capacity, specialise)
        self.history = BarHistory(capacity, depth)
        self.detector = SignalDetector(rules, self.bank, capacity, self.symbols.name)
        self.symbols.on_add(self.detector.set_symbol)
        self._live_rules = any(r.on == "live" for r in rules)
        # forming bars
        self.forming_start = np.full(capacity, barkernel.NO_BAR, dtype=np.int64)
        self.forming = np.zeros((capacity, 5), dtype=np.float64)
        self.forming_warm = np.zeros(capacity, dtype=np.bool_)  # only history in the forming bar
        self.carry = np.zeros(capacity, dtype=np.float64)  # late volume waiting for the next bar
        # per-batch scratch, sized once
        self._batch = batch_capacity
        n_out = self.bank.committed.shape[0]
        self._c_slot = np.zeros(batch_capacity, dtype=np.int64)
        self._c_t = np.zeros(batch_capacity, dtype=np.int64)
        self._c_bar = np.zeros((batch_capacity, 5), dtype=np.float64)
        self._c_cols = np.zeros((5, batch_capacity), dtype=np.float64)  # the same bars, a row per field
        self._c_warm = np.zeros(batch_capacity, dtype=np.bool_)
        self._c_vals = np.zeros((batch_capacity, n_out), dtype=np.float64)
        self._dirty = np.zeros(capacity, dtype=np.bool_)
        self._d_list = np.zeros(capacity, dtype=np.int64)
        self._f_t = np.zeros(capacity, dtype=np.int64)  # the dirty symbols' forming bars, for previews
        self._f_cols = np.zeros((5, capacity), dtype=np.float64)
        self._stats = np.zeros(4, dtype=np.int64)
        self._history_bars = 0
        self._refills = 0
        self._clock_ns = 0  # the latest time close_due was given: bars that ended by then are closed
        self.on_closed: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] | None = None
        """Called with (slots, open times, o h l c v rows, history-only flags) of the bars each kernel
        call closes, live or history: views into scratch arrays, so copy what is kept. The runtime's
        bar store writer is the one listener (``engine.store_writer``)."""

    # --- symbols -------------------------------------------------------------------------------
    def closed_bars(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of ``name``'s closed bars, (times, o h l c v), oldest first; None for an unknown symbol.
        Call on the engine's thread (``runtime.call``), so no bar is half written while copied."""
        slot = self.symbols.get(name)
        return None if slot is None else self.history.tail(slot)

    def add_symbol(self, name: str) -> int:
        """The slot for ``name``, registering it (and its rule filters) the first time."""
        return self.symbols.slot(name)

    # --- data ----------------------------------------------------------------------------------
    def ingest(self, ticks: np.ndarray, *, warmup: bool = False) -> list[Signal]:
        """Apply a batch of ``TICK_DTYPE`` ticks (any mix of symbols, in arrival order); ``warmup``: they
        are history, not the live tape (``ingest_history`` is the usual way in for history)."""
        signals: list[Signal] = []
        for lo in range(0, len(ticks), self._batch):
            chunk = ticks[lo : lo + self._batch]
            closed, dirty = barkernel.build(
                np.ascontiguousarray(chunk["sym"]), np.ascontiguousarray(chunk["ts"]),
                np.ascontiguousarray(chunk["price"]), np.ascontiguousarray(chunk["size"]),
                self.interval_ns, bool(warmup), self.forming_start, self.forming, self.forming_warm,
                self.carry, *self._history_args(), *self._closed_args(), self._dirty, self._d_list,
                self._f_t, self._f_cols, self._stats,
            )
            self._commit_closed(closed)
            if dirty:
                self.bank.apply_bars(False, False, self._c_vals[:0], self._d_list[:dirty], self._f_t[:dirty],
                                     *self._f_cols[:, :dirty])
            signals += self._detect(closed)
            if self._live_rules and dirty:
                signals += self._detect_live(dirty)
        global _compiler_released
        if not _compiler_released:  # the batch kernel is loaded: LLVM's code is not needed to run it
            _compiler_released = True
            release_compiler_pages()
        return signals

    def ingest_history(self, bars: np.ndarray) -> list[Signal]:
        """Apply bars from the past (``BAR_DTYPE``, in time order within each symbol): they build bars and
        warm the indicators exactly as the live tape would, and their signals carry ``warmup=True``.

        Each bar goes in as four ticks that rebuild it (open; low and high; close, 0-3 ns after the start
        of the engine bar that holds its time; the whole volume on the open), so history with a finer
        interval than the engine's aggregates, and the last bar stays forming for the live tape to
        continue. History must come before a symbol's live ticks: older bars would count as late.
        """
        signals: list[Signal] = []
        step = max(self._batch // 4, 1)
        for lo in range(0, len(bars), step):
            signals += self.ingest(_history_ticks(bars[lo : lo + step], self.interval_ns), warmup=True)
        self._history_bars += len(bars)
        return signals

    def refill(self, slot: int, since_ns: int, ticks: np.ndarray) -> list[Signal]:
        """Re-run ``slot`` from ``since_ns`` with the trades a feed missed and fetched again
        (``engine.feeds.base.Refill`` says what the arguments must be).

        Its bars that opened at or after ``since_ns`` (closed ones in the history ring, and the forming
        one) are discarded; its indicator state and its close rules' state are rebuilt by committing the
        ring's remaining bars again, silently (their signals went out already); then ``ticks`` go in as
        history: the bars they close fire signals marked ``warmup=True``, and the last one stays forming
        for the symbol's live ticks to continue. Live rules keep their state and see the refill as one
        batch. O(bars in the ring); no other symbol is touched.

        Exactly an uninterrupted run's state while the ring holds every bar since the symbol started;
        once older bars have left the ring, the state is rebuilt from the oldest bar it holds, as if the
        symbol had started there (TA-Lib over the ring's window).
        """
        if not 0 <= slot < len(self.symbols):
            raise ValueError(f"refill: slot {slot} holds no symbol (the engine has {len(self.symbols)})")
        if since_ns % self.interval_ns:
            raise ValueError(f"refill of {self.symbols.name(slot)}: since_ns {since_ns} is not the open time "
                             f"of a bar (bars are {self.interval_ns} ns)")
        check_refill(slot, since_ns, ticks)
        kept, dropped = self.history.truncate(slot, since_ns)
        self._stats[barkernel.ST_BARS] -= dropped  # rebuilt below: each bar is counted once
        self.bank.reset(slot)
        self.detector.forget_closed(slot)
        self.forming_start[slot] = barkernel.NO_BAR
        self.forming_warm[slot] = False
        for first in range(0, kept, self._batch):
            n = min(self._batch, kept - first)
            barkernel.replay(slot, first, n, *self._history_args(), self._c_slot, self._c_t, self._c_bar,
                             self._c_cols)
            self._commit_closed(n)
            self.detector.replay_closed(self._c_slot[:n], self._c_t[:n], self._c_bar[:n], self._c_vals[:n])
        self._refills += 1
        signals = self.ingest(ticks, warmup=True)
        start = int(self.forming_start[slot])
        if start != barkernel.NO_BAR and start + self.interval_ns <= self._clock_ns:
            # the refill came after the clock passed the symbol's last bar (no trade of it since the gap):
            # closed now, as the uninterrupted run closed it, not left forming until the next timer
            signals += self.close_due(self._clock_ns)
        return signals

    def close_due(self, now_ns: int) -> list[Signal]:
        """Close the forming bars whose interval has ended by ``now_ns`` (call on a timer)."""
        self._clock_ns = max(self._clock_ns, now_ns)
        signals: list[Signal] = []
        while True:
            closed = barkernel.close_due(
                now_ns, self.interval_ns, self.forming_start, self.forming, self.forming_warm,
                *self._history_args(), *self._closed_args(), self._stats,
            )
            self._commit_closed(closed)
            signals += self._detect(closed)
            if closed < self._batch:
                return signals

    def _history_args(self) -> _Arrays4:
        h = self.history
        return h.t, h.bars, h.head, h.count

    def _closed_args(self) -> _Arrays5:
        return self._c_slot, self._c_t, self._c_bar, self._c_cols, self._c_warm

    def _commit_closed(self, closed: int) -> None:
        """Commit the first ``closed`` records to every indicator, recording the values after each."""
        if closed:
            self.bank.apply_bars(True, True, self._c_vals, self._c_slot[:closed], self._c_t[:closed],
                                 *self._c_cols[:, :closed])

    def _detect(self, closed: int) -> list[Signal]:
        if not closed:
            return []
        if self.on_closed is not None:
            self.on_closed(self._c_slot[:closed], self._c_t[:closed], self._c_bar[:closed],
                           self._c_warm[:closed])
        return self.detector.on_closed(self._c_slot[:closed], self._c_t[:closed],
                                       self._c_bar[:closed], self._c_vals[:closed],
                                       warmup=self._c_warm[:closed])

    def _detect_live(self, dirty: int) -> list[Signal]:
        slots = self._d_list[:dirty].copy()
        return self.detector.on_live(slots, self.forming_start[slots], self.forming[slots],
                                     np.ascontiguousarray(self.bank.provisional[:, slots].T),
                                     warmup=self.forming_warm[slots])

    # --- reading -------------------------------------------------------------------------------
    @property
    def stats(self) -> EngineStats:
        t, b, late, bad = (int(x) for x in self._stats)
        return EngineStats(ticks=t, bars=b, late_ticks=late, bad_ticks=bad, history_bars=self._history_bars,
                           refills=self._refills)

    def forming_bar(self, slot: int) -> tuple[int, np.ndarray] | None:
        """(open time, copy of o h l c v) of the forming bar, or None when there is none."""
        start = int(self.forming_start[slot])
        if start == barkernel.NO_BAR:
            return None
        return start, self.forming[slot].copy()

    def drop_forming(self, slot: int) -> None:
        """Forget ``slot``'s forming bar, unclosed: its symbol went to another engine (``--shard``), which
        builds that bar whole; closed here it would be a partial bar. Closed bars and indicators stay."""
        self.forming_start[slot] = barkernel.NO_BAR
        self.forming_warm[slot] = False

    def reset(self, slot: int) -> None:
        self.bank.reset(slot)
        self.history.reset(slot)
        self.detector.reset(slot)
        self.forming_start[slot] = barkernel.NO_BAR
        self.forming_warm[slot] = False
        self.carry[slot] = 0.0

    @property
    def nbytes(self) -> int:
        """Bytes held in the engine's preallocated arrays."""
        arrays = (self.forming_start, self.forming, self.forming_warm, self.carry, self._c_slot, self._c_t,
                  self._c_bar, self._c_cols, self._c_warm, self._c_vals, self._dirty, self._d_list, self._f_t,
                  self._f_cols)
        return self.bank.nbytes + self.history.nbytes + sum(a.nbytes for a in arrays)


def _history_ticks(bars: np.ndarray, interval: int) -> np.ndarray:
    """Four ticks per bar that rebuild it: open, low and high (low first when the bar closed up, as a
    replay orders them), close; 0 to 3 ns into the engine bar that holds the bar's time. The open
    carries the whole volume, so the bar's volume is exact."""
    n = len(bars)
    o, h, lo, c = bars["open"], bars["high"], bars["low"], bars["close"]
    up = c >= o
    ticks = make_ticks(4 * n)
    ticks["price"] = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1).ravel()
    start = bars["t"].astype(np.int64)
    ticks["ts"] = ((start - start % interval)[:, None] + np.arange(4, dtype=np.int64)).ravel()
    ticks["recv"] = ticks["ts"]
    ticks["sym"] = np.repeat(bars["sym"], 4)
    size = np.zeros((n, 4))
    size[:, 0] = bars["volume"]
    ticks["size"] = size.ravel()
    return ticks
