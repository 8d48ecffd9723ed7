"""Binance spot market data: public trades (or klines) over one combined-stream WebSocket.

Protocol, as "WebSocket Streams for Binance" documents it: connect to ``/stream?streams=a/b/c`` (stream
names lower-case, ``<symbol>@trade`` or ``<symbol>@kline_<interval>``); every event arrives wrapped as
``{"stream": ..., "data": ...}``; the watchlist changes live with ``SUBSCRIBE`` / ``UNSUBSCRIBE``
requests that the server answers with ``{"result": null, "id": N}`` or ``{"error": {...}, "id": N}``.
The server pings every 20 s (``websockets`` answers with a pong carrying the same payload), allows 5
incoming messages per second (pings and pongs included), drops every connection after 24 h, announces a
shutdown with a ``serverShutdown`` event, and serves at most 1,024 streams per connection.

What this feed adds to ``WsFeed``:

* Trade ids increase by one per trade, so ``TradeSequencer`` drops the trades a reconnect replays and
  measures the ones it missed. With a history loader (``engine.backfill``), a symbol's trades are held
  while its history loads and the two meet by trade id, and a gap is refilled from the REST API when
  the engine can re-run a symbol; trades still missed are counted in ``counters.gaps`` and logged once
  per symbol with the missing id range.
* A kline stream has no trade ids: each update becomes one tick at the kline's latest (close) price
  carrying only the volume traded since the previous update of the same kline, so bar volumes add up
  and an update replayed after a reconnect adds nothing.
* The connections are a ``BinancePool`` (engine/feeds/binance_pool.py), which keeps Binance's rules: at
  most 1,024 streams a connection (more open another), at most 5 incoming messages a second per
  connection with our own pings and pongs counted (exceeding it gets the connection dropped and,
  repeatedly, the IP banned), a new connection opened at once on ``serverShutdown`` (the old one closed
  once the new one delivers), and a quiet connection probed with ``LIST_SUBSCRIPTIONS`` (a trade stream
  for an illiquid symbol can be silent for minutes, and without an answer to something the stall
  detector could not tell a quiet market from a dead server).
* With a REST URL, each symbol's tick size is looked up once in the exchange information
  (engine/feeds/binance_ticks.py), beside the stream, for the precision the console shows it at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from engine.backfill.loader import HELD
from engine.feeds.backoff import Backoff
from engine.feeds.batching import valid_trade
from engine.feeds.binance_pool import BinancePool
from engine.feeds.binance_ticks import TickSizes
from engine.feeds.budget import MessageBudget, budgeted_connection
from engine.feeds.ws import Connection, WsFeed
from engine.ticks import SymbolTable, SymbolTableFull

log = logging.getLogger("tickdeck.feeds.binance")

KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
                   "1w", "1M")
_MS = 1_000_000  # ns per ms
# Bounds checked while decoding, so a time or id that cannot fit a tick's int64 fields is an invalid
# event here rather than an OverflowError when the batch is built (which would end the feed).
_Ms = Annotated[int, msgspec.Meta(ge=0, le=(2**63 - 1) // _MS)]  # epoch ms whose ns fit an int64
_Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


# --- frames, as documented ----------------------------------------------------------------------
class Trade(msgspec.Struct, tag_field="e", tag="trade"):
    E: _Ms  # event time, ms
    s: str  # symbol, upper-case
    t: _Id  # trade id
    p: str  # price
    q: str  # quantity
    T: _Ms  # trade time, ms
    m: bool  # the buyer is the maker: the seller took liquidity


class KlineBar(msgspec.Struct):
    t: _Ms  # start time, ms
    T: _Ms  # close time, ms (the last millisecond of the kline)
    s: str
    i: str  # interval
    c: str  # close (latest) price
    v: str  # base asset volume so far
    x: bool  # closed


class Kline(msgspec.Struct, tag_field="e", tag="kline"):
    E: _Ms
    s: str
    k: KlineBar


class ServerShutdown(msgspec.Struct, tag_field="e", tag="serverShutdown"):
    E: int = 0


class ErrorBody(msgspec.Struct):
    code: int
    msg: str


class Frame(msgspec.Struct):
    """Any frame the server sends: an event (``stream`` + ``data``) or an answer to a request (``id``)."""

    stream: str | None = None
    data: Trade | Kline | ServerShutdown | None = None
    id: int | str | msgspec.UnsetType | None = msgspec.UNSET
    result: Any = msgspec.UNSET
    error: ErrorBody | None = None
    e: str | None = None  # an unwrapped event (serverShutdown may come bare)


_decoder = msgspec.json.Decoder(Frame)
_EVENTS = ("trade", "kline", "serverShutdown")
_URL_SPECIAL = "/@?&#%"


def _invalid_reason(raw: str | bytes) -> str:
    """Why a well-formed JSON frame does not fit ``Frame`` (only on the bad path, so it may be slow)."""
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return "malformed json"
    if not isinstance(obj, dict):
        return "unknown frame"
    data = obj.get("data")
    if isinstance(data, dict):
        return "invalid event" if data.get("e") in _EVENTS else "unknown event type"
    return "invalid answer" if "id" in obj else "unknown frame"


def _usable(symbol: str) -> bool:
    """Whether ``symbol`` can be part of a stream name. One that cannot would be refused in every
    connection URL, so one typo would keep the whole feed from reconnecting: it is left out instead."""
    if symbol and not any(ch.isspace() or ch in _URL_SPECIAL for ch in symbol):
        return True
    log.warning("binance: %r cannot be a Binance symbol (empty, or has spaces or any of %s); not "
                "subscribed", symbol, _URL_SPECIAL)
    return False


class BinanceFeed(WsFeed):
    """Binance spot trades (``stream="trade"``) or kline updates (``stream="kline_1m"``, any interval)."""

    name = "binance"
    #: streams named in the connection URL; more are subscribed after connecting (URL length)
    url_streams_max = 100
    #: our requests per rolling second; the server allows 5 incoming messages, pongs included
    max_requests_per_s = 4
    #: seconds of silence before asking the server for something (kept below ``stall_s``); None: never
    heartbeat_s: float | None = 5.0

    def __init__(self, symbols: SymbolTable, url: str = "wss://stream.binance.com:9443",
                 wanted: Iterable[str] = (), backoff: Backoff | None = None, stream: str = "trade",
                 stale_after: float | None = None, rest_url: str | None = None) -> None:
        if stream != "trade" and not (stream.startswith("kline_") and stream[6:] in KLINE_INTERVALS):
            raise ValueError(f"binance stream must be 'trade' or 'kline_<interval>' with interval one of "
                             f"{', '.join(KLINE_INTERVALS)}; got {stream!r}")
        super().__init__(symbols, url, [s for s in wanted if _usable(s)], backoff, stale_after)
        self.stream_kind = stream
        self._by_stream: dict[str, str] = {self.stream_of(s): s for s in self.wanted}
        self._slots: dict[str, int] = {}  # resolved slots, per stream name
        self._url_streams: list[str] = []
        self._pool: BinancePool | None = None
        self._klines: dict[int, tuple[int, Decimal]] = {}  # slot -> (kline start ms, volume so far)
        self._gap_logged: set[int] = set()
        #: tick sizes from the REST API's exchange information, into ``decimals`` (None: never asked)
        self.tick_sizes = TickSizes(rest_url, self.counters, self.decimals) if rest_url else None

    async def on_stream_end(self) -> None:
        if self.tick_sizes is not None:
            await self.tick_sizes.aclose()

    def stream_of(self, symbol: str) -> str:
        return f"{symbol.lower()}@{self.stream_kind}"

    # --- subscriptions -------------------------------------------------------------------------
    async def subscribe(self, symbols: Iterable[str]) -> None:
        names = [s for s in symbols if _usable(s)]
        for name in names:  # before the request goes out: its first events may follow at once
            self._by_stream[self.stream_of(name)] = name
        await super().subscribe(names)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        names = [s for s in symbols if s in self.wanted]
        for name in names:
            stream = self.stream_of(name)
            self._by_stream.pop(stream, None)
            self._slots.pop(stream, None)
        await super().unsubscribe(names)

    def url_for(self, symbols: list[str]) -> str:
        self._url_streams = [self.stream_of(s) for s in symbols][: self.url_streams_max]
        if not self._url_streams:
            return f"{self.url}/stream"
        return f"{self.url}/stream?streams={'/'.join(self._url_streams)}"

    def new_budget(self) -> MessageBudget:
        """A connection's budget: ``max_requests_per_s`` of Binance's 5, the rest kept for pongs."""
        return MessageBudget(self.max_requests_per_s, clock=self._clock, sleep=self._sleep)

    async def _open(self, url: str, budget: MessageBudget) -> ClientConnection:
        return await connect(url, open_timeout=10, close_timeout=2, max_size=2**22, ping_interval=20,
                             ping_timeout=20, create_connection=budgeted_connection(budget))

    async def open_connection(self, url: str) -> Connection:
        pool = BinancePool(self.url, self._open, self.new_budget, self.stall_s, self.url_streams_max,
                           self.heartbeat_s)
        try:
            await pool.open(self._url_streams)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        if self.tick_sizes is not None:  # beside the stream: nothing waits for a tick size
            self.tick_sizes.want(self.wanted)
        return pool

    async def send_subscription(self, ws: Connection, symbols: list[str], subscribe: bool) -> None:
        pool = self._pool
        if pool is None or ws is not pool:
            return  # not connected: the next connection subscribes every wanted stream
        if subscribe:
            if self.tick_sizes is not None:
                self.tick_sizes.want(symbols)
            await pool.sync([self.stream_of(s) for s in self.wanted], [self.stream_of(s) for s in symbols])
        else:
            await pool.remove([self.stream_of(s) for s in symbols])

    # --- decoding ------------------------------------------------------------------------------
    def decode(self, raw: str | bytes, recv_ns: int) -> None:
        try:
            frame = _decoder.decode(raw)
        except msgspec.ValidationError:
            self.counters.bad_message(_invalid_reason(raw), raw)
            return
        # RecursionError: nested too deeply; UnicodeDecodeError: a binary frame's string is not UTF-8
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            reason = ("empty frame" if not raw else "truncated frame" if "truncated" in str(exc)
                      else "malformed json")
            self.counters.bad_message(reason, raw)
            return
        data = frame.data
        if data is not None and frame.stream is not None:
            if type(data) is Trade:
                self._trade(frame.stream, data, recv_ns, raw)
            elif type(data) is Kline:
                self._kline(frame.stream, data, recv_ns, raw)
            else:
                self._server_shutdown()
        elif frame.id is not msgspec.UNSET:
            self._answer(frame)
        elif frame.e == "serverShutdown":
            self._server_shutdown()
        else:
            self.counters.bad_message("unknown frame", raw)

    def _slot(self, stream: str, raw: str | bytes) -> int | None:
        slot = self._slots.get(stream)
        if slot is not None:
            return slot
        name = self._by_stream.get(stream)
        if name is None:
            symbol = stream.partition("@")[0]
            known = any(s.partition("@")[0] == symbol for s in self._by_stream)
            self.counters.bad_message("unexpected stream" if known else "unknown symbol", raw)
            return None
        try:
            slot = self.symbols.slot(name)
        except SymbolTableFull as exc:
            self.counters.bad_message("symbol table full", exc)
            return None
        self._slots[stream] = slot
        return slot

    def _trade(self, stream: str, tr: Trade, recv_ns: int, raw: str | bytes) -> None:
        slot = self._slot(stream, raw)
        if slot is None:
            return
        history = self.history
        ts = tr.T * _MS
        missing = self.sequencer.check(slot, tr.t) if history is None else history.check(slot, tr.t, ts)
        held = missing == HELD  # its history (or a refill) is loading: kept back until the seam
        if missing < 0 and not held:
            self.counters.duplicates += 1
            return
        if missing > 0:
            self.counters.gaps += missing
            if slot not in self._gap_logged:
                self._gap_logged.add(slot)
                log.warning("binance: %s: %d trade(s) missed, ids %d..%d (not fetched again; further "
                            "gaps are only counted)", self.symbols.name(slot), missing, tr.t - missing,
                            tr.t - 1)
        try:
            price, size = float(tr.p), float(tr.q)
        except ValueError:
            price = size = float("nan")
            why = "bad number"
        else:
            why = valid_trade(price, size)
        if why:
            self.counters.bad_message(why, raw)
            if held and history is not None:
                history.hold(slot, tr.t, ts, None)
            return
        tick = (slot, ts, recv_ns, price, size, -1 if tr.m else 1, tr.t)
        if held and history is not None:  # counted as a tick when it is let go
            history.hold(slot, tr.t, ts, tick)
        else:
            self.batcher.add(*tick)
            self.counters.ticks += 1

    def _kline(self, stream: str, kl: Kline, recv_ns: int, raw: str | bytes) -> None:
        slot = self._slot(stream, raw)
        if slot is None:
            return
        k = kl.k
        try:
            volume = Decimal(k.v)  # exact differences: float volumes would drift by rounding
            price = float(k.c)
        except (InvalidOperation, ValueError):
            self.counters.bad_message("bad number", raw)
            return
        if not volume.is_finite() or volume < 0:
            self.counters.bad_message("bad size", raw)
            return
        last = self._klines.get(slot)
        if last is not None and (k.t < last[0] or (k.t == last[0] and volume < last[1])):
            self.counters.out_of_order += 1
            return
        added = volume - last[1] if last is not None and k.t == last[0] else volume
        if why := valid_trade(price, float(added)):
            self.counters.bad_message(why, raw)
            return
        self._klines[slot] = (k.t, volume)
        if added == 0:
            return  # the periodic update of a kline nobody traded in since: nothing new
        # within the kline, so a bar builder files it under the kline's interval even after it closed
        ts = min(max(kl.E, k.t), k.T) * _MS
        tick = (slot, ts, recv_ns, price, float(added), 0, -1)
        if self.history is not None and self.history.holding(slot):  # until its history is in
            self.history.hold(slot, -1, ts, tick)
        else:
            if self.history is not None:  # (kept while its history is to be tried again)
                self.history.passing(slot, tick)
            self.batcher.add(*tick)
            self.counters.ticks += 1

    def _server_shutdown(self) -> None:
        """Binance is about to close this connection: open the next one now (the pool keeps the seam)."""
        log.info("binance announced a server shutdown; moving its streams to a new connection now")
        if self._pool is not None:
            self._pool.replace(self._pool.current)

    def _answer(self, frame: Frame) -> None:
        request_id = frame.id if isinstance(frame.id, int) else None
        if self._pool is None:
            return
        method, streams = self._pool.answer(request_id, frame.error is not None)
        if frame.error is None:
            return
        self.counters.bad["error answer"] += 1
        log.warning("binance refused %s %s (id %s): code %d, %s", method, streams, frame.id,
                    frame.error.code, frame.error.msg)
