"""One ``[[sinks]]`` table checked into a frozen :class:`SinkSpec`: the settings each sink type takes and
their checks (the keys are documented in ``engine.sinks.config``, which loads and builds the sinks).
Pure Python: nothing here imports a network sink's module."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from engine.addresses import is_loopback
from engine.sinks.base import SignalFilter
from engine.sinks.defaults import (
    DEFAULT_BACKOFF_S,
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_BYTES,
    DEFAULT_METRICS_HOST,
    DEFAULT_METRICS_PORT,
    DEFAULT_QUEUE,
    DEFAULT_RETRIES,
    DEFAULT_TELEGRAM_URL,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOKEN_ENV,
    DEFAULT_WEBSOCKET_CLIENTS,
    DEFAULT_WEBSOCKET_FPS,
    DEFAULT_WEBSOCKET_HOST,
    DEFAULT_WEBSOCKET_PORT,
    DEFAULT_WEBSOCKET_QUEUE,
    MAX_BACKUPS,
    MAX_RETRIES,
    MAX_WEBSOCKET_CLIENTS,
    MAX_WEBSOCKET_FPS,
    MIN_WEBSOCKET_TOKEN,
    token_problem,
)

SINK_TYPES: tuple[str, ...] = ("jsonl", "webhook", "telegram", "metrics", "websocket")
PLANNED_TYPES: tuple[str, ...] = ()
COMMON_KEYS: tuple[str, ...] = ("type", "name", "enabled", "symbols", "rules", "directions", "warmup")
HTTP_KEYS: tuple[str, ...] = ("timeout", "retries", "backoff", "max_backoff", "queue", "dead_letter")
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "jsonl": ("path", "fsync", "max_bytes", "backups"),
    "webhook": ("url", "headers", *HTTP_KEYS),
    "telegram": ("chat_id", "token_env", "base_url", *HTTP_KEYS),
    "metrics": ("host", "port"),
    "websocket": ("host", "port", "fps", "max_queue", "max_clients", "token_env"),
}
DIRECTIONS: tuple[str, ...] = ("up", "down")
COMMAND_LINE = "the command line"

_NAME = re.compile(r"[a-z0-9_-]+")
_NAME_HELP = "a unique name of lowercase letters, digits, '_' and '-'"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_CHAT = re.compile(r"-?[0-9]+|@[A-Za-z][A-Za-z0-9_]{3,}")


class SinkError(ValueError):
    """A sink table that cannot be used. ``sink``, ``file`` and ``key`` say where; the message says why."""

    def __init__(self, sink: str, file: str, key: str | None, message: str) -> None:
        self.sink = sink
        self.file = file
        self.key = key
        where = f"{file}: {sink}" + (f", key {key!r}" if key is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class JsonlSettings:
    path: Path  # absolute
    fsync: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How the network sinks queue, retry and dead-letter (``webhook``, ``telegram``)."""

    dead_letter: Path  # absolute
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF_S
    max_backoff: float = DEFAULT_MAX_BACKOFF_S
    queue: int = DEFAULT_QUEUE


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    delivery: DeliverySettings
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may carry credentials


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    chat_id: int | str
    delivery: DeliverySettings
    token_env: str = DEFAULT_TOKEN_ENV  # the variable's name; the token is read when the sink starts
    base_url: str = DEFAULT_TELEGRAM_URL


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    host: str = DEFAULT_METRICS_HOST
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True, slots=True)
class WebsocketSettings:
    host: str = DEFAULT_WEBSOCKET_HOST
    port: int = DEFAULT_WEBSOCKET_PORT
    fps: float = DEFAULT_WEBSOCKET_FPS
    max_queue: int = DEFAULT_WEBSOCKET_QUEUE
    max_clients: int = DEFAULT_WEBSOCKET_CLIENTS
    token_env: str = ""  # the variable's name ("": no token); the token is read when the sink is built


