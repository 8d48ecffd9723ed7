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


def reference_csv(inp: Path) -> str:
    """What the command wrote when it committed one bar per call and wrote row by row with ``csv.writer``
    (verified against TA-Lib above): the text the faster command must reproduce byte for byte."""
    import csv
    import io

    from engine.indicators.bank import IndicatorBank
    from engine.indicators.catalogue import DEFAULT_OUTPUTS
    from engine.ohlcv_file import parse_bars, read_csv

    table = read_csv(str(inp))
    bars = parse_bars(table)
    v = bars.values
    bank = IndicatorBank(DEFAULT_OUTPUTS, 1, specialise=False)
    rows = [bank.row(name) for name in DEFAULT_OUTPUTS]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*table.header, *DEFAULT_OUTPUTS])
    cols = (bars.t, v["open"], v["high"], v["low"], v["close"], v["volume"])
    for fields, bar in zip(table.rows, zip(*(c.tolist() for c in cols), strict=True), strict=True):
        bank.commit(0, *bar)
        writer.writerow([*fields, *(repr(x) if x == x else "" for x in bank.committed[rows, 0].tolist())])
    return text.getvalue()


def test_the_output_is_byte_for_byte_the_row_by_row_text(tmp_path: Path) -> None:
    """Across write chunks, with fields that need quoting (a comma, a quote), padded numbers, epoch times,
    prices tiny and huge enough for exponents in ``repr``."""
    from console import indicators_cmd

    n = indicators_cmd.CHUNK + 300
    b = random_walk(n, seed=5, vol=0.03)
    scale = np.where(np.arange(n) < n // 2, 1e-7, 1e14)  # repr switches to exponents below 1e-4, from 1e16
    lines = ["time,open,high,low,close,volume,note"]
    for i in range(n):
        note = {7: '"a, b"', 8: '"say ""hi"""', 9: " x "}.get(i % 50, "")
        o, h, lo, c = (float(x[i] * scale[i]) for x in (b.o, b.h, b.l, b.c))
        lines.append(f"{b.t[i] // 1_000_000_000}, {o!r},{h!r},{lo!r},{c!r},{b.v[i]:.3f},{note}")
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["indicators", str(inp), "-o", str(out)]) == 0
    written = out.read_text(encoding="utf-8")
    assert written == reference_csv(inp)
    assert '"a, b"' in written and "e-0" in written and "e+1" in written


def test_the_bars_go_through_in_compiled_batches_not_a_call_per_bar(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python call per bar was most of the command's computing time."""
    from engine.indicators.bank import IndicatorBank

    calls: list[int] = []
    original = IndicatorBank.__init__

    def counting(self: IndicatorBank, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        inner = self.apply_bars
        self.__dict__["commit"] = lambda *a: calls.append(-1)  # a per-bar commit would be counted
        self.apply_bars = lambda *a: (calls.append(len(a[3])), inner(*a))[1]

    monkeypatch.setattr(IndicatorBank, "__init__", counting)
    b = random_walk(3000, seed=6)
    frame = pd.DataFrame({"open": b.o, "high": b.h, "low": b.l, "close": b.c, "volume": b.v},
                         index=pd.DatetimeIndex(pd.to_datetime(b.t, utc=True)))
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(inp)
    assert main(["indicators", str(inp), "-o", str(out)]) == 0
    assert calls == [3000]


def test_rows_are_formatted_as_repr_at_every_magnitude() -> None:
    """``_format_rows`` takes msgspec's float text where it equals ``repr`` and ``repr`` elsewhere: a
    msgspec whose layout moved would fail here, not write different files."""
    from console.indicators_cmd import _format_rows

    rng = np.random.default_rng(3)
    values = rng.normal(size=(4000, 9)) * 10.0 ** rng.integers(-12, 24, (4000, 9))
    values[::7, 2] = np.nan
    values[5, :] = [0.0, -0.0, np.inf, -np.inf, 1e16, 1e-4, 9.999999999999999e15, 0.0001 * (1 - 2**-52), 1.0]
    values[6, :] = np.round(values[6, :])  # integral values: "3.0", not "3"
    want = [",".join(repr(x) if x == x else "" for x in row) for row in values.tolist()]
    assert _format_rows(values) == want
