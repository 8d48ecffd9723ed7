"""Reading and checking OHLCV files (and the cells of tick files): one reader for the CLI and the feeds.

It lives in the engine because two users read the same files: ``tickdeck indicators`` (in ``console``)
computes indicators over an OHLCV CSV file, and the replay feed (``engine.feeds.replay``) replays OHLCV
CSV or Parquet files and tick files. The engine never imports ``console`` (ARCHITECTURE.md, Layers), so
the shared code is here and the command imports it.

An OHLCV table needs columns open, high, low, close and volume (header names in any case) and a timestamp
column named timestamp, datetime, date or time, or first and unnamed (as ``DataFrame.to_csv`` writes an
index). Timestamps are ISO 8601 (naive ones are taken as UTC) or epoch seconds, milliseconds,
microseconds or nanoseconds (told apart by magnitude). Rows must be oldest first.

A problem is an ``InputError`` whose message is one line naming the file, where in it ("line N" of a CSV
file, the header being line 1; "row N" of a Parquet file, whose column names are not a row) and the
column. The whole table is checked first and the problem that comes first in the file is reported, with
a count of the other lines (rows) that have one.

Rows of a CSV file are split with the stdlib ``csv`` module rather than ``pandas.read_csv``: pandas pads
short rows with empty cells and counts records rather than file lines, so it cannot say "line 7 has 5
fields". pandas parses the columns (numbers, ISO 8601 and epoch timestamps) and finds the bad cells; it is
imported on first use, so importing this module stays light. The backtest first tries
``fast_checked_csv`` (pandas' C parser; see "the fast path" below), which gives up on any file with a
problem, so the messages are always this careful reader's.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

REQUIRED = ("open", "high", "low", "close", "volume")
TIME_NAMES = ("timestamp", "datetime", "date", "time")
EPOCH_MIN = 1e8  # smaller numbers are not epoch times (1e8 s is March 1973); try them as dates
EPOCH_UNITS = ((1e11, 1_000_000_000), (1e14, 1_000_000), (1e17, 1_000), (np.inf, 1))  # s, ms, us, ns
NS_LIMIT = 9.2e18  # just inside int64 nanoseconds (year 2262)
# whole days inside datetime64[ns], so comparing with any coarser unit cannot overflow
_NS_FIRST, _NS_END = np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-11", "D")
TIME_HINT = "use ISO 8601 such as 2024-01-02 09:30:00, or epoch seconds or milliseconds"

Column = tuple[np.ndarray, np.ndarray]  # values (object strings, numbers or datetime64), missing mask


class InputError(Exception):
    """A problem with an input (or output) file; the message is one line for the user.

    ``line`` and ``column`` say where, for problems found in a table's header or cells: the line (CSV) or
    row (Parquet; 0 for its column names) and the column's header text (None for a whole line).
    """

    def __init__(self, message: str, line: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass
class Table:
    """A file's cells as text, with where each row is: file lines for CSV, 1-based rows for Parquet."""

    path: str
    header: list[str]
    header_line: int  # 0 when the header is not a line (Parquet column names)
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line (or row number) where each row starts
    misshapen: list[tuple[int, str]] = field(default_factory=list)  # (line, message), rows left out
    unit: str = "line"  # what ``lines`` count: "line" (CSV) or "row" (Parquet)

    def at(self, line: int) -> str:
        """The file and the place: ``f.csv line 7``, ``f.parquet row 3``, ``f.parquet (column names)``."""
        if line == 0:
            return f"{self.path} (column names)"
        return f"{self.path} {self.unit} {line}"

    def label(self, pos: int) -> str:
        name = self.header[pos].strip()
        return f"column {name!r}" if name else f"column {pos + 1} (unnamed)"

    def where(self, line: int, pos: int) -> str:
        return f"{self.at(line)}, {self.label(pos)}"

    def field_count(self, line: int, count: int) -> str:
        """The message for a row with ``count`` fields where the header has another number."""
        expected = len(self.header)
        if count < expected:
            detail = f"{self.label(count)} and after are missing"
        else:
            detail = f"extra field(s) after {self.label(expected - 1)}"
        return f"{self.at(line)}: {count} fields but the header has {expected}; {detail}"


