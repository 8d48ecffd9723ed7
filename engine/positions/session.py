"""The previous session's close, per feed: what a position's day P&L is measured from.

A "session" is defined per feed (:func:`session_start`):

- **binance, coinbase** (crypto trades around the clock): the UTC day. The session starts at 00:00 UTC;
  the previous close is the last price before it. (Both services' own 24-hour "change" figures are
  rolling windows, not this.)
- **yahoo**: the exchange's regular session, from the chart answer's ``meta.tradingPeriods`` (the same
  periods ``engine.backfill.yahoo`` reads). The current session is the latest one that has started:
  after the close and over a weekend, that is still the last session, so the day P&L is that session's
  move, as Yahoo's own pages show it. Where Yahoo reports the previous close itself
  (``regularMarketPreviousClose`` in a quote, ``chartPreviousClose`` in a one-day chart's ``meta``),
  that figure wins (``reported`` in :func:`previous_closes`).
- **sim, replay**: the UTC day of the feed's own clock (``Feed.now_ns``): wall time for the sim, the
  file's time for a replay, so a replay of last March has last March's sessions.
- anything else (``attach`` before the publisher's feed is known): no session, so no day P&L.

Each snapshot quote carries its previous close (``Quote.previous_close``): :class:`SessionCloses` finds
it in the engine's history ring for the feed's session, and the Yahoo feed's
``regularMarketPreviousClose`` (``engine/feeds/yahoo_answer.py``) wins where reported. Where the ring
does not reach back to the previous session (fine intervals, a restart), a held symbol's close comes
from the bar store or the service's daily bar (:mod:`engine.positions.daily`). Not done: the Yahoo feed
does not read ``tradingPeriods`` (only the backfill does, and keeps only bars), so Yahoo's day P&L rests
on the close it reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engine.positions.daily import DailyCloses

DAY_NS = 86_400 * 1_000_000_000
UTC_DAY_FEEDS = frozenset({"binance", "coinbase", "sim", "replay"})
SESSION_FEEDS = frozenset({"yahoo"})
NO_SESSION = np.iinfo(np.int64).min
"""A session start that is not known: :func:`previous_closes` gives NaN for its rows."""


def session_start(feed: str, now_ns: int, sessions: Sequence[tuple[int, int]] = ()) -> int:
    """When the session ``now_ns`` belongs to started (ns), for ``feed``; :data:`NO_SESSION` if unknown.

    ``now_ns`` is the feed's clock (``Feed.now_ns()``). ``sessions`` are Yahoo's regular sessions as
    ``(start, end)`` in seconds (``tradingPeriods``), in any order; other feeds ignore them.
    """
    if feed in UTC_DAY_FEEDS:
        return (now_ns // DAY_NS) * DAY_NS
    if feed in SESSION_FEEDS:
        started = [start * 1_000_000_000 for start, _ in sessions if start * 1_000_000_000 <= now_ns]
        return max(started) if started else int(NO_SESSION)
    return int(NO_SESSION)


def previous_closes(start_ns: np.ndarray | int, times: np.ndarray, closes: np.ndarray,
                    reported: np.ndarray | None = None) -> np.ndarray:
    """Per row, the close the day P&L is measured from: ``reported`` where it is a number, else the
    close of the last bar that opened before the row's session start, else NaN.

    ``times`` (int64 ns, bar open times) and ``closes`` are ``(rows, k)``, oldest first, the rows'
    closed bars (NaN closes mark empty places, as the snapshot's gather leaves them); ``start_ns`` is
    one start for all rows or one per row (Yahoo's exchanges differ). "Opened before the start" picks the
    bar that held the previous session's last trade when the interval divides the session's day (1m
    ... 1d), and is immune to a 23- or 25-hour day at a daylight-saving change.
    """
    times = np.asarray(times, dtype=np.int64)
    closes = np.asarray(closes, dtype=np.float64)
    rows = times.shape[0]
    start = np.broadcast_to(np.asarray(start_ns, dtype=np.int64), (rows,))
    before = (times < start[:, None]) & np.isfinite(closes) & (start[:, None] != NO_SESSION)
    k = times.shape[1] if times.ndim == 2 else 0
    if k:
        last = k - 1 - np.argmax(before[:, ::-1], axis=1)
        out = np.where(before.any(axis=1), closes[np.arange(rows), last], np.nan)
    else:
        out = np.full(rows, np.nan)
    if reported is not None:
        reported = np.asarray(reported, dtype=np.float64)
        out = np.where(np.isfinite(reported) & (reported > 0), reported, out)
    return out


class SessionCloses:
    """The previous session's close per engine slot, read from the history ring for the snapshot.

    The runtime keeps one per feed and :func:`engine.snapshot.build_snapshot` asks it every frame. A
    slot's close is searched for (one vectorised pass over its ring) only when the session start moves
    on, or while it has none and its oldest bar is older than the session start (history that arrived
    since): a ring whose bars all belong to this session can hold no previous close, so a missing one
    costs no search per frame. ``reported``: the feed's own figures by symbol (Yahoo's
    ``regularMarketPreviousClose``), which win where present. ``daily``: the closes looked up beyond the
    ring (:class:`~engine.positions.daily.DailyCloses`), for the rows the ring has none for; the held ones
    still without one are reported back to it (a pass over those rows only). Memory: three arrays of the
    engine's slot capacity.
    """

    def __init__(self, feed: str, reported: Mapping[str, float] | None = None) -> None:
        self.feed = feed
        self.reported = reported
        self.daily: DailyCloses | None = None
        self._beyond: tuple[tuple[Any, ...], np.ndarray] | None = None  # rows' looked-up closes, and for what
        self._start = np.zeros(0, dtype=np.int64)
        self._close = np.zeros(0)
        self.searched = 0
        """Slots searched so far (each search is a pass over one ring)."""

    def closes(self, history: Any, slots: np.ndarray, names: Sequence[str], now_ns: int) -> np.ndarray:
        """Previous closes of ``slots`` (named ``names``) at ``now_ns`` (the feed's clock); NaN: unknown.

        ``history`` is the engine's ``History`` (``t``, ``bars``, ``head``, ``count``, ``depth``); call
        from the engine's thread, as the snapshot is built.
        """
        capacity = history.t.shape[0]
        if self._start.shape[0] != capacity:
            self._start = np.full(capacity, NO_SESSION, dtype=np.int64)
            self._close = np.full(capacity, np.nan)
        start = session_start(self.feed, now_ns)
        if start != NO_SESSION and len(slots):
            depth, head, count = history.depth, history.head[slots], history.count[slots]
            oldest = history.t[slots, (head - count) % depth]
            missing = np.isnan(self._close[slots]) & (count > 0) & (oldest < start)
            due = (self._start[slots] != start) | missing
            if due.any():
                todo = slots[due]
                self._close[todo] = _search(history, todo, start)
                self._start[todo] = start
                self.searched += len(todo)
        out = np.where(self._start[slots] == start, self._close[slots], np.nan) if start != NO_SESSION \
            else np.full(len(slots), np.nan)
        daily = self.daily
        if daily is not None and start != NO_SESSION:
            out = self._beyond_ring(daily, out, names, start)
        reported = self.reported
        if reported:
            for i, name in enumerate(names):
                value = reported.get(name)
                if value is not None:
                    out[i] = value
        return out

    def _beyond_ring(self, daily: DailyCloses, out: np.ndarray, names: Sequence[str],
                     start: int) -> np.ndarray:
        """``out`` with the looked-up closes where the ring has none. The rows' closes are gathered (a loop
        over the rows without one) only when the session, the closes known, the held symbols or the rows
        change; other frames cost one ``np.where``."""
        key = (start, daily.known, daily.held, tuple(names))
        cached = self._beyond
        if cached is None or key[0] != cached[0][0] or key[1] is not cached[0][1] \
                or key[2] is not cached[0][2] or key[3] != cached[0][3]:
            rows, missing = np.full(len(names), np.nan), []
            for i in np.flatnonzero(np.isnan(out)).tolist():
                name = names[i]
                if name in daily.held:
                    close = daily.close(name, start)
                    if close is None:
                        missing.append(name)
                    else:
                        rows[i] = close
            daily.report_missing(start, tuple(missing))
            cached = self._beyond = (key, rows)
        return np.where(np.isnan(out), cached[1], out)


def _search(history: Any, slots: np.ndarray, start: int) -> np.ndarray:
    """Per slot, the close of the latest stored bar that opened before ``start`` (NaN if none)."""
    depth = history.depth
    t = history.t[slots]
    age = (history.head[slots, None] - 1 - np.arange(depth)[None, :]) % depth  # 0: the newest bar
    before = (age < history.count[slots, None]) & (t < start)
    j = np.where(before, t, np.iinfo(np.int64).min).argmax(axis=1)
    closes = history.bars[slots, j, 3]
    return np.where(before.any(axis=1), closes, np.nan)
