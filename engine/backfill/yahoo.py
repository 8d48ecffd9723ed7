"""Yahoo Finance history: bars from the chart endpoint, asked through the Yahoo feed's own session.

Yahoo does not document the endpoint; yfinance's source is the reference (yfinance/scrapers/history.py
``PriceHistory.history``, yfinance/utils.py ``parse_quotes`` and ``fix_Yahoo_returning_prepost_unrequested``;
read 2026-08):

* ``GET {feeds.yahoo.chart_url}/v8/finance/chart/{symbol}?period1&period2&interval&includePrePost``:
  ``period1``/``period2`` in UNIX seconds. Asked with ``includePrePost=false``: the live side (the quote's
  ``regularMarketPrice``) is the regular session's, and so must its bars be; Yahoo still sends rows outside
  it at times (half-day closes, some London tickers, yfinance notes), which are dropped against the
  answer's ``meta.tradingPeriods`` as yfinance does. ``formatted=false`` as the quotes are asked.
* The answer: ``{"chart": {"result": [{"meta": {...}, "timestamp": [...], "indicators": {"quote": [{"open",
  "high", "low", "close", "volume"}]}}], "error": null}}``; an interval nothing traded in is a row of
  nulls (skipped, as the engine makes no bar there); ``timestamp`` is absent when the range holds no bar.
  The last row may be the latest price at a time after ``period2`` ("Yahoo bug fix - it often appends
  latest price even if after end date", history.py): it is dropped. ``meta`` gives the exchange's time
  zone, regular trading periods and ``priceHint`` (the decimals Yahoo shows the price with, which
  becomes the symbol's precision in the console).
* An error: ``{"chart": {"result": null, "error": {"code", "description"}}}``, e.g. 404 "No data found,
  symbol may be delisted", or 422 for a range Yahoo does not serve.
* Range limits (yfinance's: ``period="max"`` asks 1m for 8 days, 2m-90m for 60 days, 1h for 730;
  ``_reconstruct_intervals_batch``'s ``min_lookbacks``: 1m within 30 days, 2m-30m within 60; Yahoo's own
  words, quoted in yfinance issues 356, 383 and 1389: "Only 7 days worth of 1m granularity data are
  allowed to be fetched per request", "The requested range must be within the last 30 days" (1m) / "60
  days" (5m)): 1m is asked at most 7 days a request and no further back than 30 days; 2m, 5m and 15m no
  further back than 60 days. 30m is not used (Yahoo answers it with 60m bars, history.py "fix weird bug
  with Yahoo! - returning 60m for 30m bars"), nor 60m and 90m (their bars start at the session's open,
  9:30 in New York, off the engine's UTC hour grid): an engine interval of 30 minutes or more within a day
  is built from 15m bars; a day from 1d bars, whose row time (the session's open) is taken as its UTC day.

Requests go through the feed (``YahooFeed.fetch``): its curl_cffi session with Chrome's TLS
fingerprint, its cookie and crumb, its limiter and hourly budget, its hold-off after a 429. Yahoo has no
trade ids: the seam is by time (``engine.backfill.loader``).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import numpy as np

from engine.backfill.fetch import not_json
from engine.backfill.source import TRADE_DTYPE, HistorySource, HistoryUnavailable, whole_bar
from engine.feeds.base import FeedCounters
from engine.feeds.yahoo_http import Answer
from engine.precision import hint_decimals
from engine.ticks import make_bars

NS = 1_000_000_000
DAY = 86_400
INTERVALS = {60: "1m", 120: "2m", 300: "5m", 900: "15m", DAY: "1d"}
"""The chart intervals used, by their length in seconds (see the module docstring for those left out)."""
MAX_AGE_S = {60: 30 * DAY, 120: 60 * DAY, 300: 60 * DAY, 900: 60 * DAY}
"""How far back Yahoo serves each intraday interval."""
PER_REQUEST_S = {60: 7 * DAY}
"""The longest span one request may ask (the others: as far back as they go)."""
AGE_MARGIN_S = 3600  # asked no closer to a range limit than this (clocks differ)
BODY_CAP = 8 << 20  # bytes; 7 days of 1m bars around the clock are about 0.8 MB
CHART_PATH = "/v8/finance/chart/"
_MAX_S = (2**63 - 1) // NS  # a later time does not fit a bar's int64 ns

Fetch = Callable[[str, dict[str, str], int], Awaitable[Answer | str]]
"""The feed's request: url, params, body cap -> the answer, or why there is none."""