def read_csv(path: str) -> Table:
    """Every non-blank line of a CSV file as text; rows with the wrong number of fields are set aside."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    table: Table | None = None
    with fh:
        reader = csv.reader(fh)
        start = 1
        try:
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not "".join(fields).strip():  # any(f.strip() ...), without a Python step per field
                    continue  # blank line, or a row of empty cells as spreadsheets leave at the end
                if table is None:
                    table = Table(path, fields, line)
                elif len(fields) != len(table.header):
                    table.misshapen.append((line, table.field_count(line, len(fields))))
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


def table_from_arrow(path: str, data: pa.Table) -> Table:
    """A Parquet file's columns as text, as a CSV file would hold them (floats by ``repr``, so exactly;
    datetimes as epoch ns). A pandas index saved with the data becomes the first, unnamed column."""
    names = [("" if n.startswith("__index_level_") else n) for n in data.column_names]
    order = sorted(range(len(names)), key=lambda i: names[i] != "")
    cells = [arrow_text(data.column(i)) for i in order]
    rows = [list(r) for r in zip(*cells, strict=True)]
    return Table(path, [names[i] for i in order], 0, rows, list(range(1, len(rows) + 1)), unit="row")


def text_column(values: np.ndarray) -> Column:
    """Cells as stripped text (None as empty), and which are empty."""
    import pandas as pd

    text = pd.Series(values, dtype=object).fillna("").astype(str).str.strip().to_numpy(dtype=object)
    return text, text == ""


def arrow_column(col: pa.ChunkedArray) -> Column:
    """Numbers as numbers, dates and timestamps as datetime64[ns], anything else as text; nulls missing."""
    import pyarrow as pa

    missing = col.is_null().to_numpy(zero_copy_only=False)
    kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        try:
            ns = col.cast(pa.timestamp("ns", getattr(kind, "tz", None))).cast(pa.int64()).fill_null(0)
        except pa.ArrowInvalid:  # a time outside datetime64[ns] (1677-2262): as text, found bad there
            col = col.cast(pa.string())  # Arrow's text for any time ("<value out of range: N>" at worst)
        else:
            return ns.to_numpy().view("datetime64[ns]"), missing
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return col.fill_null(0).to_numpy(), missing
    # fromiter, not array: a column of equal-length lists would become a 2-D array
    return text_column(np.fromiter(col.to_pylist(), dtype=object, count=len(col)))[0], missing


def arrow_text(col: pa.ChunkedArray) -> list[str]:
    """Cells as the CSV reader would see them: floats by ``repr`` (exact), datetimes as epoch ns."""
    values, missing = arrow_column(col)
    if values.dtype.kind == "M":
        values = values.view(np.int64)
    return ["" if m else repr(x) if isinstance(x, float) else str(x)
            for x, m in zip(values.tolist(), missing.tolist(), strict=True)]


def find_columns(table: Table) -> tuple[int, dict[str, int]]:
    """The position of the timestamp column and of each OHLCV column."""
    names = [h.strip().lower() for h in table.header]
    head = table.at(table.header_line)
    found: dict[str, int] = {}
    for name in (*REQUIRED, *TIME_NAMES):
        positions = [i for i, n in enumerate(names) if n == name]
        if len(positions) > 1:
            raise InputError(f"{head}, column {name!r}: appears {len(positions)} times in the header",
                             table.header_line)
        if positions:
            found[name] = positions[0]
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        hint = " (is the file comma-separated?)" if len(names) == 1 else ""
        wanted = ", ".join(repr(m) for m in missing)
        have = ", ".join(repr(h) for h in table.header)
        raise InputError(f"{head}: missing required column(s) {wanted}; the header has {have}{hint}",
                         table.header_line)
    time_pos = next((found[n] for n in TIME_NAMES if n in found), None)
    if time_pos is None and names[0] in ("", "unnamed: 0"):
        time_pos = 0
    if time_pos is None:
        raise InputError(f"{head}: no timestamp column; name it {', '.join(TIME_NAMES[:-1])} or "
                         f"{TIME_NAMES[-1]}, or put it first with an empty header", table.header_line)
    return time_pos, {name: found[name] for name in REQUIRED}


@dataclass
class Problems:
    """The first problem in file order, and how many rows have any."""

    table: Table
    first: tuple[int, int, str] | None = None  # (row, column position, message)
    rows: np.ndarray | None = None

    def flag(self, mask: np.ndarray, pos: int, describe: Callable[[int], str]) -> None:
        """Note the rows where ``mask`` holds as having a problem in column ``pos``."""
        if not mask.any():
            return
        i = int(np.argmax(mask))
        if self.first is None or (i, pos) < self.first[:2]:
            self.first = (i, pos, f"{self.table.where(self.table.lines[i], pos)}: {describe(i)}")
        self.rows = mask if self.rows is None else self.rows | mask

    def raise_first(self) -> None:
        """Raise the problem on the earliest line, misshapen rows included."""
        table = self.table
        found: list[tuple[int, str, str | None]] = [(line, msg, None) for line, msg in table.misshapen]
        if self.first is not None:
            i, pos, msg = self.first
            found.append((table.lines[i], msg, table.header[pos].strip() or f"column {pos + 1}"))
        if not found:
            return
        line, message, column = min(found, key=lambda f: f[:2])
        more = len(table.misshapen) + (int(self.rows.sum()) if self.rows is not None else 0) - 1
        suffix = f" (and {more} more {table.unit}(s) with problems)" if more else ""
        raise InputError(message + suffix, line, column)


def cells(table: Table, pos: int) -> pd.Series:
    """One column's cells, stripped (``str.strip`` mapped in C: pandas' ``.str.strip`` calls a Python
    lambda per cell, which was most of reading a file)."""
    import pandas as pd

    return pd.Series(list(map(str.strip, map(itemgetter(pos), table.rows))), dtype=object)


def parse_numbers(cells: pd.Series) -> np.ndarray:
    """Text to float64; NaN where a cell is not a number."""
    import pandas as pd

    return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def epoch_ns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers to UTC ns, the unit told by magnitude: (ns, ok), ns 0 where not ok (a number below
    ``EPOCH_MIN``, not finite or past 2262). Integers are converted exactly, floats rounded."""
    magnitude = np.abs(values.astype(np.float64))
    ns = np.zeros(len(values), dtype=np.int64)
    ok = np.zeros(len(values), dtype=bool)
    lower = EPOCH_MIN
    for upper, factor in EPOCH_UNITS:
        unit = (magnitude >= lower) & (magnitude < upper) & (magnitude * factor < NS_LIMIT)
        lower = upper
        if values.dtype.kind in "iu":
            ns[unit] = values[unit].astype(np.int64) * factor
        else:
            ns[unit] = np.round(values[unit] * factor).astype(np.int64)
        ok |= unit
    return ns, ok


