"""``tickdeck indicators IN.csv [-o OUT.csv]``: the default indicators over an OHLCV CSV file.

The input needs columns open, high, low, close and volume (header names in any case) and a timestamp
column named timestamp, datetime, date or time, or first and unnamed (as ``DataFrame.to_csv`` writes an
index). Timestamps are ISO 8601 (naive ones are taken as UTC) or epoch seconds, milliseconds,
microseconds or nanoseconds (told apart by magnitude). Rows must be oldest first.

Every bar goes through the streaming engine one at a time (``IndicatorBank.commit``), exactly as a live
feed drives it, so this command doubles as a check of the streaming path against TA-Lib. The output is
the input columns unchanged followed by one column per output of ``DEFAULT_OUTPUTS``, at full float
precision, with empty cells while an indicator warms up.

The whole file is checked before anything is written. A problem is reported as one line naming the file
line (the header is line 1) and the column, and no output file is created: the output is written to a
temporary file next to it and renamed into place only when complete.

Rows are split with the stdlib ``csv`` module rather than ``pandas.read_csv``: pandas pads short rows
with empty cells and counts records rather than file lines, so it cannot say "line 7 has 5 fields".
pandas parses the columns (numbers, ISO 8601 and epoch timestamps) and finds the bad cells.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from engine.indicators.catalogue import DEFAULT_OUTPUTS

REQUIRED = ("open", "high", "low", "close", "volume")
TIME_NAMES = ("timestamp", "datetime", "date", "time")
_EPOCH_MIN = 1e8  # smaller numbers are not epoch times (1e8 s is March 1973); try them as dates
_EPOCH_UNITS = ((1e11, 1_000_000_000), (1e14, 1_000_000), (1e17, 1_000), (np.inf, 1))  # s, ms, us, ns
_NS_LIMIT = 9.2e18  # just inside int64 nanoseconds (year 2262)
_TIME_HINT = "use ISO 8601 such as 2024-01-02 09:30:00, or epoch seconds or milliseconds"


class InputError(Exception):
    """A problem with the input or output file; the message is one line for the user."""


@dataclass
class _Table:
    path: str
    header: list[str]
    header_line: int
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # file line where each row starts
    misshapen: list[tuple[int, str]] = field(default_factory=list)  # (line, message), rows left out

    def label(self, pos: int) -> str:
        name = self.header[pos].strip()
        return f"column {name!r}" if name else f"column {pos + 1} (unnamed)"

    def where(self, line: int, pos: int) -> str:
        return f"{self.path} line {line}, {self.label(pos)}"


def _read_rows(path: str) -> _Table:
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    table: _Table | None = None
    with fh:
        reader = csv.reader(fh)
        start = 1
        try:
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not any(f.strip() for f in fields):
                    continue  # blank line, or a row of empty cells as spreadsheets leave at the end
                if table is None:
                    table = _Table(path, fields, line)
                elif len(fields) != len(table.header):
                    table.misshapen.append((line, _field_count(table, line, len(fields))))
                else:
                    table.rows.append(fields)
                    table.lines.append(line)
        except csv.Error as exc:
            raise InputError(f"{path} line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text") from None
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if table is None:
        raise InputError(f"{path} line 1: the file is empty; expected a header naming a timestamp column "
                         f"and {', '.join(REQUIRED)}")
    return table


def _field_count(table: _Table, line: int, count: int) -> str:
    expected = len(table.header)
    if count < expected:
        detail = f"{table.label(count)} and after are missing"
    else:
        detail = f"extra field(s) after {table.label(expected - 1)}"
    return f"{table.path} line {line}: {count} fields but the header has {expected}; {detail}"


def _columns(table: _Table) -> tuple[int, dict[str, int]]:
    """The position of the timestamp column and of each OHLCV column."""
    names = [h.strip().lower() for h in table.header]
    found: dict[str, int] = {}
    for name in (*REQUIRED, *TIME_NAMES):
        positions = [i for i, n in enumerate(names) if n == name]
        if len(positions) > 1:
            raise InputError(f"{table.path} line {table.header_line}, column {name!r}: appears "
                             f"{len(positions)} times in the header")
        if positions:
            found[name] = positions[0]
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        hint = " (is the file comma-separated?)" if len(names) == 1 else ""
        wanted = ", ".join(repr(m) for m in missing)
        have = ", ".join(repr(h) for h in table.header)
        raise InputError(f"{table.path} line {table.header_line}: missing required column(s) {wanted}; "
                         f"the header has {have}{hint}")
    time_pos = next((found[n] for n in TIME_NAMES if n in found), None)
    if time_pos is None and names[0] in ("", "unnamed: 0"):
        time_pos = 0
    if time_pos is None:
        raise InputError(
            f"{table.path} line {table.header_line}: no timestamp column; name it "
            f"{', '.join(TIME_NAMES[:-1])} or {TIME_NAMES[-1]}, or put it first with an empty header"
        )
    return time_pos, {name: found[name] for name in REQUIRED}


@dataclass
class _Problems:
    """The first problem in file order, and how many rows have any."""

    table: _Table
    first: tuple[int, int, str] | None = None  # (row, column position, message)
    rows: np.ndarray | None = None

    def flag(self, mask: np.ndarray, pos: int, describe: Callable[[int], str]) -> None:
        if not mask.any():
            return
        i = int(np.argmax(mask))
        if self.first is None or (i, pos) < self.first[:2]:
            self.first = (i, pos, f"{self.table.where(self.table.lines[i], pos)}: {describe(i)}")
        self.rows = mask if self.rows is None else self.rows | mask

    def raise_first(self) -> None:
        """Raise the problem on the earliest line, misshapen rows included."""
        found = list(self.table.misshapen)
        if self.first is not None:
            found.append((self.table.lines[self.first[0]], self.first[2]))
        if not found:
            return
        more = len(self.table.misshapen) + (int(self.rows.sum()) if self.rows is not None else 0) - 1
        suffix = f" (and {more} more line(s) with problems)" if more else ""
        raise InputError(min(found)[1] + suffix)


def _cells(table: _Table, pos: int) -> pd.Series:
    return pd.Series([row[pos] for row in table.rows], dtype=object).str.strip()


def _numbers(table: _Table, pos: int, name: str, problems: _Problems) -> np.ndarray:
    cells = _cells(table, pos)
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    empty = (cells == "").to_numpy()
    problems.flag(empty, pos, lambda i: "empty cell")
    problems.flag(~np.isfinite(values) & ~empty, pos, lambda i: f"not a number: {cells.iat[i]!r}")
    problems.flag(values < 0, pos, lambda i: f"negative {name}: {cells.iat[i]}")
    return values


def _timestamps(table: _Table, pos: int, problems: _Problems) -> np.ndarray:
    """UTC nanoseconds; unparseable cells are flagged (and left at 0)."""
    cells = _cells(table, pos)
    n = len(cells)
    t = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)

    numbers = pd.to_numeric(cells, errors="coerce")
    as_float = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    epoch = np.abs(np.nan_to_num(as_float)) >= _EPOCH_MIN
    lower = 0.0
    for upper, factor in _EPOCH_UNITS:
        unit = epoch & (np.abs(as_float) >= lower) & (np.abs(as_float) < upper)
        lower = upper
        in_range = unit & (np.abs(as_float) * factor < _NS_LIMIT)
        if numbers.dtype.kind == "i":
            t[in_range] = numbers.to_numpy()[in_range] * factor
        else:
            t[in_range] = np.round(as_float[in_range] * factor).astype(np.int64)
        ok |= in_range

    text = ~epoch & (cells != "").to_numpy()
    if text.any():
        parsed = pd.to_datetime(cells[text], utc=True, format="ISO8601", errors="coerce")
        stamps = parsed.dt.tz_convert(None).dt.as_unit("ns").to_numpy(dtype="datetime64[ns]")
        good = ~np.isnat(stamps)
        idx = np.flatnonzero(text)
        t[idx[good]] = stamps[good].view(np.int64)
        ok[idx[good]] = True

    empty = (cells == "").to_numpy()
    problems.flag(empty, pos, lambda i: "empty cell")
    problems.flag(~ok & ~empty, pos, lambda i: f"not a timestamp: {cells.iat[i]!r} ({_TIME_HINT})")
    back = np.zeros(n, dtype=bool)
    if n > 1:
        back[1:] = ok[1:] & ok[:-1] & (t[1:] < t[:-1])
    problems.flag(back, pos, lambda i: f"{cells.iat[i]!r} is earlier than the row before it "
                                       f"(line {table.lines[i - 1]}); sort the file oldest first")
    return t


def _indicators(t: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                v: np.ndarray) -> np.ndarray:
    """Stream the bars one at a time through an IndicatorBank; one column per DEFAULT_OUTPUTS name."""
    from engine.indicators.bank import IndicatorBank  # compiles (or loads) the numba kernels

    bank = IndicatorBank(DEFAULT_OUTPUTS, 1)
    rows = np.array([bank.row(name) for name in DEFAULT_OUTPUTS], dtype=np.int64)
    out = np.empty((len(t), len(DEFAULT_OUTPUTS)), dtype=np.float64)
    bars = zip(t.tolist(), o.tolist(), h.tolist(), lo.tolist(), c.tolist(), v.tolist(), strict=True)
    for i, (ti, oi, hi, li, ci, vi) in enumerate(bars):
        bank.commit(0, ti, oi, hi, li, ci, vi)
        out[i] = bank.committed[rows, 0]
    return out


def compute(table: _Table) -> np.ndarray:
    """One row per bar, one column per DEFAULT_OUTPUTS name; raises InputError for the first bad cell."""
    time_pos, pos = _columns(table)
    problems = _Problems(table)
    t = _timestamps(table, time_pos, problems)
    values = {name: _numbers(table, pos[name], name, problems) for name in REQUIRED}
    high, low = values["high"], values["low"]
    problems.flag(high < low, pos["high"], lambda i: (
        f"high {table.rows[i][pos['high']].strip()} is below low {table.rows[i][pos['low']].strip()} "
        f"({table.label(pos['low'])})"))
    problems.raise_first()

    return _indicators(t, values["open"], high, low, values["close"], values["volume"])


def _write(table: _Table, out: np.ndarray, stream: TextIO) -> None:
    """The input fields as they were, then the outputs: ``repr`` (shortest round-trip), NaN as empty.

    Row by row with ``repr``: the same text as ``DataFrame.to_csv``, faster, and no copy of the table.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*table.header, *DEFAULT_OUTPUTS])
    for fields, values in zip(table.rows, out, strict=True):
        writer.writerow([*fields, *(repr(x) if x == x else "" for x in values.tolist())])


def _check_output(output: str) -> Path:
    target = Path(output)
    directory = target.parent
    if not directory.is_dir():
        raise InputError(f"cannot write {output}: directory {str(directory)!r} does not exist")
    if target.is_dir():
        raise InputError(f"cannot write {output}: it is a directory")
    return target


def _write_atomically(table: _Table, out: np.ndarray, target: Path) -> None:
    """Write next to ``target`` and rename into place: readers never see a partial file."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            _write(table, out, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def run(input_path: str, output_path: str | None = None) -> int:
    """The ``indicators`` command: 0 on success; raises InputError for the user's mistakes."""
    target = None if output_path is None or output_path == "-" else _check_output(output_path)
    table = _read_rows(input_path)
    out = compute(table)
    if target is None:
        _write(table, out, sys.stdout)
        sys.stdout.flush()
    else:
        _write_atomically(table, out, target)
    return 0
