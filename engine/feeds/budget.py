"""What a WebSocket client may send per second, counted the way the exchanges count it.

Binance allows 5 incoming messages a second per connection and counts ping and pong frames as messages
("WebSocket Streams for Binance", General WSS information: "A message is considered: a PING frame, a PONG
frame, a JSON controlled message"); past that it drops the connection, and an IP dropped repeatedly is
banned. Coinbase Advanced Trade rate-limits unauthenticated messages at 8 a second per IP ("Advanced Trade
WebSocket Rate Limits"). A ``MessageBudget`` keeps every frame this client sends inside such a limit:

* requests (subscriptions, probes) and the client's own pings wait for room (``acquire``);
* pongs cannot wait (``websockets`` answers a server ping at once, and a late pong is a dead connection to
  the server), so they are only counted (``record``) and the requests leave room for them: the budget lets
  requests use ``limit`` of the server's allowance and no more, the rest is for pongs;
* the server counts frames when they *arrive*, so the window is a little longer than the server's second
  (``margin_s``): two frames sent just over a second apart may arrive just under one apart.

``budgeted_connection`` is the ``websockets`` connection class that counts its pongs and makes its
keepalive pings wait, so nothing the library sends on its own escapes the count.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event
from websockets.typing import DataLike

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class MessageBudget:
    """At most ``limit`` throttled frames in any ``window_s + margin_s``, counting the unthrottled ones."""

    def __init__(self, limit: int, window_s: float = 1.0, margin_s: float = 0.1,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if limit < 1 or not window_s > 0 or margin_s < 0:
            raise ValueError(f"a message budget needs limit >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.span_s = window_s + margin_s
        self.clock = clock
        self.sleep = sleep
        self.waits = 0  # times a frame had to wait for room
        self.sent_total = 0  # frames counted, pongs included
        # bounded: a frame older than the span is pruned before anything is added, and at most ``limit``
        # throttled frames fit in a span; pongs beyond that are one per server ping (Binance: every 20 s)
        self._sent: deque[float] = deque(maxlen=4 * limit + 16)

    def _prune(self) -> float:
        now = self.clock()
        while self._sent and self._sent[0] <= now - self.span_s:
            self._sent.popleft()
        return now

    def in_window(self) -> int:
        """Frames counted in the current span."""
        self._prune()
        return len(self._sent)

    def record(self) -> None:
        """Count a frame that went out without waiting (a pong)."""
        self._sent.append(self._prune())
        self.sent_total += 1

    async def acquire(self) -> None:
        """Wait until fewer than ``limit`` frames were counted in the span, then count one more."""
        while True:
            now = self._prune()
            if len(self._sent) < self.limit:
                break
            self.waits += 1
            # the oldest frame that must leave the span for this one to fit
            await self.sleep(self._sent[len(self._sent) - self.limit] + self.span_s - now)
        self._sent.append(self.clock())
        self.sent_total += 1

    def reset(self) -> None:
        """A new connection: the server counts per connection."""
        self._sent.clear()


def budgeted_connection(budget: MessageBudget) -> type[ClientConnection]:
    """A ``ClientConnection`` whose pongs are counted in ``budget`` and whose pings wait for room in it."""

    class BudgetedConnection(ClientConnection):
        def process_event(self, event: Event) -> None:
            # websockets' protocol has already queued the pong for a ping it parsed (protocol.py,
            # ``recv_frame``); this is where the connection learns of the frame, so count the pong here
            if isinstance(event, Frame) and event.opcode is Opcode.PING:
                budget.record()
            super().process_event(event)

        async def ping(self, data: DataLike | None = None) -> Awaitable[float]:
            await budget.acquire()  # the keepalive task's pings (and any other) wait for room
            return await super().ping(data)

    return BudgetedConnection