def parse_times(cells: pd.Series, maybe_epoch: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stripped text to UTC ns: epoch numbers by magnitude, anything else as ISO 8601 (naive is UTC).
    Returns (ns, ok); ns is 0 where a cell is empty or not a time. ``maybe_epoch`` False: the caller
    knows no cell is a number."""
    import pandas as pd

    if maybe_epoch:
        numbers = pd.to_numeric(cells, errors="coerce")
        as_float = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        ns, ok = epoch_ns(numbers.to_numpy() if numbers.dtype.kind == "i" else as_float)
        epoch = np.abs(np.nan_to_num(as_float)) >= EPOCH_MIN
    else:
        ns, ok = np.zeros(len(cells), dtype=np.int64), np.zeros(len(cells), dtype=bool)
        epoch = ok.copy()
    text = ~epoch & (cells != "").to_numpy()
    if text.any():
        parsed = pd.to_datetime(cells[text], utc=True, format="ISO8601", errors="coerce")
        # pandas keeps dates outside datetime64[ns] (year 1, 9999) at a coarser unit: those are not ok
        stamps = parsed.dt.tz_convert(None).to_numpy()
        good = ~np.isnat(stamps) & (stamps >= _NS_FIRST) & (stamps < _NS_END)
        idx = np.flatnonzero(text)
        ns[idx[good]] = stamps[good].astype("datetime64[ns]").view(np.int64)
        ok[idx[good]] = True
    return ns, ok


def numbers(table: Table, pos: int, name: str, problems: Problems) -> np.ndarray:
    """A column of non-negative numbers; empty, non-numeric and negative cells are flagged."""
    text = cells(table, pos)
    values = parse_numbers(text)
    empty = (text == "").to_numpy()
    problems.flag(empty, pos, lambda i: "empty cell")
    problems.flag(~np.isfinite(values) & ~empty, pos, lambda i: f"not a number: {text.iat[i]!r}")
    problems.flag(values < 0, pos, lambda i: f"negative {name}: {text.iat[i]}")
    return values


def timestamps(table: Table, pos: int, problems: Problems) -> np.ndarray:
    """UTC nanoseconds, oldest first; empty, unparseable and out-of-order cells are flagged (bad ones
    are left at 0)."""
    text = cells(table, pos)
    t, ok = parse_times(text)
    empty = (text == "").to_numpy()
    problems.flag(empty, pos, lambda i: "empty cell")
    problems.flag(~ok & ~empty, pos, lambda i: f"not a timestamp: {text.iat[i]!r} ({TIME_HINT})")
    back = np.zeros(len(t), dtype=bool)
    if len(t) > 1:
        back[1:] = ok[1:] & ok[:-1] & (t[1:] < t[:-1])
    problems.flag(back, pos, lambda i: f"{text.iat[i]!r} is earlier than the row before it "
                                       f"({table.unit} {table.lines[i - 1]}); sort the file oldest first")
    return t


@dataclass
class Bars:
    """An OHLCV table's columns, parsed; what is wrong so far is in ``problems``, not yet raised."""

    time_pos: int
    pos: dict[str, int]  # column position of each REQUIRED name
    t: np.ndarray  # UTC ns
    values: dict[str, np.ndarray]  # float64 per REQUIRED name
    problems: Problems


def parse_bars(table: Table) -> Bars:
    """Find and parse the columns; a header problem raises InputError, cell problems are collected."""
    time_pos, pos = find_columns(table)
    problems = Problems(table)
    t = timestamps(table, time_pos, problems)
    values = {name: numbers(table, pos[name], name, problems) for name in REQUIRED}
    return Bars(time_pos, pos, t, values, problems)


@dataclass(frozen=True)
class CheckedBars:
    """Bars that four ticks each can rebuild exactly, with each row's symbol as a code into ``symbols``."""

    t: np.ndarray
    ohlcv: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    codes: np.ndarray
    symbols: list[str]


def check_bars(table: Table, default_symbol: str) -> CheckedBars:
    """Parse a bar table and check what replaying it needs: high >= low, open and close inside the bar,
    no zero price, a symbol on every row (a ``symbol`` column, else ``default_symbol``), no bar time
    repeated within a symbol. The first problem raises InputError (line or row, column). Shared by the
    replay feed and the backtest, which both turn these bars into ticks."""
    parsed = parse_bars(table)
    header = [name.strip().lower() for name in table.header]
    if "symbol" in header:
        sym_pos = header.index("symbol")
        names = cells(table, sym_pos).to_numpy(dtype=object)
        parsed.problems.flag(names == "", sym_pos, lambda i: "empty cell")
    else:
        names = np.full(len(parsed.t), default_symbol, dtype=object)
    checked = checked_bars(parsed, names)
    parsed.problems.raise_first()
    return checked


def checked_bars(parsed: Bars, names: np.ndarray) -> CheckedBars:
    """The checks across columns (flagged in ``parsed.problems``, not raised) and the bars they give."""
    import pandas as pd

    problems, time_pos, pos, t = parsed.problems, parsed.time_pos, parsed.pos, parsed.t
    table = problems.table
    o, h, lo, c, v = (parsed.values[name] for name in REQUIRED)
    problems.flag(h < lo, pos["high"], lambda i: f"high {h[i].item()} is below low {lo[i].item()}")
    for name, x in (("open", o), ("close", c)):  # four ticks rebuild a bar only if these hold
        def outside(i: int, x: np.ndarray = x, n: str = name) -> str:
            return f"{n} {x[i].item()} is outside the bar's low {lo[i].item()} and high {h[i].item()}"

        problems.flag(((x > h) | (x < lo)) & (h >= lo), pos[name], outside)
    for name, x in (("open", o), ("high", h), ("low", lo), ("close", c)):
        def zero(i: int, n: str = name) -> str:
            return f"{n} is 0; prices must be positive"

        problems.flag(x == 0, pos[name], zero)
    codes, uniques = pd.factorize(names)
    repeated = pd.DataFrame({"s": codes, "t": t}).duplicated().to_numpy()
    problems.flag(repeated, time_pos, lambda i: f"bar time {table.rows[i][time_pos].strip()!r} repeats "
                                                f"an earlier bar of {names[i]!r}")
    return CheckedBars(t, (o, h, lo, c, v), np.asarray(codes), [str(u) for u in uniques])


# --- the fast path --------------------------------------------------------------------------------
# Reading with Python's csv module and parsing text cells was three quarters of a backtest. A file that
# is fine is read by pandas' C parser instead; at the first sign of anything else (a cell that is not a
# number, a short or long row, any failed check) the careful reader above reads the file again and names
# the problem, so messages stay exactly as they were. The C parser's numbers are the careful reader's
# bits except after a leading "+" (see ``leading_plus``), which the fast path leaves alone; the tests
# compare the two on files written in every form the careful reader takes.

@dataclass
class AnyProblem(Problems):
    """Problems that only note whether there is one: the careful reader then says which."""

    found: bool = False

    def flag(self, mask: np.ndarray, pos: int, describe: Callable[[int], str]) -> None:
        if mask.any():
            self.found = True


def first_row(path: str) -> tuple[list[str], int]:
    """The header as the careful reader finds it (the first line that is not blank) and its line."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        start = 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if "".join(fields).strip():
                return fields, line
    raise InputError(f"{path}: empty")


FIELD_LIMIT = 131_072  # the csv module's default field_size_limit: a longer field is an error there


def leading_plus(data: bytes) -> bool:
    """Whether a "+" may start a number: pandas.to_numeric (the careful reader) can land one ulp away
    from the C parser (and Python's float) on "+0.0018587623802617014", so such a file is left to the
    careful reader and values stay what they were. Other "+" follow an exponent's e or a digit (a time
    zone); counted rather than searched with a regular expression, which took longer than the parse."""
    plus = data.count(b"+")
    return bool(plus) and plus > sum(data.count(bytes([c]) + b"+") for c in b"eE0123456789")


def fast_checked_csv(path: str, default_symbol: str) -> CheckedBars | None:
    """:func:`check_bars` of :func:`read_csv` for a CSV file that has no problem, read by pandas' C
    parser; None when the file has any problem or anything unusual (the caller then reads it carefully,
    which finds the problem and says where)."""
    import pandas as pd

    try:
        header, line = first_row(path)
        table = Table(path, header, line)
        time_pos, pos = find_columns(table)
        with open(path, "rb") as fh:
            data = fh.read()
        if (b"\0" in data or leading_plus(data)  # NUL: the two tokenizers may differ on it
                or max(map(len, data.splitlines()), default=0) > FIELD_LIMIT):
            return None
        names = [h.strip().lower() for h in header]
        sym_pos = names.index("symbol") if "symbol" in names else None
        dtypes: dict[int, type] = {p: np.float64 for p in pos.values()}
        if sym_pos is not None:
            dtypes[sym_pos] = str
        # pandas pads a short row with empty cells: only a file whose every column must be non-empty
        # shows a short row (as a failed number, time or symbol), so one with other columns is left out
        if len(header) != len({time_pos, *dtypes}):
            return None
        with warnings.catch_warnings():  # a first row longer than the header is cut, with a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.BytesIO(data), engine="c", encoding="utf-8-sig", header=0,
                                index_col=False, na_filter=False, dtype=dtypes)
    except (InputError, ValueError, OSError, csv.Error, pd.errors.ParserWarning):  # ParserError: ValueError
        return None
    if frame.shape[1] != len(header) or not len(frame):
        return None
    if any(pd.api.types.is_string_dtype(x) and x.str.len().max() > FIELD_LIMIT for _, x in frame.items()):
        return None  # a quoted field across lines, longer than the csv module takes
    columns = list(frame.columns)
    values = {name: frame[columns[p]].to_numpy(dtype=np.float64, copy=True) for name, p in pos.items()}
    if any(not np.isfinite(x).all() or (x < 0).any() for x in values.values()):
        return None
    raw = frame[columns[time_pos]]
    if raw.dtype.kind in "if":
        numbers = raw.to_numpy()
        if (np.abs(numbers.astype(np.float64)) < EPOCH_MIN).any():
            return None  # small numbers are tried as dates: the careful reader's job
        t, ok = epoch_ns(numbers)
    elif pd.api.types.is_string_dtype(raw.dtype):  # object, or pandas' own string dtype
        # no number has a ":", so a column of times of day is all text (to_numeric on it took long)
        maybe_epoch = not raw.str.contains(":", regex=False).all()
        text = pd.Series(list(map(str.strip, raw.to_numpy(dtype=object))), dtype=object)
        t, ok = parse_times(text, maybe_epoch)
    else:
        return None
    if not ok.all() or (t[1:] < t[:-1]).any():
        return None
    if sym_pos is None:
        symbols = np.full(len(t), default_symbol, dtype=object)
    else:
        symbols = np.fromiter(map(str.strip, frame[columns[sym_pos]]), dtype=object, count=len(t))
        if (symbols == "").any():
            return None
    problems = AnyProblem(table)
    checked = checked_bars(Bars(time_pos, pos, t, values, problems), symbols)
    return None if problems.found else checked
