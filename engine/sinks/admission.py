"""Who may open a connection to the ``websocket`` sink, and what a refused client is told.

Checked at the opening handshake, before any WebSocket frame, in this order:

1. an address that failed ``MAX_FAILURES`` handshakes within ``WINDOW_S`` seconds is answered HTTP 429
   Too Many Requests with ``Retry-After`` until that window ends (RFC 6585, section 4), and its token is
   not even compared: guessing is throttled to ``MAX_FAILURES`` tries a minute per address;
2. past ``max_clients`` connections the handshake is refused with HTTP 503 Service Unavailable,
   ``Retry-After`` and a body saying why. RFC 6455, section 4.2.2 lets a server refuse the upgrade with
   any HTTP status; 503 is the one for a temporary overload (RFC 9110, section 15.6.4), and the one the
   websockets library itself answers while its server shuts down, so clients treat it as "try again";
3. with a token, a request without it or with another one is refused with HTTP 401 and
   ``WWW-Authenticate: Bearer`` (RFC 6750, section 3); this counts as a failure of its address.

Refusals are counted (``refused``, ``throttled``, ``full``) and logged at most once per client address
per ``WINDOW_S`` (a client retrying in a loop must not flood the log): the next line says how many were
left out. Addresses are tracked in a table of at most ``MAX_ADDRESSES`` entries, the least recently seen
dropped first; a successful handshake clears its address's failures. Tokens are never logged.
"""

from __future__ import annotations

import collections
import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers

from engine.sinks.defaults import MIN_WEBSOCKET_TOKEN

log = logging.getLogger("tickdeck.sinks.websocket")

MAX_FAILURES = 5  # failed handshakes from one address within WINDOW_S before it is throttled
WINDOW_S = 60.0  # the throttling window, and the interval between two log lines about one address
MAX_ADDRESSES = 4096  # client addresses remembered (about 200 bytes each)
FULL_RETRY_S = 5  # Retry-After of a 503 (too many clients)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP answer instead of the upgrade."""

    status: HTTPStatus
    body: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Address:
    window_start: float
    failures: int = 0  # within the current window
    logged_at: float = -math.inf
    unlogged: int = 0  # refusals since the last log line


class Admission:
    """The handshake policy of one sink (see the module docstring). ``clock`` is for tests."""

    def __init__(self, sink: str, token: str | None, max_clients: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        if token is not None and len(token) < MIN_WEBSOCKET_TOKEN:
            raise ValueError(f"the token must have at least {MIN_WEBSOCKET_TOKEN} characters")
        self.sink = sink
        self.max_clients = max_clients
        self._token = token.encode() if token else None
        self._clock = clock
        self._addresses: collections.OrderedDict[str, _Address] = collections.OrderedDict()
        self.refused = 0  # every refusal: bad or missing token, too many clients, throttled
        self.throttled = 0  # refused with 429
        self.full = 0  # refused with 503
        self.log_lines = 0

    @property
    def addresses(self) -> int:
        """Addresses in the table (at most ``MAX_ADDRESSES``)."""
        return len(self._addresses)

    def check(self, address: str, headers: Headers, path: str, connected: int) -> Refusal | None:
        """None to accept the handshake from ``address`` (an IP address) while ``connected`` clients are
        connected; otherwise the answer to give, counted and (at most once a window) logged."""
        now = self._clock()
        entry = self._entry(address, now)
        if entry.failures >= MAX_FAILURES:
            retry = max(1, math.ceil(entry.window_start + WINDOW_S - now))
            self.throttled += 1
            return self._refuse(address, entry, now, Refusal(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many failed handshakes from {address}; try again in {retry} s\n",
                (("Retry-After", str(retry)),)), "throttled")
        if connected >= self.max_clients:
            self.full += 1
            return self._refuse(address, entry, now, Refusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many clients: this server takes {self.max_clients} at most (max_clients); "
                "try again later\n", (("Retry-After", str(FULL_RETRY_S)),)),
                f"{self.max_clients} clients connected already")
        if self._token is None:
            return None
        given = _bearer(headers)
        if given is None:
            tokens = parse_qs(urlsplit(path).query).get("token")
            given = tokens[0] if tokens else None
        if given is None:
            why = "missing token"
        elif not hmac.compare_digest(given.encode(), self._token):
            why = "bad token"
        else:
            entry.failures = 0
            return None
        entry.failures += 1
        return self._refuse(address, entry, now, Refusal(
            HTTPStatus.UNAUTHORIZED, f"{why}\n", (("WWW-Authenticate", 'Bearer realm="tickdeck"'),)), why)

    def _entry(self, address: str, now: float) -> _Address:
        entry = self._addresses.get(address)
        if entry is None:
            entry = self._addresses[address] = _Address(window_start=now)
            while len(self._addresses) > MAX_ADDRESSES:
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(address)
            if now - entry.window_start >= WINDOW_S:
                entry.window_start, entry.failures = now, 0
        return entry

    def _refuse(self, address: str, entry: _Address, now: float, refusal: Refusal, why: str) -> Refusal:
        self.refused += 1
        if now - entry.logged_at < WINDOW_S:
            entry.unlogged += 1
            return refusal
        more = (f"; {entry.unlogged} more refusals from this address since the last line"
                if entry.unlogged else "")
        log.warning("sink %s: refused a client from %s (%s, HTTP %d)%s; at most one line a minute per "
                    "address", self.sink, address, why, refusal.status, more)
        entry.logged_at, entry.unlogged = now, 0
        self.log_lines += 1
        return refusal


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
