"""``tickdeck indicators`` writes every output of the catalogue, each equal to an independent computation.

The expected columns come from the catalogue's kinds (each output name resolved at its default
parameters), not from ``DEFAULT_OUTPUTS`` or a list written here, so an output the command leaves out
fails this test whatever the list says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from console.cli import main
from engine.indicators.catalogue import KINDS, resolve
from tests.data import random_walk


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No TICKDECK_* settings and no user config from the machine running the tests."""
    import os

    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path_factory.mktemp("user-config")))


def catalogue_outputs() -> set[str]:
    """Every output of every kind at its default parameters (``donchian_middle``: ``donchian_middle_20``)."""
    return {resolve(output).name for kind in KINDS for output in kind.outputs}


def supertrend_direction(h: np.ndarray, l: np.ndarray, c: np.ndarray, p: int, k: float) -> np.ndarray:
    """Supertrend's direction as pandas-ta defines it: bands hl2 -/+ k*ATR(p) (TA-Lib's Wilder ATR) that
    only ratchet toward price; up-trend first; flips when the close crosses the previous final band."""
    atr = talib.ATR(h, l, c, p)
    out = np.full(len(c), np.nan)
    upper = lower = np.nan
    for i in range(p, len(c)):
        basic_upper = (h[i] + l[i]) / 2 + k * atr[i]
        basic_lower = (h[i] + l[i]) / 2 - k * atr[i]
        if i == p:
            upper, lower, direction = basic_upper, basic_lower, 1.0
        else:
            prev_upper, prev_lower, direction = upper, lower, out[i - 1]
            upper = basic_upper if basic_upper < prev_upper or c[i - 1] > prev_upper else prev_upper
            lower = basic_lower if basic_lower > prev_lower or c[i - 1] < prev_lower else prev_lower
            if direction == 1.0 and c[i] < prev_lower:
                direction = -1.0
            elif direction == -1.0 and c[i] > prev_upper:
                direction = 1.0
        out[i] = direction
    return out


def test_every_catalogue_output_is_written_and_the_three_once_missing_are_right(tmp_path: Path) -> None:
    b = random_walk(400, seed=23, vol=0.02)
    frame = pd.DataFrame({"open": b.o, "high": b.h, "low": b.l, "close": b.c, "volume": b.v},
                         index=pd.DatetimeIndex(pd.to_datetime(b.t, utc=True)))
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(inp)
    assert main(["indicators", str(inp), "-o", str(out)]) == 0

    header = out.read_text().splitlines()[0].split(",")
    assert header[:6] == ["", "open", "high", "low", "close", "volume"]
    written = header[6:]
    assert len(written) == len(set(written))
    assert set(written) == catalogue_outputs()
    assert {"donchian_middle_20", "supertrend_dir_10_3", "volume_zscore_20"} <= set(written)

    got = pd.read_csv(out, index_col=0)
    # TA-Lib's MIDPRICE is (highest high + lowest low) / 2 over the period: the Donchian middle.
    np.testing.assert_allclose(got["donchian_middle_20"], talib.MIDPRICE(b.h, b.l, 20), rtol=1e-12,
                               equal_nan=True)
    volume = pd.Series(b.v)
    want = (volume - volume.rolling(20).mean()) / volume.rolling(20).std(ddof=0)  # population stddev
    np.testing.assert_allclose(got["volume_zscore_20"], want, rtol=1e-9, atol=1e-12, equal_nan=True)
    want_dir = supertrend_direction(b.h, b.l, b.c, 10, 3.0)
    np.testing.assert_array_equal(got["supertrend_dir_10_3"], want_dir)
    assert np.isnan(want_dir[:10]).all() and {-1.0, 1.0} <= set(want_dir[10:])  # both directions occur