Settings = JsonlSettings | WebhookSettings | TelegramSettings | MetricsSettings | WebsocketSettings


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One validated sink: what ``build_sink`` makes, and where it was configured (for messages)."""

    type: str
    name: str
    label: str  # "sink #2 (jsonl)", as messages name it
    file: str
    filter: SignalFilter
    settings: Settings
    enabled: bool = True

    def files(self) -> tuple[tuple[str | None, Path], ...]:
        """The files this sink appends to, each with the key that names it (None: the command line)."""
        s = self.settings
        if isinstance(s, JsonlSettings):
            return (("path" if self.file != COMMAND_LINE else None, s.path),)
        if isinstance(s, WebhookSettings | TelegramSettings):
            return (("dead_letter", s.delivery.dead_letter),)
        return ()


class TableParser:
    """One ``[[sinks]]`` table checked into a :class:`SinkSpec` (``SinkError`` for every mistake)."""

    def __init__(self, table: Mapping[str, Any], file: str, position: int,
                 rule_ids: Sequence[str] | None, env: Mapping[str, str]) -> None:
        self.file = file
        self.position = position
        self.rule_ids = rule_ids
        self.env = env
        self.label = f"sink #{position}"
        if not isinstance(table, Mapping):
            self.fail(None, f"must be a table of keys, got {type(table).__name__}")
        self.table = table

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise SinkError(self.label, self.file, key, message)

    def spec(self) -> SinkSpec:
        t = self.table
        known = ", ".join(SINK_TYPES)
        if "type" not in t:
            self.fail("type", f"required: one of {known}")
        kind = t["type"]
        if isinstance(kind, str) and kind.strip() and kind.isprintable():  # a message stays one line
            self.label = f"sink #{self.position} ({kind})"
        if kind in PLANNED_TYPES:
            self.fail("type", f"sink type {kind!r} is not available in this version; available: {known}")
        if kind not in SINK_TYPES:
            self.fail("type", f"unknown sink type {kind!r}; known: {known}")
        name = t.get("name", f"{kind}-{self.position}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.fail("name", f"must be {_NAME_HELP}, got {name!r}")
        named = f" {name!r}" if "name" in t else ""
        self.label = f"sink #{self.position}{named} ({kind})"
        allowed = COMMON_KEYS + TYPE_KEYS[kind]
        for key in t:
            if key not in allowed:
                self.fail(str(key), f"unknown key for a {kind} sink; allowed: {', '.join(allowed)}")
        enabled = self.boolean("enabled", True)
        filter = SignalFilter(symbols=self.names("symbols"), rules=self.rules(), directions=self.directions(),
                              warmup=self.boolean("warmup", False))
        settings: Settings
        if kind == "jsonl":
            settings = self._jsonl()
        elif kind == "webhook":
            settings = self._webhook(name)
        elif kind == "telegram":
            settings = self._telegram(name, enabled)
        elif kind == "websocket":
            settings = self._websocket(enabled)
        else:
            settings = self._metrics()
        return SinkSpec(kind, name, self.label, self.file, filter, settings, enabled)

    def _jsonl(self) -> JsonlSettings:
        return JsonlSettings(path=self.path("path", "the file to append signals to"),
                             fsync=self.boolean("fsync", False),
                             max_bytes=self.integer("max_bytes", DEFAULT_MAX_BYTES, 1),
                             backups=self.integer("backups", DEFAULT_BACKUPS, 0, MAX_BACKUPS))

    def _delivery(self, name: str) -> DeliverySettings:
        backoff = self.number("backoff", DEFAULT_BACKOFF_S)
        max_backoff = self.number("max_backoff", max(DEFAULT_MAX_BACKOFF_S, backoff))
        if max_backoff < backoff:
            self.fail("max_backoff", f"must be at least backoff ({backoff:g} s), got {max_backoff:g}")
        dead_letter = (self.path("dead_letter", "") if "dead_letter" in self.table
                       else self.relative(Path(f"{name}.dead.jsonl")))
        return DeliverySettings(dead_letter=dead_letter, timeout=self.number("timeout", DEFAULT_TIMEOUT_S),
                                retries=self.integer("retries", DEFAULT_RETRIES, 0, MAX_RETRIES),
                                backoff=backoff, max_backoff=max_backoff,
                                queue=self.integer("queue", DEFAULT_QUEUE, 1))

    def _webhook(self, name: str) -> WebhookSettings:
        if "url" not in self.table:
            self.fail("url", "required: the http(s) URL to POST signals to")
        return WebhookSettings(url=self.url("url"), delivery=self._delivery(name), headers=self.headers())

    def _telegram(self, name: str, enabled: bool) -> TelegramSettings:
        t = self.table
        if "chat_id" not in t:
            self.fail("chat_id", "required: the chat to send to (a chat id, or \"@channelname\")")
        chat = t["chat_id"]
        if isinstance(chat, bool) or not isinstance(chat, int | str):
            self.fail("chat_id", f"must be a chat id (an integer) or \"@channelname\", got {chat!r}")
        if isinstance(chat, str):
            chat = chat.strip()
            if not _CHAT.fullmatch(chat):
                self.fail("chat_id", f"must be a chat id (an integer) or \"@channelname\", got {chat!r}")
            if chat[0] != "@":
                chat = int(chat)
        token_env = t.get("token_env", DEFAULT_TOKEN_ENV)
        if not isinstance(token_env, str) or not _ENV_NAME.fullmatch(token_env):
            self.fail("token_env", "must be the name of an environment variable (letters, digits and '_'), "
                                   f"got {token_env!r}; the token itself never goes in a config file")
        if enabled and (problem := token_problem(self.env, token_env)) is not None:
            self.fail("token_env", problem)
        base_url = self.url("base_url", DEFAULT_TELEGRAM_URL, path=False)
        return TelegramSettings(chat_id=chat, delivery=self._delivery(name), token_env=token_env,
                                base_url=base_url)

    def _metrics(self) -> MetricsSettings:
        return MetricsSettings(host=self.host(DEFAULT_METRICS_HOST),
                               port=self.integer("port", DEFAULT_METRICS_PORT, 0, 65535))

    def _websocket(self, enabled: bool) -> WebsocketSettings:
        t = self.table
        host = self.host(DEFAULT_WEBSOCKET_HOST)
        fps = t.get("fps", DEFAULT_WEBSOCKET_FPS)
        if (isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps)
                or not 0 < fps <= MAX_WEBSOCKET_FPS):
            self.fail("fps", f"must be a number of snapshots a second > 0 and <= {MAX_WEBSOCKET_FPS:g}, "
                             f"got {fps!r}")
        token_env = t.get("token_env", "")
        if "token_env" in t and (not isinstance(token_env, str) or not _ENV_NAME.fullmatch(token_env)):
            self.fail("token_env", "must be the name of an environment variable (letters, digits and '_'), "
                                   f"got {token_env!r}; the token itself never goes in a config file")
        if enabled and token_env:
            value = self.env.get(token_env)
            if value is None or not value.strip():
                self.fail("token_env", f"the environment variable {token_env} (the token clients must send) "
                                       "is not set; set it, or leave token_env out to serve without one")
            if len(value.strip()) < MIN_WEBSOCKET_TOKEN:
                self.fail("token_env", f"the environment variable {token_env} holds a token of "
                                       f"{len(value.strip())} characters; use at least {MIN_WEBSOCKET_TOKEN} "
                                       "random ones, e.g. python -c 'import secrets; "
                                       "print(secrets.token_urlsafe(24))'")
        if enabled and not token_env and not is_loopback(host):  # decided on the addresses it stands for
            self.fail("token_env", f"required when host is {host!r}, which is not (or does not resolve "
                                   "only to) a loopback address: clients on other machines could read every "
                                   "signal; name the environment variable that holds their token")
        return WebsocketSettings(host=host, port=self.integer("port", DEFAULT_WEBSOCKET_PORT, 0, 65535),
                                 fps=float(fps), token_env=token_env,
                                 max_queue=self.integer("max_queue", DEFAULT_WEBSOCKET_QUEUE, 1),
                                 max_clients=self.integer("max_clients", DEFAULT_WEBSOCKET_CLIENTS, 1,
                                                          MAX_WEBSOCKET_CLIENTS))

    def host(self, default: str) -> str:
        host = self.table.get("host", default)
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
            self.fail("host", f"must be an address or host name to listen on, e.g. \"127.0.0.1\", "
                              f"got {host!r}")
        return host.strip()

    # --- values -------------------------------------------------------------------------------------
    def path(self, key: str, what: str) -> Path:
        if key not in self.table:
            self.fail(key, f"required: {what}")
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a file path (a non-empty string), got {value!r}")
        return self.relative(Path(value.strip()).expanduser())

    def relative(self, path: Path) -> Path:
        """``path`` made absolute: a relative path is relative to the config file's directory."""
        if not path.is_absolute():
            config_file = Path(self.file)
            base = config_file.parent if config_file.is_file() else Path.cwd()
            path = base / path
        return Path(os.path.abspath(path))

    def url(self, key: str, default: str | None = None, *, path: bool = True) -> str:
        value = self.table.get(key, default)
        what = "an http:// or https:// URL" + ("" if path else " with no path, query or fragment")
        if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
            self.fail(key, f"must be {what}, got {value!r}")
        text = value.strip()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises ValueError for a port out of range)
        except ValueError:
            self.fail(key, f"must be {what}, got {_shown_url(text)!r}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(key, f"must be {what}, got {_shown_url(text)!r}")
        if not path:
            if parts.path.strip("/") or parts.query or parts.fragment:
                self.fail(key, f"must be {what}, got {_shown_url(text)!r}")
            return text.rstrip("/")
        return text

    def headers(self) -> tuple[tuple[str, str], ...]:
        value = self.table.get("headers", {})
        if not isinstance(value, Mapping):
            self.fail("headers", "must be a table of header names and string values, "
                                 "e.g. headers = { Authorization = \"Bearer ...\" }")
        out: list[tuple[str, str]] = []
        for header, text in value.items():
            if not isinstance(header, str) or not _HEADER.fullmatch(header):
                self.fail("headers", f"{header!r} is not an HTTP header name")
            if header.lower() in ("content-length", "transfer-encoding", "host"):
                self.fail("headers", f"{header} is set by the sink itself")
            if not isinstance(text, str) or "\r" in text or "\n" in text:  # the value may be a secret
                self.fail("headers", f"the value of {header} must be a string on one line")
            out.append((header, text))
        return tuple(out)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.table.get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
            self.fail(key, f"must be {what}, got {value!r}")
        return int(value)

    def number(self, key: str, default: float) -> float:
        """A number of seconds > 0."""
        value = self.table.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or value <= 0):
            self.fail(key, f"must be a number of seconds > 0, got {value!r}")
        return float(value)

    def names(self, key: str) -> frozenset[str] | None:
        if key not in self.table:
            return None
        value = self.table[key]
        what = f"a non-empty list of {key[:-1]} names (leave the key out for every {key[:-1]})"
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
            self.fail(key, f"must be {what}, got {value!r}")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                self.fail(key, f"must be {what}; {item!r} is not a {key[:-1]} name")
        return frozenset(v.strip() for v in value)

    def rules(self) -> frozenset[str] | None:
        ids = self.names("rules")
        if ids is not None and self.rule_ids is not None:
            unknown = sorted(ids - set(self.rule_ids))
            if unknown:
                self.fail("rules", f"no rule with id {', '.join(map(repr, unknown))}; "
                                   f"configured rules: {', '.join(self.rule_ids) or 'none'}")
        return ids

    def directions(self) -> frozenset[str] | None:
        values = self.names("directions")
        if values is not None:
            wrong = sorted(values - set(DIRECTIONS))
            if wrong:
                self.fail("directions", f"must list directions out of {', '.join(DIRECTIONS)}, "
                                        f"got {', '.join(map(repr, wrong))}")
        return values


def _shown_url(url: str) -> str:
    """``url`` as an error may show it: scheme and host only, since a webhook's path or user info is often
    its secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url[:12] + ("..." if len(url) > 12 else "")
    host, slash, _ = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}" + ("/..." if slash else "")
