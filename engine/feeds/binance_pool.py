"""Binance's streams over as many connections as its rules need, read as one.

"WebSocket Streams for Binance" (General WSS information) sets the rules this module follows:

* "A single connection can listen to a maximum of 1024 streams": streams beyond that go to another
  connection (``STREAMS_PER_CONNECTION``), each filled before the next is opened.
* "WebSocket connections have a limit of 5 incoming messages per second. A message is considered: a PING
  frame, a PONG frame, a JSON controlled message": each connection has its own ``MessageBudget`` that
  counts its pongs and makes its requests and pings wait (``engine.feeds.budget``).
* "A serverShutdown event will be sent when the server is about to shutdown, resulting in disconnection.
  Please establish a new connection as soon as possible": ``replace`` opens the new connection at once,
  with the same streams, while the old one still delivers. The new connection's events are held until
  the old one is closed (by us, code 1000) and has handed over its last frame; then they follow. Every
  trade is on one connection or the other (the new one was subscribed before the old one closed), and a
  trade on both is dropped by the feed's ``TradeSequencer`` (ids increase by one per symbol), so nothing
  is lost or doubled, and the feed never goes through ``reconnecting``.
* A connection is probed with ``LIST_SUBSCRIPTIONS`` when it has been quiet (an illiquid symbol can be
  silent for minutes), so a quiet connection answers and a dead one is noticed.

To ``WsFeed`` the pool is one connection (``engine.feeds.ws.Connection``): ``recv`` gives the members'
frames in the order they were read, and any member that ends (other than one being replaced) ends the
pool, so the feed reconnects every stream with its usual backoff. Frames read and not yet taken are
bounded (``MAX_QUEUED``: readers wait), and so are the events held during a replacement (``MAX_HELD``:
past it the old connection is closed at once, whatever it had not yet delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from engine.feeds.budget import MessageBudget
from engine.feeds.ws import Stalled

log = logging.getLogger("tickdeck.feeds.binance")

STREAMS_PER_CONNECTION = 1024
MAX_QUEUED = 8192  # frames read from all connections and not yet decoded
MAX_HELD = 65_536  # a replacement connection's events held while the one it replaces drains
MAX_UNANSWERED = 4096  # requests remembered until answered (probes to a silent server, at most)
ANSWER_TIMEOUT_S = 10.0  # how long a replacement may take to have its subscriptions confirmed

Opener = Callable[[str, MessageBudget], Awaitable[ClientConnection]]


@dataclass(eq=False)
class Member:
    ws: ClientConnection
    budget: MessageBudget
    url_streams: list[str]
    active: set[str] = field(default_factory=set)  # streams it delivers, as far as we asked
    pending: set[int] = field(default_factory=set)  # request ids not answered yet
    held: list[str | bytes] | None = None  # events held while the connection it replaces drains
    retiring: bool = False  # being replaced: its end is expected
    last_frame: float = field(default_factory=time.monotonic)
    probed: float = 0.0
    reader: asyncio.Task[None] | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # set when nothing is pending


class _End:
    """A member's reader has ended; ``error`` ends the pool unless the member was being replaced."""

    def __init__(self, member: Member, error: BaseException | None) -> None:
        self.member = member
        self.error = error


