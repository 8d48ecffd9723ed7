"""How numbers look in tickdeck: pure functions shared by the widgets, each with a bounded width.

A value that is not there yet (NaN: an indicator still warming up, a symbol that has not traded) is
shown as :data:`MISSING`, never as ``nan``.
"""

from __future__ import annotations

import math
import time

MISSING = "—"
ELLIPSIS = "…"


SIGNIFICANT = 4
"""Significant digits a price shows when its instrument's tick size is unknown (see :func:`decimals_for`)."""
MAX_DECIMALS = 8
"""The most decimals any number shows (a tick size finer than 1e-8, a price below 1e-5)."""
PERCENT_DECIMALS = 2
PERCENT_MAX_DECIMALS = 3
"""More would not fit the watchlist's seven cells; a smaller move shows as ``+<.001%``."""


def decimals_for(value: float) -> int:
    """Decimals for a price whose tick size is unknown: at least two, and enough for
    :data:`SIGNIFICANT` significant digits (``43,210.50``, ``128.16``, ``5.120``, ``0.5000``,
    ``0.0001234``), at most :data:`MAX_DECIMALS`."""
    size = abs(value)
    if not math.isfinite(size) or size == 0:
        return 2
    return max(2, min(MAX_DECIMALS, SIGNIFICANT - 1 - math.floor(math.log10(size))))


def _decimals(decimals: int | None, reference: float) -> int:
    return max(0, min(MAX_DECIMALS, decimals)) if decimals is not None else decimals_for(reference)


def price(value: float, decimals: int | None = None, width: int | None = None) -> str:
    """A price with thousands separators, at ``decimals`` (the instrument's tick size, when the feed
    knows it) or at :func:`decimals_for` its value (``12,345.67``, ``5.120``, ``0.1234``); in at most
    ``width`` cells when given (see :func:`_squeezed`)."""
    if not math.isfinite(value):
        return MISSING
    d = _decimals(decimals, value)
    text = _unsigned_zero(f"{value:,.{d}f}")
    return text if width is None or len(text) <= width else _squeezed(value, d, width, signed=False)


def moved(value: float, reference: float, decimals: int | None = None) -> float:
    """``value`` (a change of a price near ``reference``) as it is shown: 0.0 when it rounds to zero at
    the price's decimals, so a change too small to show is neither up nor down (NaN stays NaN)."""
    if not math.isfinite(value):
        return value
    return value if round(value, _decimals(decimals, reference)) != 0 else 0.0


def change(value: float, reference: float, decimals: int | None = None, width: int | None = None) -> str:
    """A signed change of a price near ``reference``, at the decimals :func:`price` gives that price
    (``+1.23``, ``-0.50``, ``+0.004`` on a $5 stock); one that rounds to zero is ``0.00`` (as many
    zeros as decimals), unsigned: never ``-0.00``. In at most ``width`` cells when given."""
    if not math.isfinite(value):
        return MISSING
    d = _decimals(decimals, reference)
    if round(value, d) == 0:
        return f"{0:.{d}f}"[: width or None]
    text = f"{value:+,.{d}f}"
    return text if width is None or len(text) <= width else _squeezed(value, d, width, signed=True)


def _squeezed(value: float, decimals: int, width: int, *, signed: bool) -> str:
    """``value`` in ``width`` cells, losing as little as it can: first the thousands separators, then
    the zero before the point (``-.00005``), then decimals (never so many that a change reads as zero),
    last an exponent (``+2e-07``). A column cut short would show a wrong number (``-0.0000``)."""
    sign = "+" if signed else ""
    for d in range(decimals, -1, -1):
        if signed and round(value, d) == 0:
            break
        for text in (f"{value:{sign},.{d}f}", f"{value:{sign}.{d}f}"):
            if len(text) <= width:
                return text
        bare = text.replace("0.", ".", 1) if abs(value) < 1 else text
        if len(bare) <= width:
            return bare
    for digits in (2, 1, 0):
        text = f"{value:{sign}.{digits}e}"
        if len(text) <= width:
            return text
    return fit(f"{value:{sign}.0e}", width)


def percent(value: float) -> str:
    """A signed percentage with two decimals (``+0.52%``), three when two would show a real move as zero
    (``+0.004%``), and ``+<.001%`` for a smaller one; zero is ``0.00%``, unsigned. A caller whose change
    rounds to zero at the price's decimals passes 0.0 (see :func:`moved`), so the two columns agree."""
    if not math.isfinite(value):
        return MISSING
    d = PERCENT_DECIMALS
    while d < PERCENT_MAX_DECIMALS and round(value, d) == 0:
        d += 1
    if value == 0:
        return f"{0:.{PERCENT_DECIMALS}f}%"
    if round(value, d) == 0:
        return f"{'+' if value > 0 else '-'}<.{'0' * (d - 1)}1%"
    return f"{value:+.{d}f}%"


def _unsigned_zero(text: str) -> str:
    """``text`` without the sign of a negative zero (``-0.00`` -> ``0.00``)."""
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text


def volume(value: float) -> str:
    """A quantity in at most six characters: ``950``, ``12.3K``, ``4.56M``, ``1.20B``."""
    if not math.isfinite(value):
        return MISSING
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if size >= limit:
            scaled = value / limit
            return f"{scaled:.2f}{suffix}" if abs(scaled) < 10 else f"{scaled:.1f}{suffix}"
    return f"{value:.0f}"


def indicator(value: float) -> str:
    """An indicator value in at most nine cells: ``1,234``, ``123.4``, ``28.41``, ``-0.0123``."""
    if not math.isfinite(value):
        return MISSING
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    if size == 0:
        return "0.000"
    decimals = min(6, 2 - math.floor(math.log10(size)))  # three significant digits, down to 1e-6
    return f"{value:.{decimals}f}"


def clock(ns: int) -> str:
    """Local wall-clock time of day (``14:03:27``) for a time in ns since the epoch."""
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9))


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, ending in ``…`` when it was cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def column_label(name: str) -> str:
    """A short header for an indicator output: its words without parameters (``macd_hist_12_26_9`` →
    ``MACD HIST``), or with its one parameter (``rsi_14`` → ``RSI 14``)."""
    parts = name.split("_")
    words = [p for p in parts if not p.replace(".", "", 1).isdigit()]
    params = [p for p in parts if p not in words]
    if len(words) == 1 and len(params) == 1:
        words.append(params[0])
    return " ".join(words).upper() or name.upper()
