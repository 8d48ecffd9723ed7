"""Positions as the state file keeps them: plain JSON, decimals as strings, keyed per feed.

``console.state`` writes this under the top-level key ``"positions"`` of ``state.json``, next to the
watchlists, with the same atomic write; a positions part that is not exactly what :func:`encode` writes
makes the whole file damaged, handled as damaged watchlists are (set aside, the user told, the defaults
loaded). The shape, per feed, symbols in the order they were first entered, lots in entry order::

    "positions": {"sim": {"AAPL": {"lots": [
        {"quantity": "10", "price": "182.50", "fee": "1.20", "date": "2026-12-05"},
        {"quantity": "-4", "price": "190"}]}}}

Numbers are strings (``format(Decimal, "f")``: exact, no exponent); ``fee`` is left out when it is zero
and ``date`` (ISO 8601) when the lot has none. A position object may gain keys later (stops, targets):
keys it does not know are refused today, as the watchlists' are.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.positions.book import Lot, PositionBook, PositionError
from engine.positions.entry import parse_number

_LOT_KEYS = {"quantity", "price", "fee", "date"}


def encode(book: PositionBook) -> dict[str, Any]:
    """``book`` as the JSON value of one feed's entry."""
    return {symbol: {"lots": [_lot_json(lot) for lot in lots]} for symbol, lots in book.lots().items()}


def _lot_json(lot: Lot) -> dict[str, str]:
    out = {"quantity": f"{lot.quantity:f}", "price": f"{lot.price:f}"}
    if not lot.fee.is_zero():
        out["fee"] = f"{lot.fee:f}"
    if lot.date is not None:
        out["date"] = lot.date.isoformat()
    return out


def decode(entry: object, where: str) -> PositionBook:
    """One feed's entry as a book; PositionError names the first problem and where it is."""
    if type(entry) is not dict:
        raise PositionError(f"{where} must be an object")
    lots: dict[str, list[Lot]] = {}
    for symbol, position in entry.items():
        at = f"{where}.{symbol:.40}"
        if type(position) is not dict or set(position) != {"lots"} or type(position["lots"]) is not list:
            raise PositionError(f"{at} must be an object holding only a list of lots")
        lots[symbol] = [_lot(item, f"{at}.lots[{i}]") for i, item in enumerate(position["lots"])]
    try:
        return PositionBook.of(lots)
    except PositionError as exc:
        raise PositionError(f"{where}: {exc}") from None


def _lot(item: object, at: str) -> Lot:
    if type(item) is not dict:
        raise PositionError(f"{at} must be an object")
    if missing := sorted({"quantity", "price"} - item.keys()):
        raise PositionError(f"{at} lacks {missing[0]!r}")
    if unknown := sorted(item.keys() - _LOT_KEYS):
        raise PositionError(f"{at} has an unknown key {unknown[0]!r:.40}")
    for key, value in item.items():
        if type(value) is not str:
            raise PositionError(f"{at}.{key} must be a string")
    try:
        date = dt.date.fromisoformat(item["date"]) if "date" in item else None
    except ValueError:
        raise PositionError(f"{at}.date is not a date: {item['date']!r:.20}") from None
    try:
        return Lot(parse_number(item["quantity"], "quantity", signed=True, zero=False),
                   parse_number(item["price"], "price"),
                   parse_number(item["fee"], "fee") if "fee" in item else parse_number("0", "fee"), date)
    except PositionError as exc:
        raise PositionError(f"{at}: {exc}") from None


def decode_all(positions: object) -> dict[str, PositionBook]:
    """The whole ``"positions"`` part: a book per feed; PositionError for anything encode would not write."""
    if type(positions) is not dict:
        raise PositionError("positions must be an object")
    books = {}
    for feed, entry in positions.items():
        if not feed or not feed.isprintable():
            raise PositionError(f"positions has an entry with an unusable name {feed!r:.20}")
        books[feed] = decode(entry, f"positions.{feed:.20}")
    return books
