"""Coinbase Advanced Trade market data (``wss://advanced-trade-ws.coinbase.com``), public channels only.

What Coinbase documents, and what this feed does about it ("Advanced Trade WebSocket Overview", "Channels",
"Rate Limits"; the official client, coinbase-advanced-py, sends the same frames: one per channel):

- One channel per ``subscribe`` frame. ``market_trades`` and ``ticker`` are subscribed per product;
  ``heartbeats`` once per connection with ``"product_ids": []``: it keeps every subscription of the
  connection open ("most channels close within 60-90 seconds if no updates are sent") and needs no
  product. A connection that has sent no ``subscribe`` within 5 seconds is closed by the server, so the
  heartbeats frame goes out first on every connection, even with an empty watchlist.
- Unauthenticated messages are limited to 8 a second per IP: every frame this feed sends (and the
  keepalive pings) goes through a ``MessageBudget`` of 8 a second, so a watchlist edited quickly waits
  instead of being refused.
- ``market_trades`` is the only source of ticks. Its first event after a subscription is a ``snapshot``
  that replays recent trades; the ``TradeSequencer`` drops the ones already delivered (after a reconnect
  or a re-subscribe) and counts them as duplicates.
- ``side`` in ``market_trades`` is the side of the *maker* (the resting order), as in Coinbase
  Exchange's ``match`` message, whose documentation says so ("The side field indicates the maker order
  side. If the side is sell this indicates the maker was a sell order and the match is considered an
  up-tick"); the Advanced Trade pages only call it "the side of the trade". nautilus_trader's Coinbase
  adapter reads it the same way (crates/adapters/coinbase, ``coinbase_side_to_aggressor``: "Coinbase
  reports the maker side on public market trades, so the aggressor is the opposite side"). A tick's side
  is the aggressor's (+1 a buyer took the offer, -1 a seller hit the bid), so ``SELL`` becomes +1 and
  ``BUY`` -1.
- Aliased products (BTC-USDC trades on the BTC-USD book) come back under their canonical id; the alias
  map comes from the public products endpoint (``engine.feeds.coinbase_products``) and each event is
  delivered to every subscribed name it stands for.
- ``ticker`` never produces ticks: its price is the last trade's, already delivered by market_trades,
  and its ``volume_24_h`` is a rolling statistic, not a trade, so turning it into ticks would
  double-count volume. It fills ``tickers`` (last price, 24 h volume, best bid and ask), which
  ``last_price`` falls back on for a product that has had no trade yet.

Every message but an error carries ``sequence_num``, which counts messages on one connection across
all channels. A jump is a gap: the missing messages are counted in ``counters.gaps``, logged once with
the range and reported as a ``FeedStatus``. The messages cannot be replayed, and the number does not
say which products they were for; trade ids do (they increase by one per trade of a product). With a
history loader (``engine.backfill``), a product's trades are held while its history loads and meet it by
trade id, and a product whose next trade id jumps (within a connection or after a reconnect) is refilled
from the REST API (``engine.backfill.coinbase``), as on Binance. Without one, trade ids are not used for
gaps within a connection (the sequence number accounts for lost messages); across a reconnect they are:
when the snapshot does not reach back to the last trade delivered, the trades in between are counted as
gaps. A lower sequence number than expected is counted as ``out_of_order``; its trades still go through
the sequencer, which drops any already delivered.

Error messages (``{"type": "error", "message": ...}``) are counted under ``counters.bad["server
error"]``, each distinct text is logged and reported once, and the feed carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

import msgspec

from engine.backfill.loader import HELD
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedStatus
from engine.feeds.batching import valid_trade
from engine.feeds.budget import MessageBudget
from engine.feeds.coinbase_products import ProductAliases
from engine.feeds.ws import Connection, WsFeed
from engine.ticks import SymbolTable

log = logging.getLogger("tickdeck.feeds")

DEFAULT_URL = "wss://advanced-trade-ws.coinbase.com"
PRODUCT_CHANNELS = ("market_trades", "ticker")
CHANNELS = (*PRODUCT_CHANNELS, "heartbeats")
HEARTBEATS = {"type": "subscribe", "product_ids": [], "channel": "heartbeats"}
FRAMES_PER_S = 8  # "WebSocket unauthenticated messages are rate-limited at 8 per second per IP address"
_SIDE = {"BUY": -1, "SELL": 1}  # the maker's side -> the aggressor's (see the module docstring)
_MAX_DISTINCT_ERRORS = 64  # distinct server error texts logged; beyond that they are only counted


class Envelope(msgspec.Struct):
    """What every message shares; ``events`` stays raw until the channel says how to decode it."""

    channel: str = ""
    sequence_num: int | None = None
    type: str = ""  # only error messages have one at the top level
    message: str = ""
    events: msgspec.Raw = msgspec.Raw(b"[]")


class Trade(msgspec.Struct):
    # Coinbase sends numbers as strings; they are converted per trade so one bad trade costs only itself
    trade_id: str
    product_id: str
    price: str
    size: str
    side: str
    time: str


class TradesEvent(msgspec.Struct):
    type: str  # "snapshot" or "update"
    trades: list[Trade]


class Ticker(msgspec.Struct):
    product_id: str
    price: str
    volume_24_h: str = ""
    best_bid: str = ""
    best_ask: str = ""


class TickerEvent(msgspec.Struct):
    type: str
    tickers: list[Ticker]


class SubscriptionsEvent(msgspec.Struct):
    subscriptions: dict[str, list[str]]


_ENVELOPE = msgspec.json.Decoder(Envelope)
_TRADE_EVENTS = msgspec.json.Decoder(list[TradesEvent])
_TICKER_EVENTS = msgspec.json.Decoder(list[TickerEvent])
_SUBSCRIPTION_EVENTS = msgspec.json.Decoder(list[SubscriptionsEvent])
_ENCODE = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class TickerState:
    """The latest ``ticker`` message for a product (NaN where a field was missing or unreadable)."""

    price: float
    volume_24h: float
    best_bid: float
    best_ask: float
    at_ns: int  # when it was received


_SECONDS: dict[str, int] = {}


def parse_time_ns(text: str) -> int:
    """An RFC 3339 UTC time (``2023-06-23T20:31:26.122969572Z``) as exact ns since the epoch.

    ``datetime`` stops at microseconds and Coinbase sends up to nanoseconds, so the fraction is read
    as an integer; the whole-second part is cached, as a busy tape repeats it many times.
    """
    if text.endswith("Z"):
        body = text[:-1]
    elif text.endswith("+00:00"):
        body = text[:-6]
    else:
        raise ValueError(f"not a UTC time: {text!r}")
    head, dot, frac = body.partition(".")
    seconds = _SECONDS.get(head)
    if seconds is None:
        if len(head) != 19 or head[10] not in "Tt ":
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        seconds = int(datetime.fromisoformat(head + "+00:00").timestamp())
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[head] = seconds
    nanos = 0
    if dot:
        if not (0 < len(frac) <= 9 and frac.isdigit()):
            raise ValueError(f"bad fraction of a second in {text!r}")
        nanos = int(frac.ljust(9, "0"))
    ns = seconds * 1_000_000_000 + nanos
    if not 0 <= ns < 2**63:  # a tick's int64 field: 1970 to 2262
        raise ValueError(f"time out of range (1970 to 2262): {text!r}")
    return ns


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


class CoinbaseFeed(WsFeed):
    name = "coinbase"

    def __init__(self, symbols: SymbolTable, url: str = DEFAULT_URL, wanted: Iterable[str] = (),
                 backoff: Backoff | None = None, stale_after: float | None = None,
                 rest_url: str | None = None) -> None:
        super().__init__(symbols, url, wanted, backoff, stale_after)
        self.budget = MessageBudget(FRAMES_PER_S)
        #: the public REST API that says which products are aliases (None: never asked)
        self.aliases = ProductAliases(rest_url, self.counters, decimals=self.decimals) if rest_url else None
        self._names: dict[str, tuple[str, ...]] = {}  # product id in events -> the names subscribed for it
        self._slots: dict[str, int] = {name: symbols.slot(name) for name in self.wanted}
        self.tickers: dict[str, TickerState] = {}
        #: what the server last acknowledged, channel -> product ids (from ``subscriptions`` messages)
        self.subscribed: dict[str, tuple[str, ...]] = {}
        self.last_error = ""
        self._last_trade: dict[str, float] = {}
        self._next_seq: int | None = None
        self._resuming: set[int] = set()
        self._errors_seen: set[str] = set()

    # --- WsFeed hooks ------------------------------------------------------------------------------
    def url_for(self, symbols: list[str]) -> str:
        return self.url

    async def on_open(self, ws: Connection) -> None:
        # first, and whatever the watchlist: a connection with no subscribe after 5 s is closed
        await self.send(ws, _ENCODE.encode(HEARTBEATS).decode())
        if self.wanted:
            await self.send_subscription(ws, self.wanted, True)

    async def send_subscription(self, ws: Connection, symbols: list[str], subscribe: bool) -> None:
        kind = "subscribe" if subscribe else "unsubscribe"
        if subscribe:
            if self.aliases is not None:
                await self.aliases.learn(symbols)
            self._map_names()
        for channel in PRODUCT_CHANNELS:
            await self.send(ws, _ENCODE.encode({"type": kind, "product_ids": symbols, "channel": channel})
                            .decode())

    def _map_names(self) -> None:
        names: dict[str, list[str]] = {}
        for name in self.wanted:
            product = self.aliases.canonical(name) if self.aliases is not None else name
            names.setdefault(product, []).append(name)
            if product != name:
                names.setdefault(name, []).append(name)  # should Coinbase ever answer under the alias
        self._names = {product: tuple(dict.fromkeys(n)) for product, n in names.items()}

    def names_of(self, product: str) -> tuple[str, ...]:
        """The subscribed names an event's ``product_id`` stands for (empty: none)."""
        names = self._names.get(product)
        if names is None:
            return (product,) if product in self._slots else ()
        return names

    def on_connected(self) -> None:
        # sequence numbers start afresh on every connection; products delivered before are resuming
        self._next_seq = None
        self._resuming = set(self.sequencer.last)
        self.subscribed = {}

    async def subscribe(self, symbols: Iterable[str]) -> None:
        names = list(symbols)
        slots = {n: self.symbols.slot(n) for n in names}  # may raise SymbolTableFull before sending
        self._slots.update(slots)
        # a fresh subscription is not a resumption: the trades since the last one are not a gap
        self._resuming.difference_update(slots.values())
        await super().subscribe(names)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        # Unlike WsFeed, the last trade id is kept: Coinbase replays recent trades on every subscription,
        # and the kept id is what drops that replay if the product is subscribed again.
        gone = [s for s in symbols if s in self.wanted]
        self.wanted = [s for s in self.wanted if s not in gone]
        for name in gone:
            slot = self._slots.pop(name, None)
            if slot is not None:
                self._resuming.discard(slot)
                if self.history is not None:  # (it forgets the last id, which is kept here)
                    last = self.sequencer.last.get(slot)
                    self.history.stop(name)
                    if last is not None:
                        self.sequencer.last[slot] = last
        self._map_names()
        if gone and self._ws is not None:
            await self.send_subscription(self._ws, gone, False)

    async def on_stream_end(self) -> None:
        if self.aliases is not None:
            await self.aliases.close()

    def last_price(self, product: str) -> float | None:
        """The last trade's price, or the ticker's while no trade has arrived (None if neither)."""
        price = self._last_trade.get(product)
        if price is None and (ticker := self.tickers.get(product)) is not None:
            price = ticker.price
        return price

    # --- decoding ----------------------------------------------------------------------------------
    def decode(self, raw: str | bytes, recv_ns: int) -> None:
        try:
            env = _ENVELOPE.decode(raw)
        except msgspec.ValidationError:
            self.counters.bad_message("invalid message", raw)
            return
        # RecursionError: nested too deeply; UnicodeDecodeError: a binary frame's string is not UTF-8
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            self.counters.bad_message("malformed json", raw)
            return
        if env.type == "error":
            self._server_error(env.message or "(no message)")
            return
        if env.sequence_num is not None:
            self._sequence(env.sequence_num)
        channel = env.channel
        try:
            if channel == "market_trades":
                self._trades(_TRADE_EVENTS.decode(env.events), recv_ns)
            elif channel == "ticker":
                self._tickers(_TICKER_EVENTS.decode(env.events), recv_ns)
            elif channel == "heartbeats":
                pass  # their work is done by arriving
            elif channel == "subscriptions":
                for event in _SUBSCRIPTION_EVENTS.decode(env.events):
                    self.subscribed = {c: tuple(p) for c, p in event.subscriptions.items()}
            elif channel:
                self.counters.bad_message("unknown channel", raw)
            else:
                self.counters.bad_message("unknown message", raw)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            self.counters.bad_message(f"invalid {channel} events", raw)

    def _sequence(self, seq: int) -> None:
        expected = self._next_seq
        if expected is None or seq == expected:
            self._next_seq = seq + 1
        elif seq > expected:
            missed = seq - expected
            self.counters.gaps += missed
            refilled = self.history is not None and self.history.refills
            self._report(f"sequence gap: messages {expected}-{seq - 1} never arrived ({missed} missed); "
                         + ("the trades they held are refilled by trade id" if refilled
                            else "not refilled, Coinbase cannot replay them"))
            self._next_seq = seq + 1
        else:
            self.counters.out_of_order += 1

    def _trades(self, events: list[TradesEvent], recv_ns: int) -> None:
        bad = self.counters.bad_message
        for event in events:
            rows: list[tuple[int, int, str, Trade]] = []
            for t in event.trades:
                slots = [(self._slots[n], n) for n in self.names_of(t.product_id) if n in self._slots]
                if not slots:
                    bad("unknown product", t)
                    continue
                try:
                    trade_id = int(t.trade_id)
                except ValueError:
                    trade_id = -1
                if not 0 <= trade_id < 2**63:  # it goes into a tick's int64 field
                    bad("bad trade id", t)
                    continue
                rows += [(trade_id, slot, name, t) for slot, name in slots]
            if len(rows) > 1:
                rows.sort(key=itemgetter(0))  # snapshots list the newest trade first
            for trade_id, slot, name, t in rows:
                price = _number(t.price)
                size = _number(t.size)
                try:
                    ts = parse_time_ns(t.time)
                except ValueError:
                    ts, why = recv_ns, "bad time"
                else:
                    why = valid_trade(price, size)
                history = self.history
                if why:
                    bad(why, t)
                    # with a loader, a bad trade still used its id (no gap to refill), and a held one
                    # keeps its place at the seam
                    if history is not None and history.check(slot, trade_id, ts) == HELD:
                        history.hold(slot, trade_id, ts, None)
                    continue
                missing = (self.sequencer.check(slot, trade_id) if history is None
                           else history.check(slot, trade_id, ts))
                held = missing == HELD  # its history (or a refill) is loading: kept back until the seam
                if missing < 0 and not held:
                    self.counters.duplicates += 1
                    self._resuming.discard(slot)  # the replay reaches back: nothing was lost
                    continue
                if slot in self._resuming and not held:
                    self._resuming.discard(slot)
                    if missing:
                        self.counters.gaps += missing
                        self._report(f"{name}: trades {trade_id - missing}-{trade_id - 1} "
                                     f"happened while disconnected ({missing} missed); not refilled")
                tick = (slot, ts, recv_ns, price, size, _SIDE.get(t.side, 0), trade_id)
                self._last_trade[name] = price
                if held and history is not None:  # counted as a tick when it is let go
                    history.hold(slot, trade_id, ts, tick)
                else:
                    self.batcher.add(*tick)
                    self.counters.ticks += 1

    def _tickers(self, events: list[TickerEvent], recv_ns: int) -> None:
        for event in events:
            for t in event.tickers:
                names = [n for n in self.names_of(t.product_id) if n in self._slots]
                if not names:
                    self.counters.bad_message("unknown product", t)
                    continue
                price = _number(t.price)
                if valid_trade(price, 0.0):
                    self.counters.bad_message("bad ticker price", t)
                    continue
                state = TickerState(price, _number(t.volume_24_h), _number(t.best_bid), _number(t.best_ask),
                                    recv_ns)
                for name in names:
                    self.tickers[name] = state

    def _server_error(self, message: str) -> None:
        self.counters.bad["server error"] += 1
        self.last_error = message
        if message not in self._errors_seen and len(self._errors_seen) < _MAX_DISTINCT_ERRORS:
            self._errors_seen.add(message)
            self._report(f"server error: {message}")

    def _report(self, text: str) -> None:
        log.warning("%s: %s", self.name, text)
        self.report(FeedStatus(self.name, "live", text))
