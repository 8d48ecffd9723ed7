"""Every catalogue output that TA-Lib has equals TA-Lib on every data shape, streamed bar by bar: NaN in
exactly the same bars, values within ``1e-8 * max(|value|, scale)`` (``oracle.assert_matches``). The scale
is 0 — a purely relative 1e-8 — for the price-level outputs, ATR and MOM; the median close for MACD's
three outputs, whose rounding error near a zero crossing is of the order of the prices they are computed
from; the median volume for OBV; 0.001 for oscillators and percentages (``oracle.scale_for``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data import Bars, scenarios
from tests.unit.oracle import TALIB, assert_matches, scale_for
from tests.unit.streaming import stream

SCENARIOS = scenarios()
NAMES = sorted(TALIB)


@pytest.fixture(scope="module")
def streamed() -> dict[str, dict]:
    return {key: stream(NAMES, bars) for key, bars in SCENARIOS.items()}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("name", NAMES)
def test_equals_talib(streamed: dict[str, dict], scenario: str, name: str) -> None:
    bars = SCENARIOS[scenario]
    assert_matches(name, streamed[scenario][name], TALIB[name](bars), scale_for(name, bars))


def falling(n: int = 400) -> Bars:
    """Closes from 100 down to 1: at the end every price-level value is a tenth of the median close."""
    c = 100.0 * 0.01 ** (np.arange(n) / (n - 1))
    t = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 60_000_000_000
    return Bars(t, c.copy(), c * 1.001, c * 0.999, c, np.full(n, 1000.0))


@pytest.mark.parametrize("name", ["sma_20", "bb_lower_20_2", "atr_14", "mom_10"])
def test_a_relative_error_above_1e_8_fails_however_small_the_value(name: str) -> None:
    """No floor from the median price: 5e-8 of a value a tenth of the median close is caught."""
    bars = falling()
    want = TALIB[name](bars)
    got = want.copy()
    got[-1] += 5e-8 * abs(want[-1])
    assert abs(want[-1]) < 0.2 * np.median(bars.c)  # where a median-close floor would have let it pass
    with pytest.raises(AssertionError, match=f"{name}: 1 bars differ from TA-Lib beyond 1e-8"):
        assert_matches(name, got, want, scale_for(name, bars))


def test_macd_near_a_zero_crossing_is_held_to_1e_8_of_the_median_close() -> None:
    bars = SCENARIOS["walk"]
    scale = scale_for("macd_12_26_9", bars)
    want = TALIB["macd_12_26_9"](bars)
    i = int(np.nanargmin(np.abs(want)))
    assert abs(want[i]) < 1e-3 * scale  # a crossing: relative 1e-8 of it is below the prices' rounding
    got = want.copy()
    got[i] += 1e-9 * scale
    assert_matches("macd_12_26_9", got, want, scale)
    got[i] = want[i] + 2e-8 * scale
    with pytest.raises(AssertionError, match="macd_12_26_9: 1 bars differ"):
        assert_matches("macd_12_26_9", got, want, scale)
