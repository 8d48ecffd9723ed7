"""How many decimals an instrument's prices have, from the tick size its service publishes.

Feeds that know it (Binance ``PRICE_FILTER.tickSize``, Coinbase ``quote_increment``, Yahoo ``priceHint``)
put it in ``Feed.decimals``; the snapshot carries it to the console, which shows each instrument at its own
precision and derives one from the price where the feed knows none (``widgets.formatting``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MAX_DECIMALS = 12
"""More decimals than any service's tick size has; a value beyond it is not a tick size."""


def tick_decimals(tick: str) -> int | None:
    """The decimals of a tick size written as a decimal string (``"0.01000000"`` -> 2, ``"0.00001"`` ->
    5, ``"1.00000000"`` -> 0, ``"0.5"`` -> 1); None for what is not a positive number (Binance writes
    ``"0.00000000"`` for a filter that is off) or needs more than :data:`MAX_DECIMALS`."""
    try:
        value = Decimal(tick.strip())
    except (InvalidOperation, ValueError, AttributeError):
        return None
    if not value.is_finite() or value <= 0:
        return None
    exponent = value.normalize().as_tuple().exponent
    decimals = max(0, -int(exponent))
    return decimals if decimals <= MAX_DECIMALS else None


def hint_decimals(hint: object) -> int | None:
    """Yahoo's ``priceHint`` (the decimals its own pages show a price with), when it is a plausible one."""
    if isinstance(hint, bool) or not isinstance(hint, int | float) or hint != int(hint):
        return None
    return int(hint) if 0 <= hint <= MAX_DECIMALS else None
