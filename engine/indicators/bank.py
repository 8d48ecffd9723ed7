"""IndicatorBank: the state of a set of indicator outputs for a fixed number of symbol slots.

The bank owns preallocated numpy arrays (state, committed and provisional outputs, bar counts) and
drives the compiled plan interpreter. It never grows: capacity is fixed at construction, so memory is
known up front and nothing reallocates while a feed is running.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.indicators import dispatch
from engine.indicators.catalogue import OutputRef, resolve


class IndicatorBank:
    """Committed values (bar close) and provisional values (forming bar) per output and symbol.

    ``committed[row(name), slot]`` is the value as of the last closed bar; ``provisional`` is the value
    the forming bar would give if it closed now. Provisional updates never touch committed state.
    """

    def __init__(self, outputs: Sequence[str], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        refs: list[OutputRef] = []
        for name in outputs:
            ref = resolve(name)
            if ref.name not in (r.name for r in refs):
                refs.append(ref)
        self.refs: tuple[OutputRef, ...] = tuple(refs)
        self.names: tuple[str, ...] = tuple(r.name for r in refs)
        self.capacity = capacity

        instances: dict[tuple[int, tuple[float, ...]], int] = {}
        for ref in refs:
            instances.setdefault(ref.instance_key, len(instances))
        plan_i = np.zeros((len(instances), dispatch.PLAN_INT_WIDTH), dtype=np.int64)
        plan_f = np.zeros((len(instances), dispatch.PLAN_FLOAT_WIDTH), dtype=np.float64)
        state_rows = 0
        out_rows = 0
        out_base: dict[tuple[int, tuple[float, ...]], int] = {}
        for (code, params), k in instances.items():
            kind = next(r.kind for r in refs if r.instance_key == (code, params))
            typed = next(r for r in refs if r.instance_key == (code, params)).typed_params()
            ints = [v for v in typed if isinstance(v, int)]
            floats = [v for v in typed if isinstance(v, float)]
            plan_i[k, dispatch.COL_CODE] = code
            plan_i[k, dispatch.COL_STATE] = state_rows
            plan_i[k, dispatch.COL_OUT] = out_rows
            plan_i[k, dispatch.COL_PARAMS : dispatch.COL_PARAMS + len(ints)] = ints
            plan_f[k, : len(floats)] = floats
            out_base[(code, params)] = out_rows
            state_rows += kind.rows(*typed)
            out_rows += len(kind.outputs)
        self.plan_i = plan_i
        self.plan_f = plan_f
        self._row = {r.name: out_base[r.instance_key] + r.index for r in refs}
        self._lookback = {r.name: r.lookback for r in refs}
        self.state = np.zeros((max(state_rows, 1), capacity), dtype=np.float64)
        self.committed = np.full((max(out_rows, 1), capacity), np.nan)
        self.provisional = np.full((max(out_rows, 1), capacity), np.nan)
        self.counts = np.zeros(capacity, dtype=np.int64)

    # --- updates ----------------------------------------------------------------------------
    def commit(self, slot: int, t: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """Apply one closed bar to every output of ``slot`` (one compiled call)."""
        dispatch.commit_one(self.plan_i, self.plan_f, self.state, self.committed, self.counts,
                            slot, t, o, h, l, c, v)

    def commit_many(self, slots: np.ndarray, t: np.ndarray, o: np.ndarray, h: np.ndarray,
                    l: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        """Apply a batch of closed bars, in order, for any mix of slots (one compiled call)."""
        dispatch.commit_bars(self.plan_i, self.plan_f, self.state, self.committed, self.counts,
                             slots, t, o, h, l, c, v)

    def preview(self, slot: int, t: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """Compute provisional values for the forming bar of ``slot``; committed state is unchanged."""
        dispatch.preview_one(self.plan_i, self.plan_f, self.state, self.provisional,
                             slot, t, o, h, l, c, v)

    def reset(self, slot: int) -> None:
        self.state[:, slot] = 0.0
        self.committed[:, slot] = np.nan
        self.provisional[:, slot] = np.nan
        self.counts[slot] = 0

    # --- reading ----------------------------------------------------------------------------
    def row(self, name: str) -> int:
        """The output row of ``name`` (resolved, so ``macd`` and ``macd_12_26_9`` are the same)."""
        return self._row[resolve(name).name]

    def lookback(self, name: str) -> int:
        """Bars that must close before ``name`` has a value (TA-Lib's lookback)."""
        return self._lookback[resolve(name).name]

    def is_warm(self, name: str, slot: int) -> bool:
        return bool(self.counts[slot] > self.lookback(name))

    def values(self, slot: int, provisional: bool = False) -> dict[str, float]:
        """A copy of every requested output for ``slot``."""
        src = self.provisional if provisional else self.committed
        return {name: float(src[self._row[name], slot]) for name in self.names}

    @property
    def nbytes(self) -> int:
        return (self.state.nbytes + self.committed.nbytes + self.provisional.nbytes
                + self.counts.nbytes)
