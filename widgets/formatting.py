"""How numbers look in tickdeck: pure functions shared by the widgets, each with a bounded width.

A value that is not there yet (NaN: an indicator still warming up, a symbol that has not traded) is
shown as :data:`MISSING`, never as ``nan``.
"""

from __future__ import annotations

import math
import time

MISSING = "—"
ELLIPSIS = "…"


def price(value: float) -> str:
    """A price: thousands separators, two decimals, four below 1 (``12,345.67``, ``0.1234``)."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"


def change(value: float, reference: float) -> str:
    """A signed change of a price near ``reference``, with the decimals :func:`price` gives it
    (``+1.23``, ``-0.50``; ``-0.0042`` for a price below 1)."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:+,.4f}" if abs(reference) < 1 else f"{value:+,.2f}"


def percent(value: float) -> str:
    """A signed percentage with two decimals (``+0.52%``)."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:+.2f}%"


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
