"""The position book: lots per symbol, folded by average cost into positions, exactly.

One :class:`PositionBook` holds one feed's positions (symbols differ per feed: BTCUSDT on binance, AAPL
on yahoo; the state file keys the books per feed). Each symbol keeps its lots (the trades, in the order
they were entered) and the :class:`Position` they fold into, so an edited or deleted lot is refolded and
an export writes the trades back as they were entered.

Arithmetic (the conventions brokers' average-cost statements use):

- Quantities, prices, fees, cost basis and realized P&L are :class:`decimal.Decimal`, never floats. Every
  sum and product is exact (an exact context traps any rounding; inputs are bounded by
  :data:`MAX_MAGNITUDE` and :data:`MAX_DECIMALS`, so it never fires).
- ``cost`` is the signed cost basis of the open quantity, **fees included**: a lot adds
  ``quantity * price + fee``. A long's fee raises its cost basis (10 @ 100 + 1 costs 1001, average
  100.10); a short's fee lowers what it was sold for (-10 @ 100 + 1 has cost -999, average 99.90).
  ``unrealized = quantity * last - cost``, the same formula for longs and shorts.
- A lot against the position's sign closes part of it, all of it, or flips it. The part that closes
  releases the share ``closed / open`` of the cost basis, and books
  ``realized += closed_proceeds - released_cost - closing_fee``; the closing lot's fee is charged to
  realized P&L. A lot that flips the position splits its fee by quantity between the part that closes
  and the part that opens (which starts the new position's cost basis).
- The one division, the share of the cost a partial close releases, is rounded half-to-even to
  :data:`QUANTUM` (1e-12), with exact rational arithmetic before that single rounding; the remainder
  stays in the open cost. So no money is created or lost: ``realized - cost`` always equals the exact
  cash flow ``-sum(quantity * price + fee)`` of the lots, closing a whole position releases all of its
  cost, and a position that goes flat has exactly the realized P&L of exact arithmetic.
- ``average_cost = cost / quantity`` is derived for display only and never fed back.

A position that goes flat stays in the book (it holds realized P&L) until it is deleted.

A position may carry a ``stop`` and a ``target`` price (exact decimals, None: not set), which the alert
rules ``stop`` and ``target`` watch (``engine.signals.rules``). They belong to the position, not to a
lot: adding, editing or deleting lots keeps them; :meth:`PositionBook.set_levels` sets or clears them,
and undo takes that back as any other change.

Edits and undo follow the watchlists' rows (``console.book.Book``): every change (a lot added, a lot
edited or deleted, a position deleted) is recorded on an undo stack of :data:`UNDO_DEPTH` entries for the
session (not saved); :meth:`PositionBook.undo` puts the symbol's lots back as they were before the last
change. :attr:`PositionBook.version` counts changes, so a valuation can cache its arrays per version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow, localcontext
from fractions import Fraction

ZERO = Decimal(0)
MAX_DECIMALS = 12
"""Decimals a quantity, price or fee may have: finer than any venue's tick or lot size."""
QUANTUM = Decimal(1).scaleb(-MAX_DECIMALS)
"""The resolution of a partial close's released cost (see the module docstring): 1e-12."""
MAX_MAGNITUDE = Decimal(10) ** 12
"""A quantity, price or fee is below this: far above any real trade, and it keeps sums exact."""
MAX_SYMBOL = 40
MAX_LOTS = 50_000
"""Lots per book (per feed): years of daily trades; a bound on the state file and on a refold."""
UNDO_DEPTH = 100
"""Changes that can be undone; older ones are forgotten (as for the watchlists)."""

_EXACT = Context(prec=200, traps=[InvalidOperation, Inexact, Overflow, DivisionByZero])
"""Bounded inputs need at most ~90 digits: a trap firing here is a bug, never a rounding."""