class YahooHistory(HistorySource):
    service = "yahoo"
    max_bars = 7 * DAY // 60
    trade_ids = False

    def __init__(self, chart_url: str, fetch: Fetch, counters: FeedCounters, *,
                 clock: Callable[[], int] = time.time_ns, decimals: dict[str, int] | None = None) -> None:
        self.chart_url = chart_url.rstrip("/")
        self.host = urlsplit(self.chart_url).netloc or self.chart_url
        self.fetch = fetch
        self.counters = counters
        self.clock = clock
        self.requests = 0
        self.timezones: dict[str, str] = {}  # symbol -> its exchange's time zone (the answers' meta)
        self.decimals = decimals if decimals is not None else {}  # symbol -> meta.priceHint (the feed's)

    def bar_interval(self, interval_ns: int) -> int:
        fits = [s for s in INTERVALS if interval_ns % (s * NS) == 0]
        if not fits:
            raise HistoryUnavailable(f"Yahoo has no chart interval that divides {interval_ns / NS:g} s",
                                     final=True)
        return max(fits) * NS

    def span_ns(self, bars: int, interval_ns: int) -> int:
        """Markets with sessions: a 6.5-hour regular session five days a week (New York's; longer
        sessions need less) makes ``bars`` intraday bars span 5.2 times their length, plus 4 days for a
        weekend and a holiday; daily bars 7/5 of their days plus 10. Never past the interval's limit."""
        step = self.bar_interval(interval_ns) // NS
        length = bars * interval_ns
        span = length * 7 // 5 + 10 * DAY * NS if step >= DAY else length * 168 // 32 + 4 * DAY * NS
        if (age := MAX_AGE_S.get(step)) is not None:
            span = min(span, (age - AGE_MARGIN_S) * NS)
        return -(-span // interval_ns) * interval_ns

    async def bars(self, symbol: str, start_ns: int, end_ns: int, interval_ns: int, *,
                   older: bool = False) -> np.ndarray:
        step = self.bar_interval(interval_ns) // NS
        start, end = -(-start_ns // NS), -(-end_ns // NS)
        if (age := MAX_AGE_S.get(step)) is not None:
            start = max(start, self.clock() // NS - age + AGE_MARGIN_S)
        width = PER_REQUEST_S.get(step, end - start)
        pages: list[np.ndarray] = []
        newest = -1
        for lo in range(start, end, max(width, 1)):
            hi = min(lo + width, end)
            params = {"period1": str(lo), "period2": str(hi), "interval": INTERVALS[step],
                      "includePrePost": "false", "formatted": "false"}
            decoded = await self._get(symbol, params)
            bars, newest = self.chart_bars(decoded, symbol, lo, hi, step, newest)
            if len(bars):
                pages.append(bars)
        if not pages:
            if not older:
                self.counters.bad_answer("empty range", f"{symbol} chart {start}..{end} s: no bars")
            return make_bars(0)
        return np.concatenate(pages)

    async def trades(self, symbol: str, *, start_ns: int | None = None, after: int | None = None,
                     until_id: int | None = None) -> np.ndarray:
        return np.zeros(0, dtype=TRADE_DTYPE)  # quotes, not trades: the seam is by time

    async def last_trade_before(self, symbol: str, end_ns: int) -> np.ndarray:
        return np.zeros(0, dtype=TRADE_DTYPE)

    # --- requests ------------------------------------------------------------------------------
    async def _get(self, symbol: str, params: dict[str, str]) -> Any:
        """The decoded chart answer (a dict with its ``chart``), asked again once after a bad answer."""
        url = self.chart_url + CHART_PATH + quote(symbol, safe="")
        why = ""
        for _ in range(2):
            self.requests += 1
            answer = await self.fetch(url, params, BODY_CAP)
            if isinstance(answer, str):  # no answer (reported by the feed's session), or held off
                raise HistoryUnavailable(answer)
            status, body = answer.status, answer.body
            if body is None:
                why = f"an answer from {self.host} over {BODY_CAP >> 20} MiB"
                self.counters.bad_answer("answer too large", why)
                continue
            if status == 429 or status >= 500:
                self.counters.bad_answer(f"HTTP {status}", body)
                raise HistoryUnavailable(f"HTTP {status} from {self.host}")
            try:
                decoded = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                why = not_json(body, self.host, self.counters)
                continue
            chart = decoded.get("chart") if isinstance(decoded, dict) else None
            error = chart.get("error") if isinstance(chart, dict) else None
            if error or status != 200:
                self.counters.bad_answer(f"HTTP {status}" if status != 200 else "error answer", body)
                raise HistoryUnavailable(f"{self.host} refused {symbol}: {_error(error)} (HTTP {status})",
                                         final=True)
            if not isinstance(chart, dict):
                why = f"an answer from {self.host} that is not a chart"
                self.counters.bad_answer("unexpected answer", body)
                continue
            return chart
        raise HistoryUnavailable(f"no usable answer from {self.host}: {why}")

    # --- the answer, row by row ----------------------------------------------------------------
    def chart_bars(self, chart: Any, symbol: str, start: int, end: int, step: int,
                   newest: int) -> tuple[np.ndarray, int]:
        """The bars of a ``chart`` object (``{"result": [...]}``) opening in ``[start, end)`` (s), on the
        ``step`` grid (a day's row: its UTC day), after ``newest``, in the regular session, ascending; and
        the newest open had (``newest`` when none)."""
        bad = self.counters.bad_answer
        try:
            result = chart["result"][0]
            meta = result.get("meta") or {}
            times = result.get("timestamp") or []
            quote = result["indicators"]["quote"][0] if times else {}
            columns: list[list[Any]] = []
            for key in ("open", "high", "low", "close", "volume") if times else ():
                column = quote.get(key)
                if not isinstance(column, list) or len(column) != len(times):
                    raise TypeError(f"{key} does not match the timestamps")
                columns.append(column)
            if not isinstance(meta, dict) or not isinstance(times, list):
                raise TypeError("not a chart result")
        except (TypeError, KeyError, IndexError, AttributeError):
            bad("unexpected answer", str(chart)[:200])
            return make_bars(0), newest
        if isinstance(zone := meta.get("exchangeTimezoneName"), str):
            self.timezones[symbol] = zone[:64]
        if (decimals := hint_decimals(meta.get("priceHint"))) is not None:
            self.decimals[symbol] = decimals
        sessions = _sessions(meta.get("tradingPeriods")) if step < DAY else []
        good: list[tuple[int, float, float, float, float, float]] = []
        for i, t in enumerate(times):
            row = [c[i] for c in columns]
            if all(v is None for v in row[:4]):
                continue  # nothing traded in that interval
            if type(t) is not int or not 0 <= t < _MAX_S or not all(_number(v) for v in row[:4]) or not (
                    row[4] is None or _number(row[4])):
                bad("bad row", [t, *row])
                continue
            o, h, lo, c = (float(v) for v in row[:4])
            v = float(row[4] or 0)
            if step >= DAY:
                t -= t % DAY
            if t >= end:
                continue  # the latest price, appended after the range (see the module docstring)
            if t < start or t % step:
                bad("bar outside the range" if t < start else "bar off the grid", [t, *row])
            elif sessions and not any(s - step < t < e for s, e in sessions):
                bad("bar outside trading hours", [t, *row])
            elif not whole_bar(o, h, lo, c, v):
                bad("bad bar", [t, *row])
            else:
                good.append((t, o, h, lo, c, v))
        if any(a[0] > b[0] for a, b in itertools.pairwise(good)):
            bad("out-of-order bars", [g[0] for g in good][:20])
            good.sort(key=lambda g: g[0])
        out = make_bars(len(good))
        n, last = 0, newest
        for t, o, h, lo, c, v in good:
            if t <= last:
                bad("overlapping bars", t)
                continue
            last = t
            out[n] = (-1, t * NS, o, h, lo, c, v, -1)
            n += 1
        return out[:n], last


def _number(value: object) -> bool:
    """A JSON number that is a finite float (not a bool, not a string, not an integer past floats)."""
    try:
        return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:
        return False


def _sessions(periods: object) -> list[tuple[int, int]]:
    """The regular sessions of ``meta.tradingPeriods`` (a list of days, each a list of ``{start, end}``;
    the dict form, with pre and post, has them under ``regular``), as (start, end) seconds."""
    if isinstance(periods, dict):
        periods = periods.get("regular")
    out: list[tuple[int, int]] = []
    if isinstance(periods, list):
        for day in periods:
            for p in day if isinstance(day, list) else [day]:
                if isinstance(p, dict) and type(p.get("start")) is int and type(p.get("end")) is int:
                    out.append((p["start"], p["end"]))
    return out


def _error(error: object) -> str:
    if isinstance(error, dict):
        return f"{error.get('description') or 'no description'} ({error.get('code') or '?'})"[:200]
    return "no description"
