"""Lots as CSV: what ``tickdeck positions import`` reads and ``tickdeck positions export`` writes.

The file is UTF-8 (a byte-order mark is allowed) with a **header row**, naming its columns in any order,
case and spaces ignored:

- ``symbol``, ``quantity``, ``price``: required. Numbers as the prompt takes them
  (:mod:`engine.positions.entry`): plain decimals, quantity signed and not zero, price zero or more.
- ``fee``: optional (an empty cell is 0), zero or more.
- ``date``: optional (an empty cell is no date): ISO 8601, ``2026-12-05`` or ``20261205``, optionally
  with a time (``2026-12-05T14:30:00Z``, ``2026-12-05 14:30``) of which only the date as written is kept.
  Day-first or month-first dates (``05/12/2026``) are refused: they cannot be told apart.

Lots are applied in the order of the file, and each symbol's dated lots must not go back in time (a
newest-first broker export is refused with the line, rather than folded in the wrong order). Symbols are
upper-cased as the prompt does; whether the feed lists them is not checked (no network here).

Reading is all or nothing: the first problem raises :class:`FileProblem` with one sentence naming the
line and the column, and nothing is returned. :func:`write_lots` writes the columns
``symbol,quantity,price,fee,date`` (exact decimals, ISO dates), which :func:`read_lots` reads back to
the same lots; a file in that form is written back byte for byte.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from typing import TextIO

from engine.positions.book import MAX_LOTS, Lot, PositionBook, PositionError, symbol_problem
from engine.positions.entry import parse_number

COLUMNS = ("symbol", "quantity", "price", "fee", "date")
REQUIRED = ("symbol", "quantity", "price")
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Well above MAX_LOTS lines of any sane width; a bigger file is not a list of trades."""
DATE_FORMATS = "ISO 8601 dates such as 2026-12-05 or 20261205 (a time after the date is allowed)"


class FileProblem(ValueError):
    """A malformed file: the message names the line and column (1-based), for the user as it is."""


def read_lots(data: bytes, name: str = "the file") -> list[tuple[str, Lot]]:
    """Every lot in ``data`` in file order, or FileProblem for the first problem (nothing is kept)."""
    if len(data) > MAX_FILE_BYTES:
        raise FileProblem(f"{name} is larger than {MAX_FILE_BYTES >> 20} MiB; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        before = data[start:exc.start].decode("utf-8", "replace")
        column = len(next(csv.reader([before]))) if before else 1  # the CSV column the bad byte is in
        raise FileProblem(f"{name}, line {line}, column {column}: not UTF-8 text (byte {exc.start})"
                          ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lots: list[tuple[str, Lot]] = []
    latest: dict[str, tuple[dt.date, int]] = {}
    columns: dict[str, int] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):  # a blank line (a trailing one, most often)
                continue
            if columns is None:
                columns = _header(fields, name, line)
                continue
            if len(lots) >= MAX_LOTS:
                raise FileProblem(f"{name}, line {line}: more than {MAX_LOTS:,} lots, the most a book holds")
            symbol, lot = _row(fields, columns, name, line)
            if lot.date is not None:
                if symbol in latest and lot.date < latest[symbol][0]:
                    earlier, at = latest[symbol]
                    raise FileProblem(
                        f"{name}, line {line}, column {columns['date'] + 1} (date): {lot.date} is before "
                        f"{symbol}'s {earlier} on line {at}; lots are applied in file order, oldest first")
                latest[symbol] = (lot.date, line)
            lots.append((symbol, lot))
    except csv.Error as exc:
        raise FileProblem(f"{name}, line {reader.line_num}: not readable as CSV ({exc})") from None
    if columns is None:
        raise FileProblem(f"{name}, line 1: empty; expected a header row naming {', '.join(REQUIRED)}")
    return lots


def _header(fields: list[str], name: str, line: int) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, raw in enumerate(fields):
        key = raw.strip().lower()
        if key not in COLUMNS:
            raise FileProblem(f"{name}, line {line}, column {i + 1}: {raw.strip()[:30]!r} is not a column; "
                              f"the header row names {', '.join(REQUIRED)} and optionally fee, date")
        if key in columns:
            raise FileProblem(f"{name}, line {line}, column {i + 1}: {key} is named twice")
        columns[key] = i
    if missing := [c for c in REQUIRED if c not in columns]:
        raise FileProblem(f"{name}, line {line}: the header row lacks the column {missing[0]} (it must name "
                          f"{', '.join(REQUIRED)}, and optionally fee, date)")
    return columns


def _row(fields: list[str], columns: dict[str, int], name: str, line: int) -> tuple[str, Lot]:
    if len(fields) > len(columns):
        raise FileProblem(f"{name}, line {line}, column {len(columns) + 1}: {len(fields)} fields, but the "
                          f"header names {len(columns)} columns")

    def cell(key: str) -> tuple[str, str]:
        index = columns.get(key)
        where = f"{name}, line {line}, column {index + 1} ({key})" if index is not None else ""
        if index is not None and index >= len(fields):
            if key in REQUIRED:
                raise FileProblem(f"{where}: missing (the line has {len(fields)} fields)")
            return "", where
        return (fields[index].strip() if index is not None else ""), where

    symbol, where = cell("symbol")
    symbol = symbol.upper()
    if problem := symbol_problem(symbol):
        raise FileProblem(f"{where}: {problem}")
    values = []
    for key, signed, zero in (("quantity", True, False), ("price", False, True), ("fee", False, True)):
        text, where = cell(key)
        if not text and key != "fee":
            raise FileProblem(f"{where}: empty")
        try:
            values.append(parse_number(text or "0", key, signed=signed, zero=zero))
        except PositionError as exc:
            raise FileProblem(f"{where}: {exc}") from None
    text, where = cell("date")
    date = _date(text, where) if text else None
    return symbol, Lot(values[0], values[1], values[2], date)


def _date(text: str, where: str) -> dt.date:
    try:
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        raise FileProblem(f"{where}: {text[:30]!r} is not a date; expected {DATE_FORMATS}") from None


def write_lots(out: TextIO, lots: Iterable[tuple[str, Lot]]) -> int:
    """Write the header and one row per lot; returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for symbol, lot in lots:
        writer.writerow((symbol, f"{lot.quantity:f}", f"{lot.price:f}", f"{lot.fee:f}",
                         lot.date.isoformat() if lot.date else ""))
        count += 1
    return count


def book_lots(book: PositionBook) -> list[tuple[str, Lot]]:
    """The book's lots, symbol by symbol in the book's order, each symbol's in entry order."""
    return [(symbol, lot) for symbol, lots in book.lots().items() for lot in lots]
