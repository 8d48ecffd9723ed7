"""What Yahoo's quote endpoint answers, how much of it is read, what the feed hands out and counts.

An answer is ``{"quoteResponse": {"result": [...], "error": ...}}``; each entry of ``result`` is decoded
on its own, so one bad entry costs only that quote. Every problem is counted (``bad``, a
``FeedCounters.bad_message``) under a reason a user can read; the feed (``engine.feeds.yahoo``) turns the
good quotes into ticks.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from engine.feeds.base import FeedCounters, valid_utf8
from engine.feeds.pacing import RequestBudget, TokenBucket

# Bodies are read up to a cap, counted after decompression. A quote is ~2.3 kB of JSON (a real record of
# ~80 fields, in tests/servers/yahoo.py): 114 kB for a batch of 50, 2.3 MB for the largest (1,000). The
# cap allows 16 kB a symbol, 7 times that, for longer names and the fields some quote types add.
MAX_BODY_BYTES = 64 * 1024  # a crumb, an error page
MAX_QUOTE_BYTES = 16 * 1024  # per symbol requested, on top of MAX_BODY_BYTES

Bad = Callable[[str, object], None]


class YahooQuote(msgspec.Struct, rename="camel"):
    """The fields a tick needs of the ~80 in a ``quoteResponse.result`` entry. Price and time are
    required but nullable, so that a missing field and an unusable value are told apart."""

    symbol: str
    regular_market_price: float | None
    regular_market_time: int | float | None
    regular_market_volume: float | None = None
    currency: str | None = None
    price_hint: Any = None  # the decimals Yahoo shows the price with; checked by hint_decimals, so an
    # odd value costs the hint, not the quote
    regular_market_previous_close: Any = None  # the last session's close, as yfinance reads it
    # (``regularMarketPreviousClose``); checked by previous_close, so an odd value costs only the day P&L


def previous_close(q: YahooQuote) -> float | None:
    """The previous session's close Yahoo reports for ``q``, or None when it is absent or unusable."""
    value = q.regular_market_previous_close
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 < value < math.inf else None


class _QuoteResponse(msgspec.Struct):
    result: Any = None  # checked by hand: each entry is validated on its own, so one bad entry costs one
    error: Any = None


class _Envelope(msgspec.Struct, rename="camel"):
    quote_response: _QuoteResponse


def error_text(body: bytes) -> str:
    """Yahoo's own explanation in an error body (``{"finance": {"error": {...}}}``), if any."""
    try:
        doc: Any = json.loads(body)
        err: Any = next(v["error"] for v in doc.values() if isinstance(v, dict) and v.get("error"))
        return f": {err.get('code')}: {err.get('description')}"[:160]
    except (ValueError, AttributeError, StopIteration, RecursionError):
        return ""


def read_quotes(body: bytes, batch: list[str], bad: Bad) -> tuple[str, list[tuple[str, YahooQuote]]]:
    """The quotes of ``batch`` (by the name asked for) in one answer, and '' when it was usable, else
    why not (counted already, as is every entry left out)."""
    if not valid_utf8(body):
        bad("malformed json", body)
        return "malformed json", []
    try:
        envelope = msgspec.json.decode(body, type=_Envelope)
    except msgspec.ValidationError:
        bad("unexpected shape", body)
        return "unexpected shape", []
    # RecursionError: nested too deeply; UnicodeDecodeError: a string in the body is not UTF-8
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        try:  # NaN and Infinity are not JSON, but some producers send them; only that quote is lost
            envelope = msgspec.convert(json.loads(body), _Envelope)
        except (ValueError, msgspec.ValidationError, RecursionError):
            bad("malformed json", body)
            return "malformed json", []
    answer = envelope.quote_response
    if answer.error is not None:
        bad("error in answer", answer.error)
    if not isinstance(answer.result, list):
        if answer.error is not None:
            return "error" + error_text(body), []
        bad("result not a list", body)
        return "result not a list", []
    by_name = {s.upper(): s for s in batch}
    seen: set[str] = set()
    quotes: list[tuple[str, YahooQuote]] = []
    for item in answer.result:
        try:
            q = msgspec.convert(item, YahooQuote)
        except msgspec.ValidationError as exc:
            bad("missing field" if "missing required field" in str(exc) else "bad field type", item)
            if isinstance(item, dict) and isinstance(item.get("symbol"), str):
                seen.add(by_name.get(item["symbol"].upper(), ""))  # present, if unusable
            continue
        name = by_name.get(q.symbol.upper())
        if name is None:
            bad("unknown symbol", item)
            continue
        seen.add(name)
        quotes.append((name, q))
    for name in batch:
        if name not in seen:
            bad("symbol not in result", name)
    return "", quotes


# --- what the feed hands out ---------------------------------------------------------------------
class Quote(msgspec.Struct, frozen=True):
    """The latest good quote of a symbol, as ``YahooFeed.quote`` hands it out."""

    symbol: str
    price: float
    time_ns: int  # regularMarketTime
    volume: float | None
    currency: str | None
    received_ns: int


_MAX_TIME_S = (2**63 - 1) // 1_000_000_000  # a later regularMarketTime does not fit a tick's int64 ns


def quote_of(name: str, q: YahooQuote, recv_ns: int, bad: Bad) -> Quote | None:
    """The quote an answer's entry gives ``name``, or None when its price, time or volume cannot be
    used (counted by ``bad``)."""
    price, t, volume = q.regular_market_price, q.regular_market_time, q.regular_market_volume
    if price is None or not 0.0 < price < math.inf:
        bad("bad price", q)
        return None
    if t is None or not 0 < t < _MAX_TIME_S:
        bad("bad time", q)
        return None
    if volume is not None and not 0.0 <= volume < math.inf:
        bad("bad volume", q)
        return None
    ts = t * 1_000_000_000 if isinstance(t, int) else round(t * 1e9)
    return Quote(name, price, ts, volume, q.currency, recv_ns)


class YahooCounters(FeedCounters):
    """The base counters plus what polling costs and saves."""

    def __init__(self, feed: str, budget: RequestBudget, limiter: TokenBucket) -> None:
        super().__init__(feed)
        self.budget = budget
        self.limiter = limiter
        self.requests = 0  # sent, handshakes included (each one spends budget, whatever its outcome)
        self.handshakes = 0  # cookie-and-crumb fetches begun (the first, then one per refused crumb)
        self.http_errors: Counter[int] = Counter()  # by status
        self.timeouts = 0
        self.connection_errors = 0
        self.cache_hits = 0  # quote() calls answered from the cache
        self.fresh_skips = 0  # symbols a poll left out because their cached quote was fresh
        self.unchanged = 0  # quotes with the same time and price as the last tick
        self.stream: FeedCounters | None = None  # the streamer's, when there is one

    def as_dict(self) -> dict[str, object]:
        out = super().as_dict()
        out.update(requests=self.requests, handshakes=self.handshakes, http_errors=dict(self.http_errors),
                   timeouts=self.timeouts, connection_errors=self.connection_errors,
                   cache_hits=self.cache_hits, fresh_skips=self.fresh_skips, unchanged=self.unchanged,
                   rate_waits=self.limiter.waits,
                   budget_left=self.budget.left, budget_limit=self.budget.limit)
        if self.stream is not None:
            out["stream"] = self.stream.as_dict()
        return out