class BinancePool:
    """One or more connections to Binance's combined-stream endpoint, read as one."""

    def __init__(self, base_url: str, opener: Opener, budget: Callable[[], MessageBudget], stall_s: float,
                 url_streams_max: int = 100, heartbeat_s: float | None = 5.0,
                 streams_per_connection: int = STREAMS_PER_CONNECTION) -> None:
        self.base_url = base_url
        self.opener = opener
        self.new_budget = budget
        self.stall_s = stall_s
        self.url_streams_max = url_streams_max
        self.heartbeat_s = heartbeat_s
        self.streams_per_connection = streams_per_connection
        self.members: list[Member] = []
        self.current: Member | None = None  # the member of the frame ``recv`` returned last
        self.replacements = 0  # connections replaced after a serverShutdown
        self.requests: dict[int, tuple[Member, str, list[str]]] = {}  # id -> (member, method, streams)
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[tuple[Member, str | bytes] | _End] = asyncio.Queue(MAX_QUEUED)
        self._failed: Member | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what WsFeed uses -----------------------------------------------------------------------------
    @property
    def protocol(self) -> Any:
        member = self._failed or self.current or (self.members[0] if self.members else None)
        return None if member is None else member.ws.protocol

    def url_for(self, streams: list[str]) -> str:
        named = streams[: self.url_streams_max]
        return f"{self.base_url}/stream" + (f"?streams={'/'.join(named)}" if named else "")

    async def open(self, streams: list[str]) -> None:
        """The first connection, ``streams`` named in its URL (at most ``url_streams_max``)."""
        await self._open_member(streams[: self.url_streams_max])
        if self.heartbeat_s is not None:
            self._spawn(self._probe_when_quiet())

    async def recv(self) -> str | bytes:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                if item.member.retiring:
                    continue  # replaced: its end was asked for
                self._failed = item.member
                raise item.error or ConnectionClosed(None, None)
            member, raw = item
            self.current = member
            return raw

    async def send(self, message: str) -> None:  # WsFeed's Connection; requests go through ``request``
        raise NotImplementedError("send requests through BinancePool.request")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        for task in list(self._tasks):
            task.cancel()
        for member in list(self.members):
            member.retiring = True
            await member.ws.close(code, reason)  # bounded by the connection's close_timeout
            if member.reader is not None:
                member.reader.cancel()
        self.members.clear()

    # --- subscriptions ---------------------------------------------------------------------------------
    def active(self) -> set[str]:
        return {s for m in self.members if not m.retiring for s in m.active}

    async def sync(self, wanted: list[str], new: list[str]) -> None:
        """Unsubscribe the streams not ``wanted`` (a URL may name some dropped while connecting), then
        place those of ``new`` that no connection delivers yet."""
        keep = set(wanted)
        for member in list(self.members):
            dropped = sorted(s for s in member.active if s not in keep)
            if dropped and not member.retiring:
                await self.request(member, "UNSUBSCRIBE", dropped)
        have = self.active()
        await self.place([s for s in dict.fromkeys(new) if s not in have])

    async def place(self, streams: list[str]) -> None:
        """Subscribe ``streams`` on the connections with room, opening more while some are left."""
        todo = list(streams)
        for member in list(self.members):
            room = self.streams_per_connection - len(member.active)
            if todo and room > 0 and not member.retiring:
                chunk, todo = todo[:room], todo[room:]
                await self.request(member, "SUBSCRIBE", chunk)
        while todo:
            chunk, todo = todo[: self.streams_per_connection], todo[self.streams_per_connection:]
            member = await self._open_member(chunk[: self.url_streams_max])
            if rest := chunk[self.url_streams_max:]:
                await self.request(member, "SUBSCRIBE", rest)

    async def remove(self, streams: list[str]) -> None:
        for member in list(self.members):
            gone = sorted(s for s in streams if s in member.active)
            if gone and not member.retiring:
                await self.request(member, "UNSUBSCRIBE", gone)

    async def request(self, member: Member, method: str, streams: list[str] | None = None) -> None:
        """Send one request on ``member`` within its budget; its answer comes back through ``answer``."""
        body: dict[str, Any] = {"method": method}
        if streams is not None:  # counted as done at once, so a concurrent call does not ask again
            body["params"] = streams
            if method == "SUBSCRIBE":
                member.active.update(streams)
            elif method == "UNSUBSCRIBE":
                member.active.difference_update(streams)
        await member.budget.acquire()
        body["id"] = request_id = next(self._ids)
        self.requests[request_id] = (member, method, streams or [])
        member.pending.add(request_id)
        if len(self.requests) > MAX_UNANSWERED:  # a server that stopped answering: forget the oldest
            oldest = next(iter(self.requests))
            self.requests.pop(oldest)[0].pending.discard(oldest)
        member.answered.clear()
        with contextlib.suppress(ConnectionClosed):  # a reconnect names every wanted stream again
            await member.ws.send(msgspec.json.encode(body).decode())

    def answer(self, request_id: int | None, refused: bool) -> tuple[str, list[str]]:
        """An answer arrived: the request it answers (method, streams); a refused SUBSCRIBE is undone."""
        if request_id is None or request_id not in self.requests:
            return "?", []
        member, method, streams = self.requests.pop(request_id)
        member.pending.discard(request_id)
        if not member.pending:
            member.answered.set()
        if refused and method == "SUBSCRIBE":
            member.active.difference_update(streams)
        return method, streams

    # --- a server shutdown ---------------------------------------------------------------------------
    def replace(self, member: Member | None) -> None:
        """Move ``member``'s streams to a new connection now (Binance announced its shutdown)."""
        if member is not None and member in self.members and not member.retiring:
            self._spawn(self._replace(member))

    async def _replace(self, old: Member) -> None:
        streams = sorted(old.active)
        try:
            new = await self._open_member(streams[: self.url_streams_max], hold=True)
        except (OSError, WebSocketException, TimeoutError) as exc:
            log.warning("binance: could not open a connection to replace the one shutting down (%s); "
                        "reconnecting when it closes", exc)
            return
        if rest := streams[self.url_streams_max:]:
            await self.request(new, "SUBSCRIBE", rest)
        if new.pending:  # streams named in the URL are subscribed by the handshake itself
            with contextlib.suppress(TimeoutError):  # unanswered: the old connection goes all the same
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    await new.answered.wait()
        await self._retire(old)
        await self._release(new)
        self.replacements += 1
        log.info("binance: moved %d stream(s) to a new connection before the server's shutdown",
                 len(streams))

    async def _retire(self, old: Member) -> None:
        """Close ``old`` and wait until its reader has queued its last frame."""
        if old.retiring:
            return
        old.retiring = True
        with contextlib.suppress(ValueError):
            self.members.remove(old)
        await old.ws.close()  # 1000; bounded by the connection's close_timeout
        if old.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(old.reader), self.stall_s)

    async def _release(self, member: Member) -> None:
        """Queue ``member``'s held events after everything queued so far; then it delivers as usual."""
        while member.held:
            await self._queue.put((member, member.held.pop(0)))
        member.held = None

    # --- connections -----------------------------------------------------------------------------------
    async def _open_member(self, url_streams: list[str], hold: bool = False) -> Member:
        budget = self.new_budget()
        ws = await self.opener(self.url_for(url_streams), budget)
        member = Member(ws, budget, url_streams, active=set(url_streams), held=[] if hold else None)
        self.members.append(member)
        member.reader = asyncio.get_running_loop().create_task(self._read(member), name="binance-reader")
        return member

    async def _read(self, member: Member) -> None:
        error: BaseException | None = None
        try:
            while True:
                try:  # a member silent for twice the stall time is dead (probes make live ones answer)
                    async with asyncio.timeout(2 * self.stall_s):
                        raw = await member.ws.recv()
                except TimeoutError:  # worded as WsFeed words it: whichever notices first, one reason
                    host = urlsplit(self.base_url).netloc
                    raise Stalled(f"no data from {host} for {2 * self.stall_s:g} s") from None
                member.last_frame = time.monotonic()
                if member.held is not None and raw[:10] in ('{"stream":', b'{"stream":'):
                    member.held.append(raw)  # an event; answers go on: they confirm the subscription
                    if len(member.held) >= MAX_HELD:
                        self._spawn(self._overflow(member))
                    continue
                await self._queue.put((member, raw))
        except asyncio.CancelledError:
            raise
        except (ConnectionClosed, Stalled, OSError, WebSocketException) as exc:
            error = exc
        await self._queue.put(_End(member, error))

    async def _overflow(self, member: Member) -> None:
        for old in [m for m in self.members if m is not member and not m.retiring and m.held is None]:
            if old.active & member.active:
                await self._retire(old)
        await self._release(member)

    async def _probe_when_quiet(self) -> None:
        assert self.heartbeat_s is not None
        quiet = min(self.heartbeat_s, self.stall_s / 2)
        while True:
            await asyncio.sleep(quiet / 2)
            now = time.monotonic()
            for member in list(self.members):
                if (not member.retiring and member.ws.state is State.OPEN
                        and now - max(member.last_frame, member.probed) >= quiet):
                    member.probed = now  # at most one probe per quiet interval, answered or not
                    await self.request(member, "LIST_SUBSCRIPTIONS")

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
