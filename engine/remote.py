"""``tickdeck attach``: the console fed by a headless instance's WebSocket broadcast, with no local engine.

:class:`RemoteRuntime` implements what the console needs of a runtime
(:class:`~engine.console_runtime.ConsoleRuntime`): ``run(on_update, on_status)``, ``feed.name``
(``"attach"``), ``watch`` (the publisher's symbols) and ``outputs`` (its indicator names). It is a
:class:`~engine.console_runtime.ViewOnlyRuntime`: its ``implements_*`` flags are False, since the
publisher chooses the symbols and there is no local engine (so nothing that needs one, such as a
backtest of loaded history, is offered), and only the publisher's symbols can be listed. It connects to the
publisher's ``websocket`` sink (``engine.sinks.frames`` decodes its frames), subscribes to
every signal and to snapshots, and rebuilds ``MarketSnapshot``/``Quote``, ``Signal``, ``PipelineHealth``
and ``FeedStatus`` objects from the frames, so the console cannot tell it from a local runtime.

Connection states are reported as ``FeedStatus`` of the feed ``attach``: ``connecting``, ``live`` (once
the publisher's ``hello`` arrives), then the publisher's own feed states as it reports them (the reason
names its feed), ``stale`` when nothing arrives for ``stall_s`` seconds, and ``reconnecting`` with the
reason (``HTTP 401: bad token``, ``connection refused by 127.0.0.1:8765``, a close code) and the delay,
which grows with ``engine.feeds.backoff``. A malformed frame is counted in ``feed.counters`` and skipped.

The symbols in ``watch`` when ``run`` starts are those the console opens with. The publisher's set may
grow later (a sharded engine takes symbols over: its ``symbols`` frame; a ``hello`` on a reconnect; a
snapshot quote of a symbol it never listed): a symbol this runtime has not told the console of is
announced once, in ``Update.new_symbols``, as the fleet console does (``engine.bus.attach``), and the
console lists it by itself, once a session (a symbol the user deleted stays deleted). ``watch`` follows
the publisher's latest list. At most ``MAX_TOLD`` symbols are announced in all.

No numba here, nor on the console's side of ``tickdeck attach``: the attaching machine needs only
numpy and websockets. The token is sent as ``Authorization: Bearer`` and never logged or shown; it comes
from ``TOKEN_VAR`` or a file (``attach_token``), since a command-line argument is readable by every user
of the machine (``ps``). Sent over plain ``ws://`` to a host that is not loopback it crosses the network in
clear text: ``RemoteRuntime.token_in_clear`` says so, and the command line warns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import CloseCode

from engine.addresses import is_loopback
from engine.console_runtime import ViewOnlyRuntime
from engine.feeds.backoff import Backoff
from engine.feeds.base import FeedCounters, FeedStatus
from engine.feeds.ws import CUT_SHORT, Stalled, cut_short, describe_error
from engine.signals.events import Signal
from engine.sinks.frames import (
    Error,
    FrameError,
    Hello,
    Snapshot,
    Subscription,
    SymbolsChanged,
    decode,
    subscribe_message,
)
from engine.snapshot import Update

log = logging.getLogger("tickdeck.remote")
_protocol_log = logging.getLogger("tickdeck.remote.protocol")
_protocol_log.setLevel(logging.WARNING)  # websockets' DEBUG lines would show the Authorization header

ATTACH = "attach"
TOKEN_VAR = "TICKDECK_ATTACH_TOKEN"
"""The environment variable ``tickdeck attach`` reads the token from (``--token-file`` and ``--token``
win over it)."""
MAX_TOKEN_FILE = 4096  # bytes: a token file is one short line
SUBSCRIBE = subscribe_message(Subscription(snapshots=True))  # every signal, and snapshots of every symbol
MAX_TOLD = 100_000  # symbols announced to the console (Update.new_symbols) in a run, at most


class AttachError(Exception):
    """The publisher cannot be reached or refused us; the message says why, in one line."""


class TokenError(ValueError):
    """A token that cannot be used (a file that cannot be read, an empty or malformed token); the message
    names where it came from and never shows it."""


def attach_token(given: str | None = None, file: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None) -> str | None:
    """The token to attach with: ``given`` (``--token``), else the first line of ``file``
    (``--token-file``), else ``$TICKDECK_ATTACH_TOKEN``; None when there is none."""
    if given is not None:
        return _checked(given, "the token given with --token")
    if file is not None:
        return _checked(read_token_file(file), f"the token file {os.fspath(file)}")
    value = (os.environ if env is None else env).get(TOKEN_VAR, "")
    return _checked(value, f"${TOKEN_VAR}") if value.strip() else None


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path``: its one line, surrounding white space removed."""
    where = f"the token file {os.fspath(path)}"
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise TokenError(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise TokenError(f"{where} is larger than {MAX_TOKEN_FILE} bytes; it should hold the token alone")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"{where} is not UTF-8 text") from None
    if not text:
        raise TokenError(f"{where} is empty")
    if "\n" in text:
        raise TokenError(f"{where} holds more than one line; it should hold the token alone")
    return text


