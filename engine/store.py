"""The bar store: closed bars per feed, symbol and interval, kept on disk so a restart starts warm.

One SQLite database (``bars.sqlite3``) under the store's directory: ``history.store = "auto"`` puts it
in ``$TICKDECK_DATA_DIR``, or else the platform's user data directory (``platformdirs``); a directory
puts it there; ``""`` keeps nothing. SQLite (the standard library's) was chosen over Parquet files and
DuckDB on figures measured with ``tickdeck bench --store`` (see the README's "History" section): the
cheapest append and load, an upsert by primary key, and crash safety that needs no code of ours.

Crash safety: every write is one transaction in WAL mode. A process killed in the middle of a write
(kill -9, a power cut) leaves the transactions that committed and none of the one in flight: SQLite
rolls it back when the database is next opened. ``synchronous = NORMAL`` keeps every committed
transaction through a crash of the process; after a power cut the last ones may be gone (never a
corrupt file), and the REST history refetches them at the next start.

Bounds: bars older than ``retention_ns`` are deleted when the store opens and by ``prune`` (the
writer calls it every ``PRUNE_EVERY_S``); when the bars take more than ``max_bytes``, the oldest part
of every series is deleted until they take at most ``CAP_TARGET`` of it. Reads borrow one of at most
``READERS`` connections; the WAL file is truncated to ``WAL_LIMIT`` bytes after a checkpoint.

Thread safety: one writer connection under a lock; readers use their own connections, which WAL lets
read while the writer writes. Several processes (the console and a headless service) may share a
store: SQLite locks the file, and a writer waits up to ``BUSY_TIMEOUT_MS`` for another.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import platformdirs

from engine.ticks import BAR_DTYPE

if TYPE_CHECKING:
    from engine.config import Config

__all__ = ["DATA_DIR_VAR", "PERSISTED_FEEDS", "BarStore", "SeriesInfo", "StoreError", "open_store",
           "store_root"]

DATA_DIR_VAR = "TICKDECK_DATA_DIR"
FILENAME = "bars.sqlite3"
SCHEMA_VERSION = 1
PERSISTED_FEEDS = ("binance", "coinbase", "yahoo")
"""Feeds whose bars are kept: the live markets. The sim draws a new market from its seed at every start
(its bars are no one's history), and a replay's bars are its file's, already on disk."""
READERS = 4
"""Read connections open at once; a fifth reader waits (up to ``BUSY_TIMEOUT_MS``) for one."""
BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's write to end, and a read for a free connection."""
PRUNE_EVERY_S = 600.0
"""How often the writer applies the retention and the size cap while it runs."""
CAP_TARGET = 0.9
"""Pruning for size leaves the bars this share of ``max_bytes``, so it does not run at every write."""
WAL_LIMIT = 16 * 2**20
"""Bytes the write-ahead log is truncated to after a checkpoint (SQLite checkpoints every 4 MB)."""

_COLUMNS = ("t", "open", "high", "low", "close", "volume", "trades")
_ROW_DTYPE = np.dtype([(name, BAR_DTYPE[name]) for name in _COLUMNS])
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    feed TEXT NOT NULL,
    symbol TEXT NOT NULL,
    interval_ns INTEGER NOT NULL,
    UNIQUE (feed, symbol, interval_ns)
);
CREATE TABLE IF NOT EXISTS bars (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL, trades INTEGER NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """The store cannot be opened or used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What is stored for one feed, symbol and interval."""

    feed: str
    symbol: str
    interval_ns: int
    bars: int
    first_ns: int
    last_ns: int
    bytes: int  # the series' share of the bars' pages (bytes per bar of the whole table x its bars)


def store_root(setting: str, env: Mapping[str, str] = os.environ) -> Path | None:
    """The store's directory for ``history.store``: None when it is ``""`` (off); for ``"auto"``,
    ``$TICKDECK_DATA_DIR`` or the platform's user data directory."""
    if not setting.strip():
        return None
    if setting.strip() == "auto":
        return Path(env.get(DATA_DIR_VAR) or platformdirs.user_data_dir("tickdeck"))
    return Path(setting).expanduser()


def open_store(config: Config) -> BarStore | None:
    """The store ``config`` asks for (None when ``history.store`` is ``""``); StoreError when it cannot
    be opened. Opening applies the retention, so call it off the event loop."""
    from engine.config import parse_duration

    root = store_root(config.history.store)
    if root is None:
        return None
    return BarStore(root, parse_duration(config.history.retention),
                    max_bytes=config.history.store_max_mb * 2**20)


class BarStore:
    """Closed bars on disk (see the module docstring). Every method may be called from any thread."""

    def __init__(self, root: Path, retention_ns: int, *, max_bytes: int = 1024 * 2**20,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.root = Path(root)
        self.path = self.root / FILENAME
        self.retention_ns = int(retention_ns)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self._write_lock = threading.Lock()
        self._pool = threading.Condition()
        self._idle: list[sqlite3.Connection] = []
        self._readers = 0  # open read connections, idle or lent
        self._closed = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the bar store's directory {self.root}: "
                             f"{exc.strerror or exc}") from None
        if self.path.is_dir():
            raise StoreError(f"cannot open the bar store {self.path}: it is a directory")
        self._writer = self._connect()
        with self._failing("open"):
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"the bar store {self.path} was written by a newer tickdeck (schema "
                                 f"{version}; this one reads {SCHEMA_VERSION})")
            self._writer.executescript(_SCHEMA)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.prune()

    # --- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        with self._failing("open"):
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot open the bar store {self.path}: its file system does not "
                                     f"allow SQLite's write-ahead log (journal mode {mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            except BaseException:
                conn.close()
                raise
        return conn

    @contextlib.contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        """SQLite's errors as one-line StoreErrors naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            detail = str(exc)
            if "not a database" in detail:
                detail = "the file is not a tickdeck bar store (not an SQLite database)"
            raise StoreError(f"cannot {doing} the bar store {self.path}: {detail}") from None
        except sqlite3.Error as exc:  # OperationalError for a locked or unreadable file, ...
            raise StoreError(f"cannot {doing} the bar store {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Lend a read connection (at most ``READERS`` open; wait for one when all are lent)."""
        with self._pool:
            self._check_open()
            if not self._idle and self._readers >= READERS and not self._pool.wait_for(
                    lambda: bool(self._idle) or self._closed, BUSY_TIMEOUT_MS / 1000):
                raise StoreError(f"cannot read the bar store {self.path}: all {READERS} read connections "
                                 f"stayed busy for {BUSY_TIMEOUT_MS / 1000:.0f} s")
            self._check_open()
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                self._readers += 1
        try:
            if conn is None:
                conn = self._connect()
        except BaseException:
            with self._pool:
                self._readers -= 1
                self._pool.notify()
            raise
        try:
            with self._failing("read"):
                yield conn
        finally:
            with self._pool:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
                    self._pool.notify()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The writer connection in one transaction: all of it commits, or none of it."""
        with self._write_lock:
            self._check_open()
            conn = self._writer
            with self._failing("write to"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the bar store {self.path} is closed")

    # --- the contract ------------------------------------------------------------------------------
    def load(self, feed: str, symbol: str, interval_ns: int, since_ns: int) -> np.ndarray:
        """Closed bars (``BAR_DTYPE``, ``sym`` -1) with open time >= ``since_ns``, oldest first."""
        with self._reading() as conn:
            cursor = conn.execute(
                "SELECT b.t, b.open, b.high, b.low, b.close, b.volume, b.trades FROM bars b "
                "JOIN series s ON b.series = s.id WHERE s.feed = ? AND s.symbol = ? AND s.interval_ns = ? "
                "AND b.t >= ? ORDER BY b.t", (feed, symbol, int(interval_ns), int(since_ns)))
            rows = np.fromiter(cursor, dtype=_ROW_DTYPE)
        out = np.empty(len(rows), dtype=BAR_DTYPE)
        out["sym"] = -1
        for name in _COLUMNS:
            out[name] = rows[name]
        return out

    def load_before(self, feed: str, symbol: str, interval_ns: int, before_ns: int, limit: int) -> np.ndarray:
        """The newest ``limit`` closed bars with open time < ``before_ns`` (``BAR_DTYPE``, ``sym`` -1),
        oldest first: what the chart and the backtest read beyond the engine's in-memory ring."""
        with self._reading() as conn:
            cursor = conn.execute(
                "SELECT b.t, b.open, b.high, b.low, b.close, b.volume, b.trades FROM bars b "
                "JOIN series s ON b.series = s.id WHERE s.feed = ? AND s.symbol = ? AND s.interval_ns = ? "
                "AND b.t < ? ORDER BY b.t DESC LIMIT ?",
                (feed, symbol, int(interval_ns), int(before_ns), max(0, int(limit))))
            rows = np.fromiter(cursor, dtype=_ROW_DTYPE)[::-1]
        out = np.empty(len(rows), dtype=BAR_DTYPE)
        out["sym"] = -1
        for name in _COLUMNS:
            out[name] = rows[name]
        return out

    def last_time(self, feed: str, symbol: str, interval_ns: int) -> int | None:
        """The newest stored open time, or None when nothing is stored for the series."""
        with self._reading() as conn:
            row = conn.execute("SELECT max(b.t) FROM bars b JOIN series s ON b.series = s.id WHERE "
                               "s.feed = ? AND s.symbol = ? AND s.interval_ns = ?",
                               (feed, symbol, int(interval_ns))).fetchone()
        return None if row[0] is None else int(row[0])

    def append(self, feed: str, symbol: str, interval_ns: int, bars: np.ndarray) -> None:
        """Store ``bars`` (``BAR_DTYPE``), replacing any stored bar with the same open time (a bar
        fetched again, a refilled one, corrects the old one); later duplicates in ``bars`` win."""
        self.append_many([(feed, symbol, interval_ns, bars)])

    def append_many(self, series: Iterable[tuple[str, str, int, np.ndarray]]) -> int:
        """``append`` for several series in one transaction (the writer's flush); bars written."""
        written = 0
        with self._writing() as conn:
            for feed, symbol, interval_ns, bars in series:
                if not len(bars):
                    continue
                sid = self._series_id(conn, feed, symbol, int(interval_ns))
                rows = bars[list(_COLUMNS)].tolist()
                conn.executemany(f"INSERT OR REPLACE INTO bars VALUES ({sid}, ?, ?, ?, ?, ?, ?, ?)", rows)
                written += len(rows)
        return written

    def close(self) -> None:
        """Close every connection; later calls raise StoreError. Lent read connections close when
        their reader is done."""
        with self._write_lock, self._pool:
            if self._closed:
                return
            self._closed = True
            for conn in self._idle:
                conn.close()
            self._idle.clear()
            self._pool.notify_all()
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()

    def __enter__(self) -> BarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _series_id(conn: sqlite3.Connection, feed: str, symbol: str, interval_ns: int) -> int:
        conn.execute("INSERT OR IGNORE INTO series (feed, symbol, interval_ns) VALUES (?, ?, ?)",
                     (feed, symbol, interval_ns))
        row = conn.execute("SELECT id FROM series WHERE feed = ? AND symbol = ? AND interval_ns = ?",
                           (feed, symbol, interval_ns)).fetchone()
        return int(row[0])

    # --- what is stored, and pruning -----------------------------------------------------------------
    def series(self) -> list[SeriesInfo]:
        """Every stored series, by feed, symbol and interval."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT s.feed, s.symbol, s.interval_ns, count(*), min(b.t), max(b.t) FROM series s "
                "JOIN bars b ON b.series = s.id GROUP BY s.id ORDER BY s.feed, s.symbol, s.interval_ns"
            ).fetchall()
            used = self._used_bytes(conn)
        total = sum(r[3] for r in rows)
        per_bar = used / total if total else 0.0
        return [SeriesInfo(f, s, int(i), int(n), int(a), int(b), round(n * per_bar))
                for f, s, i, n, a, b in rows]

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (free pages, which later writes reuse, left out)."""
        with self._reading() as conn:
            return self._used_bytes(conn)

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def prune(self) -> int:
        """Apply the retention and the size cap; bars deleted."""
        deleted = self.delete(older_than_ns=self.retention_ns)
        used = self.used_bytes()
        if used > self.max_bytes:
            deleted += self._shrink(1.0 - CAP_TARGET * self.max_bytes / used)
        return deleted

    def delete(self, *, older_than_ns: int | None = None, feed: str | None = None,
               symbol: str | None = None) -> int:
        """Delete the bars that opened more than ``older_than_ns`` ago (all of them when None) of the
        series that match ``feed`` and ``symbol`` (every one when None); bars deleted. Series left
        without bars are forgotten."""
        cutoff = None if older_than_ns is None else self.clock() - int(older_than_ns)
        deleted = 0
        with self._writing() as conn:
            for sid in self._matching(conn, feed, symbol):
                if cutoff is None:
                    cursor = conn.execute("DELETE FROM bars WHERE series = ?", (sid,))
                else:  # by series: the primary key's range, never a scan of the whole table
                    cursor = conn.execute("DELETE FROM bars WHERE series = ? AND t < ?", (sid, cutoff))
                deleted += cursor.rowcount
            conn.execute("DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM bars WHERE bars.series = "
                         "series.id)")
        return deleted

    @staticmethod
    def _matching(conn: sqlite3.Connection, feed: str | None, symbol: str | None) -> list[int]:
        rows = conn.execute("SELECT id FROM series WHERE (?1 IS NULL OR feed = ?1) AND "
                            "(?2 IS NULL OR symbol = ?2)", (feed, symbol)).fetchall()
        return [int(r[0]) for r in rows]

    def _shrink(self, share: float) -> int:
        """Delete the oldest ``share`` of every series' bars."""
        deleted = 0
        with self._writing() as conn:
            for sid in self._matching(conn, None, None):
                count = conn.execute("SELECT count(*) FROM bars WHERE series = ?", (sid,)).fetchone()[0]
                drop = min(int(np.ceil(count * share)), count)
                if drop:
                    cursor = conn.execute(
                        "DELETE FROM bars WHERE series = ?1 AND t IN (SELECT t FROM bars WHERE series = ?1 "
                        "ORDER BY t LIMIT ?2)", (sid, drop))
                    deleted += cursor.rowcount
        return deleted
