"""Positions as the state file keeps them: plain JSON, decimals as strings, keyed per feed.

``console.state`` writes this under the top-level key ``"positions"`` of ``state.json``, next to the
watchlists, with the same atomic write; a positions part that is not exactly what :func:`encode` writes
makes the whole file damaged, handled as damaged watchlists are (set aside, the user told, the defaults
loaded). The shape, per feed, symbols in the order they were first entered, lots in entry order::

    "positions": {"sim": {"AAPL": {"lots": [
        {"quantity": "10", "price": "182.50", "fee": "1.20", "date": "2026-12-05"},
        {"quantity": "-4", "price": "190"}]}}}

Numbers are strings (``format(Decimal, "f")``: exact, no exponent); ``fee`` is left out when it is zero
and ``date`` (ISO 8601) when the lot has none. A position object may also hold ``"stop"`` and
``"target"`` (exact decimal strings above zero, left out when not set; files written before them load
as positions without levels); keys it does not know are refused, as the watchlists' are.

:func:`read_feed` is the read-only half for the headless service (the engine never imports the console):
it reads the same file, never moves it, and answers no positions and a warning when it is damaged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.positions.book import Lot, PositionBook, PositionError
from engine.positions.entry import parse_number

_LOT_KEYS = {"quantity", "price", "fee", "date"}
_LEVEL_KEYS = ("stop", "target")
STATE_DIR_VAR = "TICKDECK_STATE_DIR"
STATE_FILENAME = "state.json"
"""Where ``console.state`` keeps the file (a test keeps the two modules' names equal)."""
MAX_STATE_BYTES = 64 * 2**20
"""The largest state file :func:`read_feed` reads (a full book of 50,000 lots is about 5 MB)."""


def encode(book: PositionBook) -> dict[str, Any]:
    """``book`` as the JSON value of one feed's entry."""
    out: dict[str, Any] = {}
    for position in book:
        entry: dict[str, Any] = {"lots": [_lot_json(lot) for lot in position.lots]}
        if position.stop is not None:
            entry["stop"] = f"{position.stop:f}"
        if position.target is not None:
            entry["target"] = f"{position.target:f}"
        out[position.symbol] = entry
    return out


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
    levels: dict[str, tuple[Decimal | None, Decimal | None]] = {}
    for symbol, position in entry.items():
        at = f"{where}.{symbol:.40}"
        if (type(position) is not dict or not {"lots"} <= set(position) <= {"lots", *_LEVEL_KEYS}
                or type(position["lots"]) is not list):
            raise PositionError(f"{at} must be an object holding a list of lots, and optionally a stop "
                                "and a target")
        lots[symbol] = [_lot(item, f"{at}.lots[{i}]") for i, item in enumerate(position["lots"])]
        if any(key in position for key in _LEVEL_KEYS):
            stop, target = (_level(position[key], f"{at}.{key}", key) if key in position else None
                            for key in _LEVEL_KEYS)
            levels[symbol] = (stop, target)
    try:
        return PositionBook.of(lots, levels)
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


def _level(value: object, at: str, what: str) -> Decimal:
    if type(value) is not str:
        raise PositionError(f"{at} must be a string")
    try:
        return parse_number(value, what, zero=False)
    except PositionError as exc:
        raise PositionError(f"{at}: {exc}") from None


def state_path(env: Mapping[str, str] = os.environ) -> Path:
    """The state file: in ``$TICKDECK_STATE_DIR``, else the platform's user state directory."""
    directory = env.get(STATE_DIR_VAR)
    if not directory:
        import platformdirs

        directory = platformdirs.user_state_dir("tickdeck")
    return Path(directory) / STATE_FILENAME


def read_feed(path: Path, feed: str) -> tuple[PositionBook, str | None]:
    """``feed``'s positions in the state file at ``path`` and a warning (None: all is well), read only:
    no file or no entry is an empty book; an unreadable or damaged one is an empty book and the reason
    (the console sets a damaged file aside when it next starts; a service only reads)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return PositionBook(), None
    except OSError as exc:
        return PositionBook(), f"cannot read the positions in {path}: {exc.strerror or exc}"
    if len(data) > MAX_STATE_BYTES:
        return PositionBook(), f"{path} is larger than {MAX_STATE_BYTES // 2**20} MiB; no positions loaded"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return PositionBook(), f"{path} is damaged (not JSON: {exc}); no positions loaded"
    positions = doc.get("positions", {}) if type(doc) is dict else None
    if type(positions) is not dict:
        return PositionBook(), f"{path} is damaged (positions must be an object); no positions loaded"
    if feed not in positions:
        return PositionBook(), None
    try:
        return decode(positions[feed], f"positions.{feed:.20}"), None
    except PositionError as exc:
        return PositionBook(), f"{path} is damaged ({exc}); no positions loaded"


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
