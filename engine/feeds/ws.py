"""The shared life of a WebSocket market-data feed: connect, subscribe, read in batches, notice a
stall, and reconnect with backoff — reporting every transition as a ``FeedStatus``.

Exchange specifics (URLs, subscription frames, message decoding, sequence checks) live in subclasses;
this module knows only the protocol (``websockets``) and the failure modes every exchange shares:
DNS, refused connections, TLS, HTTP status at the handshake, servers that close (periodically, as
Binance does every 24 h) and servers that stall.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import math
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.frames import CloseCode

from engine.feeds.backoff import Backoff
from engine.feeds.base import Feed, FeedItem, FeedStatus, State, valid_utf8
from engine.feeds.batching import TickBatcher, TradeSequencer
from engine.feeds.budget import MessageBudget, budgeted_connection
from engine.ticks import SymbolTable

if TYPE_CHECKING:
    from engine.backfill.loader import HistoryLoader


class Connection(Protocol):
    """What ``WsFeed`` needs of a connection: a ``websockets`` ``ClientConnection``, or several behind one
    object that reads like one (Binance, past 1,024 streams or while it moves to a new connection)."""

    @property
    def protocol(self) -> Any: ...  # websockets' Sans-I/O protocol of the connection that ended

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Stalled(Exception):
    """The server sent nothing for too long; the connection is presumed dead."""


def describe_error(exc: BaseException, url: str) -> str:
    """One line a user can act on: what failed, against which host."""
    host = urlsplit(url).netloc or url
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed for {host}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error with {host}: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} from {host} at the WebSocket handshake"
    if isinstance(exc, InvalidURI):
        return f"invalid WebSocket URL {url!r}"
    if isinstance(exc, ConnectionClosed):
        close = exc.rcvd
        if close is None:
            return f"{host} dropped the connection without a close frame"
        why = f": {close.reason}" if close.reason else ""
        return f"{host} closed the connection (code {close.code}{why})"
    if isinstance(exc, Stalled):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out connecting to {host}"
    if isinstance(exc, OSError):
        return f"network error with {host}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


CUT_SHORT = {"closed mid-frame": "in the middle of a frame",
             "closed mid-message": "in the middle of a fragmented message"}
"""The ways a connection can end inside a message (a bad message's reason: where it ended)."""


def cut_short(ws: Connection) -> tuple[str, str]:
    """Whether a connection that ended was cut short, as (a reason of ``CUT_SHORT``, what websockets
    said): in the middle of a frame (its bytes stopped coming: a FIN or an RST inside the frame), in
    the middle of a fragmented message (a close frame or the end of the stream between its fragments),
    or not (``("", "")``: it ended between messages).

    Read from ``websockets``' Sans-I/O protocol (websockets/protocol.py, ``parse``; read on 17.4):
    the end of the stream *between* frames raises ``EOFError("unexpected end of stream")``, inside one
    ``StreamReader.read_exact`` raises ``EOFError("stream ends after N bytes, expected M bytes")``;
    ``current_size`` is set from a first fragment until the last one. A test pins both.
    """
    protocol = ws.protocol
    error = getattr(protocol, "parser_exc", None)
    if isinstance(error, EOFError) and str(error) != "unexpected end of stream":
        return "closed mid-frame", f"{error}"
    if getattr(protocol, "current_size", None) is not None:
        return "closed mid-message", f"{error or 'the connection ended'}"
    return "", ""


class WsFeed(Feed):
    """Subclasses implement ``url_for``, ``send_subscription`` and ``decode``.

    With a ``history`` loader (``engine.backfill``), a symbol's history is loaded as it is subscribed
    (at the first connect, or later), its live trades held meanwhile by the subclass's decoder; what the
    loader finishes is yielded between batches: the loader's ``wake`` cuts a wait for the next message
    short (``recv`` may be cancelled without losing a message: websockets' asyncio ``recv`` docs).
    """

    #: seconds without a message before the feed is reported stale; twice that and it reconnects
    #: (``feeds.<name>.stale_after``)
    stall_s: float = 15.0
    #: how long one batch may gather messages already in flight, and its largest size
    batch_window_s: float = 0.005
    max_batch: int = 4096
    #: what the server lets a client send (None: no limit); every frame sent goes through it
    budget: MessageBudget | None = None

    def __init__(self, symbols: SymbolTable, url: str, wanted: Iterable[str] = (),
                 backoff: Backoff | None = None, stale_after: float | None = None) -> None:
        super().__init__(symbols)
        if stale_after is not None:
            if not (0 < stale_after < math.inf):
                raise ValueError(f"stale_after must be a number of seconds > 0, got {stale_after}")
            self.stall_s = stale_after
        self.url = url.rstrip("/")
        self.wanted: list[str] = list(dict.fromkeys(wanted))
        self.backoff = backoff or Backoff()
        self.batcher = TickBatcher()
        self.sequencer = TradeSequencer()
        self._ws: Connection | None = None
        self._reports: list[FeedStatus] = []
        self._clock = time.monotonic  # the feed's clock and sleep, replaceable in tests
        self._sleep = asyncio.sleep
        self.state: State = "connecting"  # as last reported, feed-wide
        self.history: HistoryLoader | None = None
        self._recv_timeout: asyncio.Timeout | None = None
        self._woken = False

    def use_history(self, loader: HistoryLoader) -> None:
        """Load history with ``loader`` (before the stream starts)."""
        self.history = loader
        loader.wake = self.wake
        loader.pending = self.batcher.flush

    def wake(self) -> None:
        """Something is ready to be yielded: stop waiting for the next message."""
        self._woken = True
        timeout = self._recv_timeout
        if timeout is not None and not timeout.expired():
            with contextlib.suppress(RuntimeError):  # the wait has just ended: the flag is enough
                timeout.reschedule(asyncio.get_running_loop().time())

    def _side(self) -> list[FeedItem]:
        """What the history loader finished, its notes in the feed's current state."""
        self._woken = False
        if self.history is None:
            return []
        return [dataclasses.replace(item, state=self.state) if isinstance(item, FeedStatus) else item
                for item in self.history.take()]

    # --- what an exchange defines --------------------------------------------------------------
    @abc.abstractmethod
    def url_for(self, symbols: list[str]) -> str:
        """The URL to connect to for the current subscription."""

    @abc.abstractmethod
    async def send_subscription(self, ws: Connection, symbols: list[str], subscribe: bool) -> None:
        """Send the frame(s) that (un)subscribe ``symbols`` on an open connection."""

    @abc.abstractmethod
    def decode(self, raw: str | bytes, recv_ns: int) -> None:
        """Decode one frame: add its trades to ``self.batcher``, count what is wrong with it."""

    def on_connected(self) -> None:
        """Called after every successful (re)connect, before any message is read."""

    async def open_connection(self, url: str) -> Connection:
        """Open one connection (a subclass may open several behind one object that reads like one)."""
        factory = None
        if self.budget is not None:
            self.budget.reset()  # servers count per connection
            factory = budgeted_connection(self.budget)
        return await connect(url, open_timeout=10, close_timeout=2, max_size=2**22, ping_interval=20,
                             ping_timeout=20, create_connection=factory)

    async def on_open(self, ws: Connection) -> None:
        """What a new connection is sent first: the subscription (a subclass may always send one)."""
        if self.wanted:
            await self.send_subscription(ws, self.wanted, True)

    async def send(self, ws: Connection, text: str) -> None:
        """Send one frame, within ``budget``."""
        if self.budget is not None:
            await self.budget.acquire()
        await ws.send(text)

    def report(self, status: FeedStatus) -> None:
        """Queue a status found while decoding (a sequence gap, a server error); ``decode`` cannot
        yield, so the read loop yields it right after the batch it was found in."""
        self._reports.append(status)

    # --- subscriptions -------------------------------------------------------------------------
    async def subscribe(self, symbols: Iterable[str]) -> None:
        new = [s for s in symbols if s not in self.wanted]
        self.wanted += new
        if self.history is not None and self._ws is not None:  # holding, before the first trade can come
            for name in new:
                self.history.start(name)
        if new and self._ws is not None:
            await self.send_subscription(self._ws, new, True)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        gone = [s for s in symbols if s in self.wanted]
        self.wanted = [s for s in self.wanted if s not in gone]
        for name in gone:
            if self.history is not None:
                self.history.stop(name)
            slot = self.symbols.get(name)
            if slot is not None:
                self.sequencer.forget(slot)
        if gone and self._ws is not None:
            await self.send_subscription(self._ws, gone, False)

    def universe(self) -> tuple[str, ...]:
        return tuple(self.wanted)

    # --- the connection loop -------------------------------------------------------------------
    async def stream(self) -> AsyncGenerator[FeedItem, None]:
        try:
            async with contextlib.aclosing(self._connections()) as items:
                async for item in items:
                    if isinstance(item, FeedStatus) and not item.symbols:
                        self.state = item.state
                    yield item
        finally:
            if self.history is not None:
                await self.history.aclose()
            await self.on_stream_end()

    async def on_stream_end(self) -> None:
        """What a subclass lets go of when its stream ends (its lookups' sessions, its own tasks)."""

    async def _connections(self) -> AsyncGenerator[FeedItem, None]:
        first = True
        while True:
            if not first:
                self.counters.reconnects += 1
            first = False
            yield FeedStatus(self.name, "connecting")
            url = self.url_for(self.wanted)
            reason = ""
            ws: Connection | None = None
            # RFC 6455, 7.4.1: 1000 when we end a connection we no longer want (a stall), 1001 when
            # we go away (the app or the service stops); ``async with connect()`` would send 1011, an
            # unexpected condition, for any exception, and a stop is one (a cancellation, or the
            # stream closed at a yield)
            code = CloseCode.NORMAL_CLOSURE
            try:
                ws = await self.open_connection(url)
                self._ws = ws
                self.on_connected()
                if self.history is not None:  # the URL named them: from now on their trades are held
                    for name in self.wanted:
                        self.history.start(name)
                await self.on_open(ws)
                yield FeedStatus(self.name, "live")
                async with contextlib.aclosing(self._read(ws)) as items:
                    async for item in items:
                        yield item
            except (asyncio.CancelledError, GeneratorExit):
                code = CloseCode.GOING_AWAY
                raise
            except (OSError, WebSocketException, TimeoutError, Stalled) as exc:
                reason = describe_error(exc, url)
                why, detail = "", ""
                if ws is not None and isinstance(exc, ConnectionClosed):  # it ended: no stall of ours
                    why, detail = cut_short(ws)
                if why:  # a message lost half-way: bad input, as a truncated frame is
                    host = urlsplit(url).netloc
                    self.counters.bad_message(why, f"{host}: {detail}")
                    reason = f"{host} closed the connection {CUT_SHORT[why]}"
            except BaseException:
                code = CloseCode.INTERNAL_ERROR  # a bug of ours: an unexpected condition indeed
                raise
            finally:
                self._ws = None
                if ws is not None:  # bounded by close_timeout; nothing to do when already closed
                    await ws.close(code)
            for item in self._side():
                yield item
            if (batch := self.batcher.flush()) is not None:
                yield batch
            delay = self.backoff.next()
            yield FeedStatus(self.name, "reconnecting", reason or "connection ended", retry_in=delay)
            await self._sleep(delay)

    async def _read(self, ws: Connection) -> AsyncGenerator[FeedItem, None]:
        loop = asyncio.get_running_loop()
        stale = False
        while True:
            while self._woken:
                for item in self._side():
                    yield item
            try:  # asyncio.timeout: wait_for may swallow a cancellation on 3.11 (see engine/runtime.py)
                async with asyncio.timeout(self.stall_s) as self._recv_timeout:
                    raw = await ws.recv()
            except TimeoutError:
                if self._woken:  # cut short by ``wake``, not a silent server
                    continue
                if stale:
                    raise Stalled(f"no data from {urlsplit(self.url).netloc} for "
                                  f"{2 * self.stall_s:g} s") from None
                stale = True
                yield FeedStatus(self.name, "stale", f"no data for {self.stall_s:g} s")
                continue
            finally:
                self._recv_timeout = None
            if stale:
                stale = False
                yield FeedStatus(self.name, "live")
            self.backoff.reset()
            self._take(raw)
            deadline = loop.time() + self.batch_window_s
            try:
                async with asyncio.timeout_at(deadline):
                    while len(self.batcher) < self.max_batch:
                        self._take(await ws.recv())
            except TimeoutError:
                pass
            # what the loader finished while this batch gathered first: it took the ticks received
            # before it (``pending``), and the rest may be the live continuation of what it released
            while self._woken:
                for item in self._side():
                    yield item
            if (batch := self.batcher.flush()) is not None:
                yield batch
            while self._reports:
                yield self._reports.pop(0)

    def take_pending(self) -> np.ndarray | None:
        return self.batcher.flush()

    def _take(self, raw: Any) -> None:
        self.counters.messages += 1
        if not valid_utf8(raw):
            self.counters.bad_message("malformed json", raw)
            return
        self.decode(raw, time.time_ns())
