"""The prompt's grammar for a lot, and the numbers it (and the files) accept.

A lot is typed as::

    SYMBOL QUANTITY @ PRICE [+ FEE]        e.g.  AAPL 10 @ 182.50      BTCUSDT -0.25 @ 64000 + 3.20

- SYMBOL is upper-cased as the watchlists' ``a`` does; spaces around ``@`` and ``+`` are optional.
- QUANTITY is signed: a negative one sells (closing a long) or shorts; fractions are allowed (crypto).
  It cannot be zero.
- PRICE and FEE are zero or more; the fee is in the price's currency and defaults to 0.
- Numbers are plain decimals (``10``, ``-0.5``, ``.25``, ``182.50``): no exponent, no thousands separator
  (``1,000`` could be a decimal comma), at most :data:`~engine.positions.book.MAX_DECIMALS` decimals.
  ``nan`` and ``inf`` are refused by name.

A position's stop and target levels (which the ``stop`` and ``target`` alert rules watch) are typed as::

    SYMBOL stop PRICE|off [target PRICE|off]     e.g.  AAPL stop 170     AAPL stop 170 target 200
    SYMBOL target PRICE|off [stop PRICE|off]           AAPL target off   BTCUSDT stop off target off

- ``stop`` and ``target`` are words (any case), each at most once; ``off`` clears the level; a level
  left out is kept as it is.
- PRICE is a plain decimal above zero; the position must exist (``LevelChange.apply`` says so if not).

:func:`parse_entry` never raises for what was typed: it returns the lot or one sentence that says what
was expected, for the prompt to show while nothing changes. Whether the feed knows the symbol is not a
matter of grammar: pass ``check_symbol`` (the console passes the same check its ``a`` key uses,
``Runtime.check_symbol``, which answers None or the reason), and its answer is returned as the problem.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from engine.positions.book import (
    KEEP,
    Keep,
    Lot,
    Position,
    PositionBook,
    PositionError,
    number_problem,
    symbol_problem,
)

GRAMMAR = "SYMBOL QUANTITY @ PRICE [+ FEE], e.g. AAPL 10 @ 182.50 + 1.20"
LEVELS_GRAMMAR = "SYMBOL stop PRICE|off [target PRICE|off], e.g. AAPL stop 170 target 200"
LEVEL_WORDS = ("stop", "target")
CLEAR = "off"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_NOT_A_NUMBER = re.compile(r"[+-]?(nan|snan|inf|infinity)", re.IGNORECASE)
_ENTRY = re.compile(r"\s*(?P<symbol>[^\s@+]+)\s+(?P<quantity>[^\s@]+)\s*@\s*(?P<price>[^\s+]*)"
                    r"\s*(?:\+\s*(?P<fee>\S*))?\s*")


@dataclass(frozen=True)
class Entry:
    symbol: str
    lot: Lot


@dataclass(frozen=True)
class LevelChange:
    """A typed ``AAPL stop 170 target off``: each level a price, None (clear it) or KEEP (left out)."""

    symbol: str
    stop: Decimal | Keep | None = KEEP
    target: Decimal | Keep | None = KEEP

    def apply(self, book: PositionBook) -> Position:
        """Set the levels on ``book`` (undoable); PositionError if the symbol holds no position."""
        return book.set_levels(self.symbol, self.stop, self.target)


def parse_number(text: str, what: str, *, signed: bool = False, zero: bool = True) -> Decimal:
    """``text`` as the Decimal it spells; PositionError says why not (shared with the files' readers)."""
    text = text.strip()
    if _NOT_A_NUMBER.fullmatch(text):
        raise PositionError(f"the {what} must be a number, not {text!r}")
    if not _NUMBER.fullmatch(text):
        hint = " (no thousands separators)" if "," in text else ""
        raise PositionError(f"the {what} must be a plain number like 10 or 0.5{hint}, not {text[:20]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:  # the pattern above makes this unreachable; kept as a guard
        raise PositionError(f"the {what} is not a number: {text[:20]!r}") from None
    if problem := number_problem(value, what, signed=signed, zero=zero):
        raise PositionError(problem)
    return value


def parse_entry(text: str, check_symbol: Callable[[str], str | None] | None = None,
                date: dt.date | None = None) -> Entry | LevelChange | str:
    """The lot ``text`` spells (dated ``date``, the entry's day), the stop and target it sets, or the
    sentence saying what is wrong."""
    if not text.strip():
        return f"expected {GRAMMAR}, or {LEVELS_GRAMMAR}"
    words = text.split()
    if len(words) >= 2 and words[1].lower() in LEVEL_WORDS:
        return _parse_levels(words, check_symbol)
    match = _ENTRY.fullmatch(text)
    if match is None:
        return f"expected {GRAMMAR}; {_what_is_missing(text)}"
    symbol = match["symbol"].upper()
    try:
        if problem := symbol_problem(symbol):
            raise PositionError(problem)
        quantity = parse_number(match["quantity"], "quantity", signed=True, zero=False)
        if not match["price"]:
            raise PositionError("a price is missing after @")
        price = parse_number(match["price"], "price")
        fee_text = match["fee"]
        if fee_text is not None and not fee_text:
            raise PositionError("a fee is missing after +")
        fee = parse_number(fee_text, "fee") if fee_text else Decimal(0)
        lot = Lot(quantity, price, fee, date)
    except PositionError as exc:
        return f"{exc} (expected {GRAMMAR})"
    if check_symbol is not None and (problem := check_symbol(symbol)):
        return problem
    return Entry(symbol, lot)


def _parse_levels(words: list[str], check_symbol: Callable[[str], str | None] | None) -> LevelChange | str:
    symbol = words[0].upper()
    if problem := symbol_problem(symbol):
        return f"{problem} (expected {LEVELS_GRAMMAR})"
    levels: dict[str, Decimal | None] = {}
    rest = words[1:]
    while rest:
        word = rest[0].lower()
        if word not in LEVEL_WORDS:
            return f"expected stop or target, not {rest[0][:20]!r} (expected {LEVELS_GRAMMAR})"
        if word in levels:
            return f"{word} is given twice (expected {LEVELS_GRAMMAR})"
        if len(rest) < 2:
            return f"a price, or off, is missing after {word} (expected {LEVELS_GRAMMAR})"
        try:
            levels[word] = None if rest[1].lower() == CLEAR else parse_number(rest[1], word, zero=False)
        except PositionError as exc:
            return f"{exc} (expected {LEVELS_GRAMMAR})"
        rest = rest[2:]
    if check_symbol is not None and (problem := check_symbol(symbol)):
        return problem
    return LevelChange(symbol, levels.get("stop", KEEP), levels.get("target", KEEP))


def levels_text(position: Position) -> str:
    """``position``'s levels as the prompt's text (to pre-fill an edit); parse_entry reads it back."""
    def shown(level: Decimal | None) -> str:
        return CLEAR if level is None else f"{level:f}"
    return f"{position.symbol} stop {shown(position.stop)} target {shown(position.target)}"


def _what_is_missing(text: str) -> str:
    if "@" not in text:
        return ("the @ between the quantity and the price is missing" if len(text.split()) >= 2
                else "the quantity and the price are missing")
    before, after = text.split("@", 1)
    if len(before.split()) < 2:
        return "the symbol or the quantity before @ is missing"
    if len(before.split()) > 2:
        return f"only a symbol and a quantity go before @, not {before.strip()[:40]!r}"
    if "@" in after:
        return "there is more than one @"
    return f"only a price, and a fee after +, go after @, not {after.strip()[:40]!r}"


def entry_text(symbol: str, lot: Lot) -> str:
    """``lot`` as the prompt's text (to pre-fill an edit); parse_entry reads it back to the same lot."""
    fee = f" + {lot.fee:f}" if not lot.fee.is_zero() else ""
    return f"{symbol} {lot.quantity:f} @ {lot.price:f}{fee}"
