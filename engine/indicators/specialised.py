"""One compiled kernel per indicator set: the set's instances, state rows, output rows and parameters as
constants, generated from the catalogue's declarations (``codegen``) and cached on disk like every kernel.

The bank's three entry points (commit one bar, preview one bar, commit a batch) then run straight-line
code: no plan is read per bar, no branch on a kind code, every row offset and period is a constant the
compiler folds. A call passes one array and the bar: the bank's state, committed and provisional values
and bar counts live in one buffer (:class:`Layout`), since from Python most of a single-bar call's cost
is numba typing and unboxing each array argument (five arrays and the plan: ~1 us; one: ~0.3 us).

A committed batch runs one loop over its bars with every instance's step per bar, except for kinds that
declare a batch function (``Kind.batch``): each of those is one call over the whole batch. Why: LLVM
inlines a small step into the loop, but not a large one (Bollinger's window moments, MACD's three EMA
stages); a call per bar then passes some forty arguments through the stack, which was most of those
kinds' time. Their batch functions hold the common case in their own loop (``bench/indicators.py``:
batched 21-23 -> 32-35 M updates/s for its six indicators).

Why not every set: the cost is a compile per set, and it is not small. numba links the step functions
a kernel calls into the kernel's own LLVM module and optimises and generates machine code for all of it
again, so a set's three entry points take 1-3 s for a handful of indicators and ~20 s for the whole
catalogue, however many times the steps were compiled before. The test suite alone builds banks of over
a hundred different sets (one per scenario of each kernel test), which would add minutes to a fresh
``make test``; a console whose chart asks for a new set would stall its engine thread as long.

So a set runs specialised when its kernel was compiled ahead, on purpose: ``engine.precompile``
compiles the sets the program uses (``tickdeck indicators``' whole catalogue, the bench's six, the
default config's chart sets) and the console compiles its own config's chart sets at start-up, behind
its first frame with the compile's progress shown; each compiled set leaves a marker in the cache
(:func:`is_compiled`). Any other set (a test's, a one-off) runs on the plan interpreter of
``engine.indicators.dispatch`` at once, with no compile: the same step functions, so the same values
(``tests/unit/test_declarations.py`` runs every kind through both and its own step function). The
engine's bar path (``IndicatorBank.apply_bars``) takes the same rule: its set's kernel when compiled
ahead, the interpreter otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from engine.indicators import codegen
from engine.indicators.catalogue import Kind


@dataclass(frozen=True)
class Instance:
    """One indicator instance of a set: its kind, parameters (typed) and where its rows start."""

    kind: Kind
    params: tuple[int | float, ...]
    state_row: int
    out_row: int


def _array(values: Sequence[int | float], dtype: str, width: int) -> str:
    padded = [*values, *([0] * (width - len(values)))]
    return f"np.array([{', '.join(repr(v) for v in padded)}], dtype=np.{dtype})"


@dataclass(frozen=True)
class Layout:
    """Where a bank's parts sit in its one buffer (float64[rows, symbols]): state rows from 0, then the
    committed outputs, the provisional outputs, and one row of bar counts (int64, viewed in place)."""

    state_rows: int
    out_rows: int

    @property
    def committed(self) -> int:
        return self.state_rows

    @property
    def provisional(self) -> int:
        return self.state_rows + self.out_rows

    @property
    def counts(self) -> int:
        return self.state_rows + 2 * self.out_rows

    @property
    def rows(self) -> int:
        return self.counts + 1


def source(instances: Sequence[Instance], layout: Layout, int_width: int, float_width: int) -> str:
    """The set's kernel module: ``commit_one`` and ``preview_one`` (one bar) and ``apply_bars`` (a batch,
    committed or provisional, optionally recording the outputs after each bar), each taking the bank's
    buffer (see :class:`Layout`) first."""
    consts: list[str] = []
    commit: list[str] = []
    preview: list[str] = []
    batches: list[str] = []  # kinds with a batch function: one call each over the whole batch
    loop: list[str] = []  # the others: one loop over the batch, every instance per bar
    many_ahead: list[str] = []
    for k, inst in enumerate(instances):
        ints = [v for v in inst.params if isinstance(v, int)]
        floats = [float(v) for v in inst.params if isinstance(v, float)]
        consts += [f"IP{k} = {_array(ints, 'int64', int_width)}  # {inst.kind.key} {inst.params}",
                   f"FP{k} = {_array(floats, 'float64', float_width)}"]
        step = inst.kind.step_name
        args = f"buf, s, {inst.state_row}, IP{k}, FP{k}, {{bar}}, {{commit}}, buf, {{ob}}"
        bar = "o, h, l, c, v, t"
        ob = layout.committed + inst.out_row
        commit.append(f"    {step}({args.format(bar=bar, commit=True, ob=ob)})")
        ahead = args.format(bar=bar, commit=False, ob=layout.provisional + inst.out_row)
        preview.append(f"    {step}({ahead})")
        bars = "o[i], h[i], l[i], c[i], v[i], t[i]"
        first, end = inst.out_row, inst.out_row + len(inst.kind.outputs)
        if inst.kind.batch:
            batches.append(f"        {inst.kind.batch}(buf, {inst.state_row}, IP{k}, FP{k}, slots, n, "
                           f"o, h, l, c, v, t, buf, {ob}, record, rec, {first})")
        else:
            loop += [f"            {step}({args.format(bar=bars, commit=True, ob=ob)})",
                     "            if record:",
                     f"                for r in range({first}, {end}):",
                     f"                    rec[i, r] = buf[{layout.committed} + r, s]"]
        batch = args.format(bar=bars, commit=False, ob=layout.provisional + inst.out_row)
        many_ahead += ["        for i in range(n):", "            s = slots[i]",
                       f"            {step}({batch})"]
    many = [*batches, *(["        for i in range(n):", "            s = slots[i]", *loop] if loop else [])]
    imports = [(i.kind.step_module, i.kind.step_name) for i in instances]
    imports += [(i.kind.step_module, i.kind.batch) for i in instances if i.kind.batch]
    lines = [
        '"""Generated by engine.indicators.specialised from catalogue.KINDS for one set; do not edit."""',
        "import numpy as np",
        "",
        "from engine.jit import njit, njit_no_refcounts",
        *codegen.step_imports(imports),
        "",
        *consts,
        "",
        "",
        "@njit_no_refcounts",
        "def commit_one(buf, s, t, o, h, l, c, v):",
        *commit,
        f"    buf[{layout.counts}].view(np.int64)[s] += 1",
        "",
        "",
        "@njit_no_refcounts",
        "def preview_one(buf, s, t, o, h, l, c, v):",
        *(preview or ["    pass"]),
        "",
        "",
        "@njit",
        "def apply_bars(buf, commit, record, rec, slots, t, o, h, l, c, v):",
        "    n = slots.shape[0]",
        "    if commit:",  # constant ``commit`` in each branch: the steps' state writes fold either way
        *many,
        f"        counts = buf[{layout.counts}].view(np.int64)",
        "        for i in range(n):",
        "            counts[slots[i]] += 1",
        "    else:",
        *(many_ahead or ["        pass"]),
        "",
    ]
    return "\n".join(lines)


def load(text: str) -> ModuleType:
    """The set's kernel module (generated and imported once per process; compiled at its first call)."""
    return codegen.load("set", text)


def _marker(text: str) -> Path:
    return codegen.directory() / f"set_{codegen.text_digest(text)}.ready"


def is_compiled(text: str) -> bool:
    """True when this set's kernel was compiled into the cache by :func:`mark_compiled`'s caller
    (``engine.precompile.compile_sets``)."""
    return _marker(text).is_file()


def mark_compiled(text: str) -> None:
    marker = _marker(text)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
