"""SignalDetector: rules compiled to numeric tables, evaluated over a batch of bars in one compiled call.

Each enabled rule becomes one or two crossings ("lines"): operand sources (an output row of the bank's
values, a bar field, or a constant), a direction mask, and the rule's cooldown, mode and symbol mask.
State lives in preallocated arrays: the previous valid operands per (line, slot) and the bar time of
the last fire per (rule, slot). A batch is one call into ``kernel.evaluate``; only fired crossings
become Python objects. Not thread-safe: one thread (the one that feeds the bank) drives it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from engine.indicators.bank import IndicatorBank
from engine.signals import kernel
from engine.signals.events import Signal
from engine.signals.rules import BAR_FIELDS, POSITION_OPERANDS, Operand, Rule, RuleError

_SOURCES = {"output": kernel.SRC_OUTPUT, "field": kernel.SRC_FIELD, "const": kernel.SRC_CONST,
            "position": kernel.SRC_POSITION}
PositionFigures = tuple[float, float, float, float]
"""A symbol's position as the detector takes it: (average cost, quantity, stop, target), NaN for none
(``engine.positions.alerts.figures`` builds them from a book)."""
MAX_POSITIONS = 100_000
"""Symbols ``set_positions`` keeps figures for (slots past them get none): a bound on its dict, far
above a book's symbols (its lots are bounded by ``engine.positions.book.MAX_LOTS``)."""
_DIRECTIONS = {"up": kernel.DIR_UP, "down": kernel.DIR_DOWN, "both": kernel.DIR_UP | kernel.DIR_DOWN}
MODE_CLOSE, MODE_LIVE = 0, 1


