"""IndicatorBank: the state of a set of indicator outputs for a fixed number of symbol slots.

The bank owns one preallocated numpy buffer (state, committed and provisional outputs, bar counts, as
views) and drives the kernel compiled for its set of outputs (``specialised``); its plan (``plan_i``,
``plan_f``) describes the same instances to the engine's interpreter (``dispatch``). It never grows:
capacity is fixed at construction, so memory is known up front and nothing reallocates while a feed is
running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import Any

import numpy as np

from engine.indicators import dispatch, specialised
from engine.indicators.catalogue import OutputRef, resolve


class IndicatorBank:
    """Committed values (bar close) and provisional values (forming bar) per output and symbol.

    ``committed[row(name), slot]`` is the value as of the last closed bar; ``provisional`` is the value
    the forming bar would give if it closed now. Provisional updates never touch committed state.

    Updates, each one compiled call:

    - ``commit(slot, t, o, h, l, c, v)`` applies one closed bar to every output of ``slot``;
    - ``commit_many(slots, t, o, h, l, c, v)`` applies a batch of closed bars (arrays), in order, for any
      mix of slots;
    - ``preview(slot, t, o, h, l, c, v)`` computes the provisional values for the forming bar of ``slot``;
      committed state is unchanged.

    They are the compiled functions themselves with the bank's arrays bound (``functools.partial``), not
    methods: a Python frame per call would be a fifth of a single-bar update's time. On a set's own kernel,
    ``commit`` and ``preview`` are its compiled entry points, looked up once (at first use, so a bank that
    never takes single bars, like the engine's, never loads them): numba's dispatcher would otherwise type
    every argument on every call to pick the one signature these take, a third of the call's time.
    """

    commit_many: Callable[..., None]
    apply_bars: Callable[..., None]
    """``apply_bars(commit, record, rec, slots, t, o, h, l, c, v)``: a batch committed (and counted) or
    provisional; with ``record``, ``rec[i]`` receives every committed output right after bar ``i`` (the
    values a signal rule sees at that close). The engine's bar path (``engine.tick_engine``)."""

    def __init__(self, outputs: Sequence[str], capacity: int, specialise: bool | None = None) -> None:
        """``specialise``: run the set's own compiled kernel (True), the plan interpreter (False), or the
        kernel when it was compiled ahead and the interpreter otherwise (None; see ``specialised``)."""
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

        instances: dict[tuple[str, tuple[float, ...]], int] = {}
        for ref in refs:
            instances.setdefault(ref.instance_key, len(instances))
        plan_i = np.zeros((len(instances), dispatch.PLAN_INT_WIDTH), dtype=np.int64)
        plan_f = np.zeros((len(instances), dispatch.PLAN_FLOAT_WIDTH), dtype=np.float64)
        state_rows = 0
        out_rows = 0
        out_base: dict[tuple[str, tuple[float, ...]], int] = {}
        compiled: list[specialised.Instance] = []
        for key, k in instances.items():
            first = next(r for r in refs if r.instance_key == key)
            kind = first.kind
            typed = first.typed_params()
            ints = [v for v in typed if isinstance(v, int)]
            floats = [v for v in typed if isinstance(v, float)]
            plan_i[k, dispatch.COL_CODE] = kind.code
            plan_i[k, dispatch.COL_STATE] = state_rows
            plan_i[k, dispatch.COL_OUT] = out_rows
            plan_i[k, dispatch.COL_PARAMS : dispatch.COL_PARAMS + len(ints)] = ints
            plan_f[k, : len(floats)] = floats
            out_base[key] = out_rows
            compiled.append(specialised.Instance(kind, tuple(typed), state_rows, out_rows))
            state_rows += kind.rows(*typed)
            out_rows += len(kind.outputs)
        self.plan_i = plan_i
        self.plan_f = plan_f
        self._row = {r.name: out_base[r.instance_key] + r.index for r in refs}
        self._lookback = {r.name: r.lookback for r in refs}
        layout = specialised.Layout(max(state_rows, 1), max(out_rows, 1))
        self.buffer = np.zeros((layout.rows, capacity), dtype=np.float64)
        self.state = self.buffer[: layout.committed]
        self.committed = self.buffer[layout.committed : layout.provisional]
        self.provisional = self.buffer[layout.provisional : layout.counts]
        self.counts = self.buffer[layout.counts].view(np.int64)
        self.committed[:] = np.nan
        self.provisional[:] = np.nan
        widths = (dispatch.PLAN_INT_WIDTH - dispatch.COL_PARAMS, dispatch.PLAN_FLOAT_WIDTH)
        self.kernel_source = specialised.source(compiled, layout, *widths)
        if specialise is None:
            specialise = specialised.is_compiled(self.kernel_source)
        self.kernel = specialised.load(self.kernel_source) if specialise else None
        if self.kernel is not None:
            self.apply_bars = partial(self.kernel.apply_bars, self.buffer)
        else:
            arrays = (self.plan_i, self.plan_f, self.state)
            outs = (self.committed, self.provisional, self.counts)
            self.apply_bars = partial(dispatch.run_bars, *arrays, *outs)
        # the engine's record type (float64[:, ::1]), so this and the bar path share one compile
        self.commit_many = partial(self.apply_bars, True, False, np.zeros((0, self.committed.shape[0])))

    @cached_property
    def commit(self) -> Callable[[int, int, float, float, float, float, float], None]:
        if self.kernel is not None:
            return partial(_entry_point(self.kernel.commit_one, self.buffer), self.buffer)
        return partial(dispatch.commit_one, self.plan_i, self.plan_f, self.state, self.committed, self.counts)

    @cached_property
    def preview(self) -> Callable[[int, int, float, float, float, float, float], None]:
        if self.kernel is not None:
            return partial(_entry_point(self.kernel.preview_one, self.buffer), self.buffer)
        return partial(dispatch.preview_one, self.plan_i, self.plan_f, self.state, self.provisional)

    # --- state ---------------------------------------------------------------------------------
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
        return self.buffer.nbytes


def _entry_point(kernel: Any, buffer: np.ndarray) -> Callable[..., None]:
    """The compiled ``kernel(buffer, slot, t, o, h, l, c, v)`` (loaded from the cache, or compiled): the
    C wrapper numba's dispatcher calls once it has typed the arguments. It converts its arguments itself
    (an int slot and time, float prices; a Python int where a float goes is converted, as by the
    dispatcher)."""
    from numba import float64, int64, typeof

    entry: Callable[..., None] = kernel.compile((typeof(buffer), int64, int64, *[float64] * 5))
    return entry
