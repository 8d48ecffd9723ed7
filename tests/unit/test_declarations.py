"""Every declared kind is reachable: its outputs, run through the generated code (the plan interpreter and
a kernel specialised to a set, one bar at a time and in batches), equal its own step function called
directly on a state of its declared size. A kind whose declaration,
state size or branch disagreed would differ here (or index outside its rows and differ from the
reference). TA-Lib parity itself is ``test_parity``; here every kind that names a TA-Lib function has
its outputs in that oracle."""

from __future__ import annotations

import numpy as np
import pytest

from engine.indicators import dispatch
from engine.indicators.bank import IndicatorBank
from engine.indicators.catalogue import DEFAULT_OUTPUTS, KINDS, IndicatorError, Kind, canonical, resolve
from tests.data import random_walk
from tests.unit.oracle import TALIB

BARS = random_walk(n=300, seed=11)
GUARD, SENTINEL = 8, 12345.0


def _names(kind: Kind) -> list[str]:
    return [canonical(kind, i, [p.default for p in kind.params]) for i in range(len(kind.outputs))]


def _reference(kind: Kind, slot: int, capacity: int) -> np.ndarray:
    """The kind's step function alone, on a state of its declared rows followed by guard rows that it must
    never touch: outputs after each bar."""
    typed = [p.default if p.kind is float else int(p.default) for p in kind.params]
    rows = kind.rows(*typed)
    st = np.zeros((rows + GUARD, capacity))
    st[rows:] = SENTINEL
    out = np.full((len(kind.outputs), capacity), np.nan)
    ip = np.zeros(dispatch.PLAN_INT_WIDTH - dispatch.COL_PARAMS, dtype=np.int64)
    fp = np.zeros(dispatch.PLAN_FLOAT_WIDTH)
    ints = [v for v in typed if isinstance(v, int)]
    floats = [v for v in typed if isinstance(v, float)]
    ip[: len(ints)] = ints
    fp[: len(floats)] = floats
    step = kind.step_function()
    series = np.empty((len(BARS), len(kind.outputs)))
    for i, (t, o, h, l, c, v) in enumerate(BARS.rows()):
        step(st, slot, 0, ip, fp, o, h, l, c, v, t, True, out, 0)
        series[i] = out[:, slot]
    assert (st[rows:] == SENTINEL).all(), f"{kind.key} writes beyond its {rows} declared rows"
    return series


@pytest.fixture(scope="module")
def paths() -> dict[str, tuple[IndicatorBank, np.ndarray]]:
    """The whole catalogue (every kind; all but the first start past row 0) streamed through each path:
    the set's specialised kernel (``tickdeck indicators``' set, compiled by ``engine.precompile``) and the
    plan interpreter, one bar at a time; both in one batch. Series of committed values, bar by bar."""
    out = {}
    for path, specialise in (("specialised", True), ("interpreter", False)):
        bank = IndicatorBank(DEFAULT_OUTPUTS, 3, specialise=specialise)
        assert (bank.kernel is not None) == specialise
        series = np.empty((len(BARS), len(bank.names)))
        for i, (t, o, h, l, c, v) in enumerate(BARS.rows()):
            bank.commit(1, t, o, h, l, c, v)
            series[i] = bank.committed[:, 1]
        out[path] = (bank, series)
        batched = IndicatorBank(DEFAULT_OUTPUTS, 3, specialise=specialise)
        slots = np.ones(len(BARS), dtype=np.int64)
        batched.commit_many(slots, BARS.t, BARS.o, BARS.h, BARS.l, BARS.c, BARS.v)
        np.testing.assert_array_equal(batched.state, bank.state)
        out[f"{path} batch"] = (batched, batched.committed[:, 1][None, :])
    return out


@pytest.mark.parametrize("kind", KINDS, ids=[k.key for k in KINDS])
def test_every_kind_runs_through_the_generated_code_as_its_own_step_function(
        kind: Kind, paths: dict[str, tuple[IndicatorBank, np.ndarray]]) -> None:
    want = _reference(kind, 1, 3)
    assert np.isfinite(want[-1]).all(), f"{kind.key}: not warm after {len(BARS)} bars"
    for path, (bank, series) in paths.items():
        rows = [bank.row(n) for n in _names(kind)]
        expected = want[-1:] if path.endswith("batch") else want
        np.testing.assert_array_equal(series[:, rows], expected, err_msg=f"{kind.key} on the {path}")


@pytest.mark.parametrize("kind", [k for k in KINDS if k.talib], ids=lambda k: k.key)
def test_a_kind_that_names_a_talib_function_is_held_to_it(kind: Kind) -> None:
    assert set(_names(kind)) & set(TALIB), f"{kind.key} says it equals TA-Lib {kind.talib}; no oracle"


def test_kinds_have_distinct_keys_codes_and_outputs() -> None:
    outputs = [o for k in KINDS for o in k.outputs]
    assert len(set(outputs)) == len(outputs)
    assert len({k.code for k in KINDS}) == len(KINDS)


@pytest.mark.parametrize(("name", "message"), [
    ("macd_26_12_9", "the fast period must be shorter than the slow period"),
    ("sar_0.3_0.2", "acceleration must not exceed the maximum"),
])
def test_relations_between_parameters_are_declared_checks(name: str, message: str) -> None:
    with pytest.raises(IndicatorError, match=message):
        resolve(name)