def _checked(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise TokenError(f"{where} is empty")
    if not (token.isascii() and token.isprintable()):  # it goes in an Authorization header
        raise TokenError(f"{where} holds a control or non-ASCII character, which an HTTP header cannot "
                         "carry")
    return token


def normalize_url(url: str) -> str:
    """``ws://HOST:PORT`` (``HOST:PORT`` alone means ``ws://``); ValueError for anything else."""
    text = url.strip()
    if "://" not in text:
        text = f"ws://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"attach needs a ws://HOST:PORT (or wss://) URL, got {url!r}")
    try:
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        raise ValueError(f"attach needs a ws://HOST:PORT (or wss://) URL, got {url!r}") from None
    return text


def describe(exc: BaseException, url: str) -> str:
    """One line a user can act on; a refused handshake shows the publisher's answer (``HTTP 401: bad
    token``)."""
    if isinstance(exc, InvalidStatus):
        body = bytes(exc.response.body).decode("utf-8", "replace").strip().splitlines()
        answer = body[0][:120] if body else exc.response.reason_phrase
        return f"HTTP {exc.response.status_code}: {answer}"
    return describe_error(exc, url)


class RemoteFeed:
    """``runtime.feed`` of an attached console: its name, its counters, and what it is attached to."""

    name = ATTACH
    realtime = True
    stopped = False
    closed_universe = False  # the publisher's symbols are its lists' symbols: the first list shows all

    def __init__(self, url: str) -> None:
        self.url = url
        self.counters = FeedCounters(ATTACH)
        self.source = ""  # the publisher's feed, from its hello
        self.symbols: tuple[str, ...] = ()

    def universe(self) -> tuple[str, ...]:
        return self.symbols

    @property
    def market(self) -> str:
        """The publisher's feed once its hello arrived: an attached console keeps positions under it."""
        return self.source or self.name

    def now_ns(self) -> int:
        return time.time_ns()


class RemoteRuntime(ViewOnlyRuntime):
    """A runtime fed by a publisher's broadcast (see the module docstring)."""

    #: seconds without a frame before the publisher is reported stale; twice that and it reconnects
    #: (``feeds.attach.stale_after``)
    stall_s: float = 15.0
    open_timeout: float = 10.0

    def __init__(self, url: str, token: str | None = None, *, backoff: Backoff | None = None) -> None:
        self.url = normalize_url(url)
        self.where = urlsplit(self.url).netloc.rpartition("@")[2]
        self.feed = RemoteFeed(self.url)
        self.watch: tuple[str, ...] = ()
        self.outputs: tuple[str, ...] = ()
        self.interval = ""
        self.backoff = backoff or Backoff()
        self._sleep = asyncio.sleep  # the wait between attempts, replaceable in tests
        self._token = token or None
        self._told: dict[str, None] = {}  # the symbols the console knows of: watch at run, then announced

    def __repr__(self) -> str:  # never the token
        return f"RemoteRuntime({self.url!r}, token={'set' if self._token else 'none'})"

    @property
    def token_in_clear(self) -> bool:
        """True when the token would cross the network unencrypted: ``ws://`` to a host that is not this
        machine (decided on its addresses, see ``engine.addresses``)."""
        parts = urlsplit(self.url)
        return bool(self._token) and parts.scheme == "ws" and not is_loopback(parts.hostname or "")

    def _connect(self) -> connect:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        return connect(self.url, additional_headers=headers, open_timeout=self.open_timeout,
                       ping_interval=20, ping_timeout=20, close_timeout=2, max_size=2**24,
                       compression=None, logger=_protocol_log)

    async def handshake(self, timeout: float = 5.0) -> None:
        """Connect once, read the publisher's hello (its symbols, outputs and interval: ``watch``,
        ``outputs``, ``interval``) and hang up; AttachError with the reason when that fails."""
        try:
            async with asyncio.timeout(timeout), self._connect() as ws:
                raw = await ws.recv()
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise AttachError(describe(exc, self.url)) from None
        try:
            hello = decode(raw)
        except FrameError:
            hello = None
        if not isinstance(hello, Hello):
            raise AttachError(f"{self.where} is not a tickdeck broadcast (it did not say hello)")
        self._hello(hello)

    async def run(self, on_update: Callable[[Update], None],
                  on_status: Callable[[FeedStatus], None]) -> None:
        """Receive until cancelled, reconnecting with backoff; callbacks run on the event loop."""
        self._told = dict.fromkeys(self.watch)  # the console opens with these: only later ones are news
        first = True
        while True:
            if not first:
                self.feed.counters.reconnects += 1
            first = False
            on_status(FeedStatus(ATTACH, "connecting", f"to {self.where}"))
            ws: ClientConnection | None = None
            code = CloseCode.NORMAL_CLOSURE  # 1001 when the console goes away (as engine.feeds.ws)
            try:
                ws = await self._connect()
                await ws.send(json.dumps(SUBSCRIBE))
                await self._read(ws, on_update, on_status)
                reason = "the connection ended"
            except asyncio.CancelledError:
                code = CloseCode.GOING_AWAY
                raise
            except (OSError, WebSocketException, TimeoutError, Stalled) as exc:
                reason = describe(exc, self.url)
                why, detail = "", ""
                if ws is not None and isinstance(exc, ConnectionClosed):  # it ended: no stall of ours
                    why, detail = cut_short(ws)
                if why:  # a frame lost half-way: counted as a malformed one is
                    self.feed.counters.bad_message(why, f"{self.where}: {detail}")
                    reason = f"{self.where} closed the connection {CUT_SHORT[why]}"
            except BaseException:
                code = CloseCode.INTERNAL_ERROR
                raise
            finally:
                if ws is not None:  # bounded by close_timeout; nothing to do when already closed
                    await ws.close(code)
            delay = self.backoff.next()
            on_status(FeedStatus(ATTACH, "reconnecting", reason, retry_in=delay))
            await self._sleep(delay)

    async def _read(self, ws: ClientConnection, on_update: Callable[[Update], None],
                    on_status: Callable[[FeedStatus], None]) -> None:
        stale = False
        while True:
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(self.stall_s):
                    raw = await ws.recv()
            except TimeoutError:
                if stale:
                    raise Stalled(f"nothing from {self.where} for {2 * self.stall_s:g} s") from None
                stale = True
                on_status(FeedStatus(ATTACH, "stale", f"nothing from {self.where} for {self.stall_s:g} s"))
                continue
            if stale:
                stale = False
                on_status(FeedStatus(ATTACH, "live", self._live_reason()))
            self._take(raw, on_update, on_status)

    def _take(self, raw: str | bytes, on_update: Callable[[Update], None],
              on_status: Callable[[FeedStatus], None]) -> None:
        counters = self.feed.counters
        counters.messages += 1
        try:
            frame = decode(raw)
        except FrameError as exc:
            counters.bad_message(str(exc), raw)
            return
        if isinstance(frame, Snapshot):
            new = self._new(q.symbol for q in frame.market.quotes)
            on_update(Update((), frame.market, frame.health, new_symbols=new))
        elif isinstance(frame, Signal):
            on_update(Update((frame,), None))
        elif isinstance(frame, FeedStatus):
            on_status(self._forward(frame))
        elif isinstance(frame, SymbolsChanged):
            self.watch = self.feed.symbols = frame.symbols
            self._announce(frame.symbols, on_update)
        elif isinstance(frame, Hello):
            self._hello(frame)
            self.backoff.reset()
            self._announce(frame.symbols, on_update)
            on_status(FeedStatus(ATTACH, "live", self._live_reason()))
        elif isinstance(frame, Error):
            log.warning("attach: %s did not take a message: %s", self.where, frame.message)

    def _new(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """Those of ``symbols`` the console was not told of (now they count as told), up to MAX_TOLD."""
        told = self._told
        new = [s for s in dict.fromkeys(symbols) if s not in told][:max(0, MAX_TOLD - len(told))]
        told.update(dict.fromkeys(new))
        return tuple(new)

    def _announce(self, symbols: Iterable[str], on_update: Callable[[Update], None]) -> None:
        new = self._new(symbols)
        if new:  # before the snapshot that first carries their quotes
            on_update(Update((), None, new_symbols=new))

    def _hello(self, hello: Hello) -> None:
        self.feed.source = hello.feed
        self.watch = self.feed.symbols = hello.symbols
        self.outputs = hello.outputs
        self.interval = hello.interval

    def _live_reason(self) -> str:
        return f"{self.feed.source or 'a publisher'} via {self.where}"

    def _forward(self, status: FeedStatus) -> FeedStatus:
        """The publisher's feed status, as the attached feed's, its reason naming the publisher's feed."""
        text = f"{status.feed}: {status.reason}" if status.reason else f"{status.feed} via {self.where}"
        return FeedStatus(ATTACH, status.state, text, retry_in=status.retry_in, at_ns=status.at_ns,
                          symbols=status.symbols)
