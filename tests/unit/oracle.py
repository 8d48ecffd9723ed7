"""TA-Lib as the oracle: the reference series for each output name. Tests only; never at runtime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import talib

from tests.data import Bars

Oracle = Callable[[Bars], np.ndarray]

TALIB: dict[str, Oracle] = {
    "sma_20": lambda b: talib.SMA(b.c, 20),
    "ema_20": lambda b: talib.EMA(b.c, 20),
    "wma_20": lambda b: talib.WMA(b.c, 20),
    "dema_20": lambda b: talib.DEMA(b.c, 20),
    "tema_20": lambda b: talib.TEMA(b.c, 20),
    "kama_10": lambda b: talib.KAMA(b.c, 10),
    "rsi_14": lambda b: talib.RSI(b.c, 14),
    "macd_12_26_9": lambda b: talib.MACD(b.c, 12, 26, 9)[0],
    "macd_signal_12_26_9": lambda b: talib.MACD(b.c, 12, 26, 9)[1],
    "macd_hist_12_26_9": lambda b: talib.MACD(b.c, 12, 26, 9)[2],
    "bb_upper_20_2": lambda b: talib.BBANDS(b.c, 20, 2, 2, 0)[0],
    "bb_middle_20_2": lambda b: talib.BBANDS(b.c, 20, 2, 2, 0)[1],
    "bb_lower_20_2": lambda b: talib.BBANDS(b.c, 20, 2, 2, 0)[2],
    "stddev_20": lambda b: talib.STDDEV(b.c, 20, 1),
    "atr_14": lambda b: talib.ATR(b.h, b.l, b.c, 14),
    "natr_14": lambda b: talib.NATR(b.h, b.l, b.c, 14),
    "stoch_k_14_3_3": lambda b: talib.STOCH(b.h, b.l, b.c, 14, 3, 0, 3, 0)[0],
    "stoch_d_14_3_3": lambda b: talib.STOCH(b.h, b.l, b.c, 14, 3, 0, 3, 0)[1],
    "cci_20": lambda b: talib.CCI(b.h, b.l, b.c, 20),
    "adx_14": lambda b: talib.ADX(b.h, b.l, b.c, 14),
    "plus_di_14": lambda b: talib.PLUS_DI(b.h, b.l, b.c, 14),
    "minus_di_14": lambda b: talib.MINUS_DI(b.h, b.l, b.c, 14),
    "willr_14": lambda b: talib.WILLR(b.h, b.l, b.c, 14),
    "mfi_14": lambda b: talib.MFI(b.h, b.l, b.c, b.v, 14),
    "obv": lambda b: talib.OBV(b.c, b.v),
    "roc_10": lambda b: talib.ROC(b.c, 10),
    "mom_10": lambda b: talib.MOM(b.c, 10),
    "trix_15": lambda b: talib.TRIX(b.c, 15),
    "aroon_up_14": lambda b: talib.AROON(b.h, b.l, 14)[1],
    "aroon_down_14": lambda b: talib.AROON(b.h, b.l, 14)[0],
    "ultosc_7_14_28": lambda b: talib.ULTOSC(b.h, b.l, b.c, 7, 14, 28),
    "sar": lambda b: talib.SAR(b.h, b.l, 0.02, 0.2),
    "donchian_upper_20": lambda b: talib.MAX(b.h, 20),
    "donchian_lower_20": lambda b: talib.MIN(b.l, 20),
}


def assert_matches(name: str, got: np.ndarray, want: np.ndarray, scale: float) -> None:
    """Equal to TA-Lib: NaN exactly where TA-Lib has NaN, and ``|got - want| <= 1e-8 * max(|want|, scale)``.

    ``scale`` is 0 for a purely relative 1e-8, and otherwise the magnitude of the quantities the output is
    computed from (see ``scale_for``). Near zero it bounds the error absolutely: MACD, the difference of
    two price-sized EMAs, carries a rounding error of the order of the prices, not of the difference, so
    at a zero crossing a purely relative test would demand more digits than the inputs carry.
    """
    got_nan = np.isnan(got)
    want_nan = np.isnan(want)
    bad = np.flatnonzero(got_nan != want_nan)
    assert bad.size == 0, (
        f"{name}: NaN mismatch at bars {bad[:10].tolist()} "
        f"(engine {got[bad[:5]].tolist()}, TA-Lib {want[bad[:5]].tolist()})"
    )
    ok = ~want_nan
    err = np.abs(got[ok] - want[ok])
    tol = 1e-8 * np.maximum(np.abs(want[ok]), scale)
    worst = np.flatnonzero(err > tol)
    if worst.size:
        i = np.flatnonzero(ok)[worst[0]]
        raise AssertionError(
            f"{name}: {worst.size} bars differ from TA-Lib beyond 1e-8 x max(|value|, {scale:g}), first "
            f"at bar {i}: engine {got[i]!r}, TA-Lib {want[i]!r}"
        )


# Checked purely relative (scale 0): outputs at the price level (averages, bands, stops, channels), which
# never come near zero; ATR, whose smoothing keeps rounding errors relative to ATR itself (within 1e-14
# on every scenario, flat stretches included); and MOM, one subtraction of two closes that the engine and
# TA-Lib round alike, so equal to the last bit even where it crosses zero.
RELATIVE = ("sma", "ema", "wma", "dema", "tema", "kama", "bb_", "atr", "sar", "donchian", "keltner",
            "supertrend", "vwap", "mom")
# A difference of two EMAs, which crosses zero: see ``assert_matches``; and a standard deviation, a spread
# of prices computed from their sums, which is zero on a flat window and carries the prices' rounding.
PRICE_DIFFERENCE = ("macd", "stddev")


def scale_for(name: str, bars: Bars) -> float:
    """The floor of ``assert_matches``'s tolerance for ``name`` on ``bars``: 0 (purely relative) for
    ``RELATIVE``; the median close for MACD's three outputs and STDDEV; the median volume for OBV (a
    running sum of signed volumes, which crosses zero); 0.001 for oscillators and percentages (RSI,
    Stochastic, MFI, Williams %R, CCI, ROC, TRIX, ADX, DI, Aroon, ULTOSC, NATR), which reach or cross 0."""
    if name.startswith(PRICE_DIFFERENCE):
        return float(np.median(np.abs(bars.c)))
    if name.startswith(RELATIVE):
        return 0.0
    if name == "obv":
        return float(np.median(bars.v) or 1.0)
    return 1e-3