class SignalDetector:
    """Turns closed bars (``on_closed``) and forming bars (``on_live``) into ``Signal`` events; a bar marked
    as history gives signals with ``warmup=True`` (rule state and cooldowns run on history as on live
    bars, so the first live bar is judged against warm state).

    ``values[j]`` of a batch is a copy of ``bank.committed[:, slots[j]]`` (or ``bank.provisional`` for
    live records) taken right after record j was applied, so its columns are the bank's output rows.
    Slots are filtered by each rule's ``symbols`` through ``set_symbol``, which must be called for
    every slot that gets a symbol (rules without ``symbols`` apply to every slot from the start).

    Position rules (``pnl``, ``stop``, ``target``) read ``pos``, float64[4, capacity]: per slot the
    average cost, quantity, stop and target (NaN: none), filled by ``set_positions`` when the book
    changes and by ``set_symbol`` for a symbol that gets its slot later; the kernel reads them, so a tick
    costs no Python. Their signals carry the position's figures (``Signal.position``).
    """

    def __init__(self, rules: Sequence[Rule], bank: IndicatorBank, capacity: int,
                 symbol_name: Callable[[int], str], *, clock: Callable[[], int] = time.time_ns,
                 buffer: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.rules: tuple[Rule, ...] = tuple(r for r in rules if r.enabled)
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"rule ids must be unique; {dup!r} appears more than once")
        self.capacity = capacity
        self.width = int(bank.committed.shape[0])
        self._symbol_name = symbol_name
        self._clock = clock

        rows: dict[str, int] = {}
        for rule in self.rules:
            for name in rule.outputs():
                if name not in bank.names:
                    raise RuleError(f"rule {rule.id!r}", rule.file, None,
                                    f"needs indicator output {name!r}, which the bank does not compute "
                                    "(build the bank with required_outputs(rules))")
                rows[name] = bank.row(name)

        line_rule: list[int] = []
        ops: list[tuple[Operand, Operand]] = []
        dirs: list[int] = []
        modes: list[int] = []
        flips: list[bool] = []
        self._meta: list[tuple[str, str, str]] = []  # per line: rule id, a's name, b's name
        for r, rule in enumerate(self.rules):
            for c in rule.crossings:
                line_rule.append(r)
                ops.append((c.a, c.b))
                dirs.append(_DIRECTIONS[c.direction])
                flips.append(c.flip_short)
                modes.append(MODE_LIVE if rule.on == "live" else MODE_CLOSE)
                self._meta.append((rule.id, c.a.name, c.b.name))

        def source(op: Operand) -> tuple[int, int, float]:
            if op.source == "output":
                return kernel.SRC_OUTPUT, rows[op.name], np.nan
            if op.source == "field":
                return kernel.SRC_FIELD, BAR_FIELDS.index(op.name), np.nan
            if op.source == "position":
                return kernel.SRC_POSITION, POSITION_OPERANDS.index(op.name), np.nan
            return kernel.SRC_CONST, 0, op.value

        a_tab = [source(a) for a, _ in ops]
        b_tab = [source(b) for _, b in ops]
        nl, nr = len(ops), len(self.rules)
        self._line_rule = np.array(line_rule, dtype=np.int64)
        self._a_src = np.array([x[0] for x in a_tab], dtype=np.int64)
        self._a_idx = np.array([x[1] for x in a_tab], dtype=np.int64)
        self._a_val = np.array([x[2] for x in a_tab], dtype=np.float64)
        self._b_src = np.array([x[0] for x in b_tab], dtype=np.int64)
        self._b_idx = np.array([x[1] for x in b_tab], dtype=np.int64)
        self._b_val = np.array([x[2] for x in b_tab], dtype=np.float64)
        self._dir = np.array(dirs, dtype=np.int64)
        self._flip = np.array(flips, dtype=np.bool_)
        on_position = [a.source == "position" or b.source == "position" for a, b in ops]
        self._lines_position = np.flatnonzero(np.array(on_position, dtype=np.bool_)).astype(np.int64)
        self._rule_position = np.array([any(c.a.source == "position" or c.b.source == "position"
                                            for c in rule.crossings) for rule in self.rules], dtype=np.bool_)
        self.pos = np.full((kernel.POS_ROWS, capacity), np.nan)
        self._positions: dict[str, PositionFigures] = {}
        self._slots: dict[str, int] = {}  # symbol -> slot, as set_symbol saw them
        mode = np.array(modes, dtype=np.int64)
        self._lines_close = np.flatnonzero(mode == MODE_CLOSE).astype(np.int64)
        self._lines_live = np.flatnonzero(mode == MODE_LIVE).astype(np.int64)
        self._rules_close = np.array([r for r, rule in enumerate(self.rules) if rule.on != "live"],
                                     dtype=np.int64)
        self._cooldown = np.array([r.cooldown_ns for r in self.rules], dtype=np.int64)
        self.symbol_mask = np.ones((nr, capacity), dtype=np.bool_)
        for r, rule in enumerate(self.rules):
            if rule.symbols is not None:
                self.symbol_mask[r, :] = False

        self._prev_a = np.full((nl, capacity), np.nan)
        self._prev_b = np.full((nl, capacity), np.nan)
        self._last_fire = np.zeros((nr, capacity), dtype=np.int64)
        self._has_fired = np.zeros((nr, capacity), dtype=np.bool_)

        size = max(buffer, nl, 1)
        self._out_rec = np.zeros(size, dtype=np.int64)
        self._out_line = np.zeros(size, dtype=np.int64)
        self._out_dir = np.zeros(size, dtype=np.int64)
        self._out_a = np.zeros(size, dtype=np.float64)
        self._out_b = np.zeros(size, dtype=np.float64)

    # --- symbols and state --------------------------------------------------------------------
    def set_symbol(self, slot: int, name: str) -> None:
        """``slot`` now holds ``name``: apply the rules' symbol filters and forget the slot's state."""
        self._check_slot(slot)
        for r, rule in enumerate(self.rules):
            self.symbol_mask[r, slot] = rule.applies_to(name)
        self._slots[name] = slot  # one per slot: bounded by the capacity
        self.pos[:, slot] = self._positions.get(name, (np.nan,) * kernel.POS_ROWS)
        self.reset(slot)

    def set_positions(self, positions: Mapping[str, PositionFigures]) -> None:
        """The book's positions by symbol (every one: a symbol left out has none). Called when the book
        changes, on the thread that drives the detector. A slot whose figures changed forgets its
        position lines' previous operands, so a new stop, or a lot that moves the average cost, only
        primes them: the next crossing of the price fires, not the edit itself."""
        if len(positions) > MAX_POSITIONS:
            raise ValueError(f"{len(positions)} positions is more than the {MAX_POSITIONS:,} the detector "
                             "keeps")
        fresh = np.full_like(self.pos, np.nan)
        for name, figures in positions.items():
            slot = self._slots.get(name)
            if slot is not None:
                fresh[:, slot] = figures
        changed = np.flatnonzero(((fresh != self.pos) & ~(np.isnan(fresh) & np.isnan(self.pos))).any(axis=0))
        self._positions = dict(positions)
        self.pos[:] = fresh
        if changed.size and self._lines_position.size:
            self._prev_a[np.ix_(self._lines_position, changed)] = np.nan
            self._prev_b[np.ix_(self._lines_position, changed)] = np.nan

    def reset(self, slot: int) -> None:
        """Forget previous operands and cooldowns of ``slot`` (the next valid record only primes)."""
        self._check_slot(slot)
        self._prev_a[:, slot] = np.nan
        self._prev_b[:, slot] = np.nan
        self._last_fire[:, slot] = 0
        self._has_fired[:, slot] = False

    def forget_closed(self, slot: int) -> None:
        """Forget the state of ``slot`` that closed bars built (``on = "close"`` rules), before a refill
        replays them with ``replay_closed``. Live rules keep theirs: they judge forming bars, batch by
        batch, and the refill's own batch continues from what they last saw."""
        self._check_slot(slot)
        self._prev_a[self._lines_close, slot] = np.nan
        self._prev_b[self._lines_close, slot] = np.nan
        self._last_fire[self._rules_close, slot] = 0
        self._has_fired[self._rules_close, slot] = False

    def replay_closed(self, slots: np.ndarray, t: np.ndarray, bars: np.ndarray, values: np.ndarray) -> None:
        """Run ``on = "close"`` rules over closed bars whose signals went out already (a refill's replay):
        previous operands and cooldowns move exactly as they did then; nothing is emitted."""
        k = slots.shape[0]
        if k == 0 or self._lines_close.shape[0] == 0:
            return
        start = 0
        while start < k:  # fires are written to the buffer and dropped; a full buffer only means a pass more
            _, start = kernel.evaluate(
                start, slots, t, bars, values, self._lines_close, self._line_rule, self._a_src, self._a_idx,
                self._a_val, self._b_src, self._b_idx, self._b_val, self._dir, self._flip, self._cooldown,
                self.symbol_mask, self.pos, self._prev_a, self._prev_b, self._last_fire, self._has_fired,
                self._out_rec, self._out_line, self._out_dir, self._out_a, self._out_b,
            )

    # --- evaluation ---------------------------------------------------------------------------
    def on_closed(self, slots: np.ndarray, t: np.ndarray, bars: np.ndarray, values: np.ndarray, *,
                  warmup: np.ndarray | None = None) -> list[Signal]:
        """Evaluate ``on = "close"`` rules on closed bars: slots int64[k], t int64[k] (bar open times),
        bars float64[k, 5] (o, h, l, c, v), values float64[k, R] (committed outputs after each bar),
        warmup bool[k] (the bar is history; None: every bar is live)."""
        return self._run(self._lines_close, slots, t, bars, values, warmup)

    def on_live(self, slots: np.ndarray, t: np.ndarray, bars: np.ndarray, values: np.ndarray, *,
                warmup: np.ndarray | None = None) -> list[Signal]:
        """Evaluate ``on = "live"`` rules on forming bars (provisional values); same shapes."""
        return self._run(self._lines_live, slots, t, bars, values, warmup)

    def _run(self, lines: np.ndarray, slots: np.ndarray, t: np.ndarray, bars: np.ndarray,
             values: np.ndarray, warmup: np.ndarray | None) -> list[Signal]:
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        t = np.ascontiguousarray(t, dtype=np.int64)
        bars = np.ascontiguousarray(bars, dtype=np.float64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        k = slots.shape[0] if slots.ndim == 1 else -1
        warm = np.zeros(max(k, 0), dtype=np.bool_) if warmup is None else np.asarray(warmup, dtype=np.bool_)
        if (k < 0 or t.shape != (k,) or bars.shape != (k, 5) or values.shape != (k, self.width)
                or warm.shape != (k,)):
            raise ValueError(
                f"expected slots[k], t[k], bars[k, 5], values[k, {self.width}], warmup[k]; got "
                f"slots{list(slots.shape)}, t{list(t.shape)}, bars{list(bars.shape)}, "
                f"values{list(values.shape)}, warmup{list(warm.shape)}"
            )
        if k == 0 or lines.shape[0] == 0:
            return []
        lo, hi = int(slots.min()), int(slots.max())
        if lo < 0 or hi >= self.capacity:
            raise ValueError(f"slot {lo if lo < 0 else hi} is outside 0..{self.capacity - 1}")
        signals: list[Signal] = []
        start = 0
        while start < k:  # more than one pass only when a batch fires more than the buffer holds
            n, start = kernel.evaluate(
                start, slots, t, bars, values, lines, self._line_rule, self._a_src, self._a_idx,
                self._a_val, self._b_src, self._b_idx, self._b_val, self._dir, self._flip, self._cooldown,
                self.symbol_mask, self.pos, self._prev_a, self._prev_b, self._last_fire, self._has_fired,
                self._out_rec, self._out_line, self._out_dir, self._out_a, self._out_b,
            )
            if n:
                signals.extend(self._signals(int(n), slots, t, bars, warm))
        return signals

    def _signals(self, n: int, slots: np.ndarray, t: np.ndarray, bars: np.ndarray,
                 warm: np.ndarray) -> list[Signal]:
        now = self._clock()
        rec = self._out_rec[:n]
        meta = self._meta
        name = self._symbol_name
        up = kernel.DIR_UP
        held = self._rule_position[self._line_rule[self._out_line[:n]]].tolist()
        return [
            Signal(name(s), meta[ln][0], "up" if d == up else "down", tj, c,
                   {meta[ln][1]: a, meta[ln][2]: b}, now, w, self._figures(s, c) if h else None)
            for s, tj, c, ln, d, a, b, w, h in zip(
                slots[rec].tolist(), t[rec].tolist(), bars[rec, 3].tolist(), self._out_line[:n].tolist(),
                self._out_dir[:n].tolist(), self._out_a[:n].tolist(), self._out_b[:n].tolist(),
                warm[rec].tolist(), held, strict=True)
        ]

    def _figures(self, slot: int, price: float) -> dict[str, float]:
        """The position's figures at ``price`` (the close that fired), for a position rule's signal."""
        average, quantity, stop, target = self.pos[:, slot].tolist()
        return {"quantity": quantity, "average_cost": average, "unrealized": quantity * (price - average),
                "unrealized_pct": _pnl_pct(price, average, quantity), "stop": stop,
                "target": target}

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.capacity:
            raise ValueError(f"slot {slot} is outside 0..{self.capacity - 1}")


def _pnl_pct(close: float, average: float, quantity: float) -> float:
    """``kernel.pnl_pct`` in Python, for the few signals that fire (a call into the compiled one from
    Python would compile it once more at run time)."""
    cost = quantity * average
    if math.isnan(cost) or cost == 0.0:
        return math.nan
    return 100.0 * (quantity * close - cost) / abs(cost)
