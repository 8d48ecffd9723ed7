"""Connecting to the bus, bounded, and the streams the fleet needs. The only module that imports nats-py,
and only when :func:`connect` is called (a service without ``[bus] url`` never imports it).

nats-py's first connection, left to its defaults, tries again for minutes; :func:`connect` gives it
``connect_timeout`` seconds in all and turns every failure into one ``BusError`` line. Reconnection is
the caller's (``engine.bus.publisher``, ``engine.bus.consumer``): nats-py's own retries at a fixed
interval and reports nothing between attempts, where ours backs off (``engine.feeds.backoff``) and says
so in a status line.

Credentials: a ``.creds`` file (user JWT and nkey seed, NATS's decentralised auth) or a token read from
an environment variable. Neither the token, nor the file's content, nor a URL's user part appears in a
message or a log line (:func:`safe_url`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.bus.subjects import BARS, BARS_STREAM, SIGNALS, SIGNALS_STREAM
from engine.config_model import parse_duration

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from engine.config import Config

log = logging.getLogger("tickdeck.bus")

PING_S = 5  # a server that stops answering is noticed after 2 missed pings (nats-py's max_outstanding)


class BusError(Exception):
    """The bus cannot be used: one line for the user (exit status 2 at start)."""


@dataclass(frozen=True)
class BusSettings:
    url: str
    creds_file: str = ""
    token: str = field(default="", repr=False)
    connect_timeout: float = 5.0
    max_backoff: float = 30.0
    name: str = "tickdeck"  # the client's name, as the server's monitoring shows it

    @property
    def shown(self) -> str:
        return safe_url(self.url)

    @property
    def servers(self) -> list[str]:
        """The servers of ``url``: one, or a cluster's several, comma-separated."""
        return split_urls(self.url)


def split_urls(url: str) -> list[str]:
    """A cluster's URLs (``nats://a:4222,nats://b:4222``): a client tries each in turn, so an engine
    reconnects through whichever server is up when one is down."""
    return [part.strip() for part in url.split(",") if part.strip()]


def safe_url(url: str) -> str:
    """``scheme://host:port`` of each server of ``url``: what may be logged of it (never a user part)."""
    shown = []
    for one in split_urls(url) or [url]:
        parts = urlsplit(one)
        host = parts.hostname or ""
        shown.append(f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else ""))
    return ",".join(shown)


def settings_from(url: str, creds_file: str = "", token_env: str = "", *, connect_timeout: float = 5.0,
                  max_backoff: float = 30.0, name: str = "tickdeck",
                  env: Mapping[str, str] | None = None) -> BusSettings:
    """Checked settings; ``BusError`` names the key, the file or the variable (never a secret)."""
    for one in split_urls(url) or [url]:
        parts = urlsplit(one)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise BusError("the bus URL must be nats://HOST:PORT or tls://HOST:PORT (a cluster's several, "
                           f"comma-separated), got {safe_url(one)!r}")
        if parts.username or parts.password:
            raise BusError("the bus URL must not carry credentials (they would be logged with it): use "
                           "bus.creds_file or bus.token_env")
    environ = os.environ if env is None else env
    token = ""
    if token_env:
        token = environ.get(token_env, "").strip()
        if not token:
            raise BusError(f"bus.token_env names {token_env}, which is not set (or empty)")
    if creds_file and not Path(creds_file).is_file():
        raise BusError(f"bus.creds_file {creds_file} is not a readable file")
    return BusSettings(url, creds_file, token, connect_timeout, max_backoff, name)


def settings_of(config: Config, url: str | None = None) -> BusSettings:
    bus = config.bus
    return settings_from(url or bus.url, bus.creds_file, bus.token_env, connect_timeout=bus.connect_timeout,
                         max_backoff=bus.max_backoff)


Callback = Callable[[], Awaitable[None]]


async def connect(settings: BusSettings, *, on_closed: Callback | None = None,
                  timeout: float | None = None) -> Client:
    """A connected client, within ``timeout`` (default ``settings.connect_timeout``) seconds, else
    ``BusError``. nats-py does not reconnect it: when it loses the server it closes and ``on_closed`` runs."""
    try:
        import nats
    except ImportError:
        raise BusError("the bus needs nats-py: install tickdeck's fleet extra (pip install "
                       "'tickdeck[fleet]'; make run installs it)") from None
    from nats.aio.client import Client

    client = Client()
    # max_reconnect_attempts also bounds the first connection's attempts (nats-py's _select_next_server):
    # two, 0.1 s apart, then NoServersError with the cause in error_cb; the default is 60, 2 s apart
    options: dict[str, Any] = {"servers": settings.servers, "allow_reconnect": False, "name": settings.name,
                               "ping_interval": PING_S, "connect_timeout": max(settings.connect_timeout, 0.1),
                               "max_reconnect_attempts": 1, "reconnect_time_wait": 0.1}
    if settings.token:
        options["token"] = settings.token
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file

    errors: list[Exception] = []

    async def quiet(exc: Exception) -> None:  # nats-py logs every error itself otherwise
        errors[:] = [exc]
        log.debug("bus: %s", type(exc).__name__)

    options["error_cb"] = quiet
    if on_closed is not None:
        options["closed_cb"] = on_closed
    limit = settings.connect_timeout if timeout is None else timeout
    try:
        await asyncio.wait_for(client.connect(**options), limit)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _close_quietly(client)
        cause = errors[0] if errors else exc
        reason = f"no answer within {limit:g} s" if isinstance(cause, TimeoutError) else _reason(cause)
        raise BusError(f"cannot reach the bus at {settings.shown}: {reason}") from None
    return client


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _close_quietly(client: Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 1.0)
    except Exception:  # closing what never opened: nothing left to release
        log.debug("bus: closing a client that did not connect failed", exc_info=True)


@dataclass(frozen=True)
class Retention:
    signals_max_age: str = "30d"
    signals_max_bytes: int = 1024 * 2**20
    bars_max_age: str = "7d"
    bars_max_bytes: int = 4096 * 2**20
    duplicate_window: str = "2m"
    bars_max_per_subject: int = 0  # 0: no limit by count
    replicas: int = 1


def retention_of(config: Config) -> Retention:
    b = config.bus
    return Retention(b.signals_max_age, b.signals_max_bytes, b.bars_max_age, b.bars_max_bytes,
                     b.duplicate_window, b.bars_max_per_subject, b.replicas)


async def ensure_streams(js: JetStreamContext, retention: Retention) -> None:
    """Create the signal and bar streams, or update their limits to ``retention`` (another engine may
    have created them with others: the last one to start sets them, as the config says)."""
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    window = parse_duration(retention.duplicate_window) / 1e9
    per_subject = retention.bars_max_per_subject or -1  # JetStream's "no limit"
    for name, subjects, age, size, per in (
        (SIGNALS_STREAM, f"{SIGNALS}.>", retention.signals_max_age, retention.signals_max_bytes, -1),
        (BARS_STREAM, f"{BARS}.>", retention.bars_max_age, retention.bars_max_bytes, per_subject),
    ):
        config = StreamConfig(name=name, subjects=[subjects], storage=StorageType.FILE,
                              discard=DiscardPolicy.OLD, max_age=parse_duration(age) / 1e9, max_bytes=size,
                              max_msgs_per_subject=per, num_replicas=retention.replicas,
                              duplicate_window=min(window, parse_duration(age) / 1e9))
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