class PositionError(ValueError):
    """A refused lot or edit; the message is one sentence for the user, naming what and why."""


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` cannot hold a position, or None. Whether the feed knows it is the caller's check
    (the console passes its ``check_symbol``; see :func:`engine.positions.entry.parse_entry`)."""
    if not symbol or symbol != symbol.strip() or " " in symbol:
        return f"a symbol cannot be blank or hold spaces: {symbol!r}"
    if len(symbol) > MAX_SYMBOL:
        return f"a symbol has at most {MAX_SYMBOL} characters: {symbol[:MAX_SYMBOL]!r}..."
    if not symbol.isprintable():
        return f"a symbol cannot hold control characters: {symbol!r}"
    return None


def number_problem(value: Decimal, what: str, *, signed: bool = False, zero: bool = True) -> str | None:
    """Why ``value`` cannot be a lot's ``what`` (quantity, price, fee), or None."""
    if not value.is_finite():
        return f"the {what} must be a number, not {value}"
    if value.is_zero() and not zero:
        return f"the {what} cannot be zero"
    if value < 0 and not signed:
        return f"the {what} cannot be negative: {value:f}"
    if abs(value) >= MAX_MAGNITUDE:
        return f"the {what} {value:f} is too large (at most {MAX_MAGNITUDE - 1:,f})"
    if -int(value.as_tuple().exponent) > MAX_DECIMALS:
        return f"the {what} {value:f} has more than {MAX_DECIMALS} decimals"
    return None


@dataclass(frozen=True)
class Lot:
    """One trade: ``quantity`` signed (negative sells or shorts), at ``price``, paying ``fee``."""

    quantity: Decimal
    price: Decimal
    fee: Decimal = ZERO
    date: dt.date | None = None

    def __post_init__(self) -> None:
        for value, what in ((self.quantity, "quantity"), (self.price, "price"), (self.fee, "fee")):
            if not isinstance(value, Decimal):
                raise PositionError(f"the {what} must be a Decimal, not {type(value).__name__}")
        problem = (number_problem(self.quantity, "quantity", signed=True, zero=False)
                   or number_problem(self.price, "price") or number_problem(self.fee, "fee"))
        if problem:
            raise PositionError(problem)


def _apportion(amount: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """``amount * part / whole`` rounded half-to-even to QUANTUM, from the exact rational value."""
    exact = Fraction(amount) * Fraction(part) / Fraction(whole)
    return Decimal(round(exact / Fraction(QUANTUM))).scaleb(-MAX_DECIMALS, _EXACT)


@dataclass(frozen=True)
class Position:
    """What one symbol's lots fold into (see the module docstring for the arithmetic)."""

    symbol: str
    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    lots: tuple[Lot, ...] = ()
    stop: Decimal | None = None
    target: Decimal | None = None

    @property
    def average_cost(self) -> Decimal | None:
        """``cost / quantity`` per unit, fees included, for display (28 digits); None when flat."""
        return None if self.quantity.is_zero() else self.cost / self.quantity

    @property
    def flat(self) -> bool:
        return self.quantity.is_zero()

    def apply(self, lot: Lot) -> Position:
        """This position after ``lot``: combined by average cost, or partly closed, closed or flipped."""
        return replace(self._fold(lot), lots=(*self.lots, lot))

    def _fold(self, lot: Lot) -> Position:
        """The figures after ``lot``, with ``lots`` left as they were (refolding many lots stays linear)."""
        q, c, price = self.quantity, lot.quantity, lot.price
        with localcontext(_EXACT):
            fees = self.fees + lot.fee
            if q.is_zero() or (q > 0) == (c > 0):
                return replace(self, quantity=q + c, cost=self.cost + c * price + lot.fee, fees=fees)
            closing = min(abs(c), abs(q))
            closed = closing.copy_sign(c)  # signed like the lot: it buys back a short, sells a long
            opening = c - closed
            fee_close = lot.fee if opening.is_zero() else _apportion(lot.fee, closing, abs(c))
            released = self.cost if closing == abs(q) else _apportion(self.cost, closing, abs(q))
            realized = self.realized - closed * price - released - fee_close
            cost = self.cost - released + opening * price + (lot.fee - fee_close)
            return replace(self, quantity=q + c, cost=cost, realized=realized, fees=fees)

    def extend(self, lots: Iterable[Lot]) -> Position:
        """This position after ``lots``, in order (linear in their number)."""
        added = tuple(lots)
        position = self
        for lot in added:
            position = position._fold(lot)
        return replace(position, lots=self.lots + added)

    @classmethod
    def of(cls, symbol: str, lots: Iterable[Lot], stop: Decimal | None = None,
           target: Decimal | None = None) -> Position:
        start = cls(symbol, stop=level_checked(stop, "stop"), target=level_checked(target, "target"))
        return start.extend(lots)

    def refolded(self, lots: Iterable[Lot]) -> Position:
        """A position of these ``lots`` with this one's stop and target (an edited or deleted lot)."""
        return Position.of(self.symbol, lots, self.stop, self.target)


def level_checked(level: Decimal | None, what: str) -> Decimal | None:
    """``level`` (a stop or target price, or None), or PositionError saying why it cannot be one."""
    if level is None:
        return None
    if not isinstance(level, Decimal):
        raise PositionError(f"the {what} must be a Decimal, not {type(level).__name__}")
    if problem := number_problem(level, what, zero=False):
        raise PositionError(problem)
    return level


class Keep:
    """The type of :data:`KEEP`: a level :meth:`PositionBook.set_levels` leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep()


@dataclass(frozen=True)
class Fill:
    """What :meth:`PositionBook.add` did: the position before (None if new) and after, and the realized
    P&L the lot booked (zero unless it closed something), for the message the user sees."""

    before: Position | None
    after: Position
    realized: Decimal


@dataclass(frozen=True)
class _Undo:
    symbol: str
    lots: tuple[Lot, ...] | None  # None: the symbol had no position
    index: int  # its place among the symbols, so an undone delete goes back where it was
    what: str
    stop: Decimal | None = None
    target: Decimal | None = None


@dataclass
class PositionBook:
    """One feed's positions by symbol, in the order they were first entered, with the undo stack."""

    _positions: dict[str, Position] = field(default_factory=dict)
    _undo: list[_Undo] = field(default_factory=list, repr=False, compare=False)
    version: int = field(default=0, compare=False)
    """Bumped by every change (and undo): a valuation caches its per-book arrays by it."""

    @classmethod
    def of(cls, lots: Mapping[str, Sequence[Lot]],
           levels: Mapping[str, tuple[Decimal | None, Decimal | None]] | None = None) -> PositionBook:
        """A book from lots per symbol (a loaded state file, an import) and, optionally, their
        ``(stop, target)`` levels; PositionError names a bad one."""
        levels = levels or {}
        if stray := sorted(levels.keys() - lots.keys()):
            raise PositionError(f"{stray[0]:.40} has a stop or target but no position")
        book = cls()
        total = 0
        for symbol, symbol_lots in lots.items():
            if problem := symbol_problem(symbol):
                raise PositionError(problem)
            total += len(symbol_lots)
            if not symbol_lots:
                raise PositionError(f"{symbol} has a position with no lots")
            book._positions[symbol] = Position.of(symbol, symbol_lots, *levels.get(symbol, (None, None)))
        if total > MAX_LOTS:
            raise PositionError(f"{total} lots is more than the {MAX_LOTS:,} a feed's book holds")
        return book

    def __len__(self) -> int:
        return len(self._positions)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._positions

    def __iter__(self) -> Iterator[Position]:
        return iter(tuple(self._positions.values()))

    def get(self, symbol: str) -> Position | None:
        return self._positions.get(symbol)

    def symbols(self) -> tuple[str, ...]:
        return tuple(self._positions)

    def lot_count(self) -> int:
        return sum(len(p.lots) for p in self._positions.values())

    def lots(self) -> dict[str, tuple[Lot, ...]]:
        """Every symbol's lots, in entry order: what the state file and an export hold."""
        return {s: p.lots for s, p in self._positions.items()}

    def levels(self) -> dict[str, tuple[Decimal | None, Decimal | None]]:
        """``(stop, target)`` of every position that has either, in the book's order."""
        return {s: (p.stop, p.target) for s, p in self._positions.items()
                if p.stop is not None or p.target is not None}

    def copy(self) -> PositionBook:
        """An independent book with the same positions and no undo history (positions are immutable)."""
        return PositionBook(dict(self._positions))

    # --- changes -----------------------------------------------------------------------------------
    def add(self, symbol: str, lot: Lot) -> Fill:
        """Apply ``lot`` to ``symbol``'s position (opening one if there is none)."""
        if problem := symbol_problem(symbol):
            raise PositionError(problem)
        self._room(1)
        before = self._positions.get(symbol)
        after = (before or Position(symbol)).apply(lot)
        self._change(symbol, after, "add")
        return Fill(before, after, after.realized - (before.realized if before else ZERO))

    def add_many(self, lots: Iterable[tuple[str, Lot]]) -> int:
        """Apply several lots all or nothing (an import): PositionError leaves the book as it was.

        One undo entry per symbol touched, so undo takes an import back a symbol at a time.
        """
        grouped: dict[str, list[Lot]] = {}
        for symbol, lot in lots:
            if problem := symbol_problem(symbol):
                raise PositionError(problem)
            grouped.setdefault(symbol, []).append(lot)
        count = sum(len(added) for added in grouped.values())
        self._room(count)
        staged = {s: self._positions.get(s, Position(s)).extend(added) for s, added in grouped.items()}
        for symbol, position in staged.items():
            self._change(symbol, position, "import")
        return count

    def replace_all(self, lots: Mapping[str, Sequence[Lot]]) -> None:
        """Replace every position by ``lots`` (an import with --replace); all or nothing, no undo."""
        fresh = PositionBook.of(lots)
        self._positions, self._undo = fresh._positions, []
        self.version += 1

    def edit_lot(self, symbol: str, index: int, lot: Lot) -> Position:
        """Replace ``symbol``'s lot ``index`` (negative counts from the last) and refold the position."""
        lots = list(self._position(symbol).lots)
        lots[self._lot_index(symbol, lots, index)] = lot
        position = self._position(symbol).refolded(lots)
        self._change(symbol, position, "edit")
        return position

    def delete_lot(self, symbol: str, index: int) -> Position | None:
        """Remove ``symbol``'s lot ``index``; its last lot removed deletes the position (None)."""
        before = self._position(symbol)
        lots = list(before.lots)
        del lots[self._lot_index(symbol, lots, index)]
        position = before.refolded(lots) if lots else None
        self._change(symbol, position, "delete")
        return position

    def delete(self, symbol: str) -> Position:
        """Remove ``symbol``'s whole position (its lots and realized P&L); returns it. Undo puts it back."""
        gone = self._position(symbol)
        self._change(symbol, None, "delete")
        return gone

    def set_levels(self, symbol: str, stop: Decimal | Keep | None = KEEP,
                   target: Decimal | Keep | None = KEEP) -> Position:
        """Set (a Decimal), clear (None) or keep (:data:`KEEP`) ``symbol``'s stop and target; undoable."""
        position = self._position(symbol)
        if not isinstance(stop, Keep):
            position = replace(position, stop=level_checked(stop, "stop"))
        if not isinstance(target, Keep):
            position = replace(position, target=level_checked(target, "target"))
        self._change(symbol, position, "levels")
        return position

    def undo(self) -> tuple[str, Position | None] | None:
        """Undo the last change: ``(symbol, position now)`` (None: the undone change had created it), or
        None if there is nothing left to undo. Changes are undone last first, so each entry finds the
        symbol as that change left it."""
        if not self._undo:
            return None
        entry = self._undo.pop()
        if entry.lots is None:
            self._positions.pop(entry.symbol, None)
            restored = None
        else:
            restored = Position.of(entry.symbol, entry.lots, entry.stop, entry.target)
            items = [(s, p) for s, p in self._positions.items() if s != entry.symbol]
            items.insert(min(entry.index, len(items)), (entry.symbol, restored))
            self._positions = dict(items)
        self.version += 1
        return entry.symbol, restored

    def can_undo(self) -> bool:
        return bool(self._undo)

    # --- helpers -----------------------------------------------------------------------------------
    def _change(self, symbol: str, position: Position | None, what: str) -> None:
        before = self._positions.get(symbol)
        index = list(self._positions).index(symbol) if before is not None else len(self._positions)
        self._undo.append(_Undo(symbol, before.lots if before is not None else None, index, what,
                                before.stop if before is not None else None,
                                before.target if before is not None else None))
        del self._undo[:-UNDO_DEPTH]
        if position is None:
            del self._positions[symbol]
        else:
            self._positions[symbol] = position
        self.version += 1

    def _room(self, more: int) -> None:
        if self.lot_count() + more > MAX_LOTS:
            raise PositionError(f"this feed's book holds at most {MAX_LOTS:,} lots; delete some positions "
                                "first")

    def _position(self, symbol: str) -> Position:
        try:
            return self._positions[symbol]
        except KeyError:
            raise PositionError(f"there is no position in {symbol}") from None

    @staticmethod
    def _lot_index(symbol: str, lots: list[Lot], index: int) -> int:
        if not -len(lots) <= index < len(lots):
            raise PositionError(f"{symbol} has {len(lots)} lots, not a lot {index}")
        return index % len(lots)
