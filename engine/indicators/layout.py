"""State layouts: how many state rows each building block and kind owns. The one place they are counted.

Pure Python (no numba, no numpy), so the catalogue can size a plan without compiling anything, and the
kernels import the same constants (numba reads module-level integers as compile-time constants). A kind's
``rows`` in ``catalogue.KINDS`` is written with these, and its step function lays its state out with
them, so the two cannot disagree.
"""

from __future__ import annotations

# A ring buffer: b+0 next write position, b+1 count (saturates at cap), then cap values.
RING_HEADER = 2
# A simple moving average: b+0 sum, b+1 compensation, then a ring of the last p inputs.
SMA_FIELDS = 2
# An EMA stage: b+0 inputs seen (capped at p), b+1 seed sum, b+2 seed compensation, b+3 value.
EMA_ROWS = 4
# A window extreme deque: b+0 head, b+1 size, then cap bar indices and cap values.
WEXT_HEADER = 2
# Window moments (Bollinger, z-scores, stddev): run, an accumulator of five, inputs since its last renewal.
MOM_FIELDS = 7
WMA_FIELDS = 4
KAMA_FIELDS = 4
MACD_FIELDS = 1
RSI_ROWS = 4
MFI_HEAD = 7
ULTOSC_HEAD = 15
ATR_ROWS = 5
DMI_ROWS = 10
SAR_ROWS = 7
SUPERTREND_ROWS = ATR_ROWS + 3
KELTNER_ROWS = EMA_ROWS + ATR_ROWS
OBV_ROWS = 4
VWAP_ROWS = 6
COUNTER = 1  # a bars-seen counter ahead of a kind's blocks


def ring(cap: int) -> int:
    return RING_HEADER + cap


def sma(p: int) -> int:
    return SMA_FIELDS + RING_HEADER + p  # no calls: the kernels compile these functions too


def wext(p: int) -> int:
    return WEXT_HEADER + 2 * p


def moments(p: int) -> int:
    return MOM_FIELDS + RING_HEADER + p
