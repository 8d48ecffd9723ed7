"""``[[sinks]]`` tables: checked at load into frozen ``SinkSpec`` objects, built into sinks at start.

Pure Python, like the rules: a config is validated before anything heavy is imported (the network sinks'
modules, which import aiohttp, are imported by ``build_sink`` only). Every mistake raises ``SinkError``
naming the sink (``sink #N``, its 1-based position in its file, its name when it has one, and its type),
the file and the key, and saying what is allowed.

Keys every sink takes::

    type = "jsonl"            # required; known: jsonl, webhook, telegram, metrics, websocket
    name = "audit"            # optional, unique ([a-z0-9_-]+); default "<type>-<N>"
    enabled = true
    symbols = ["BTCUSDT"]     # optional filters: only signals of these symbols,
    rules = ["rsi_oversold"]  #   of these rule ids (checked against the configured rules),
    directions = ["up"]       #   in these directions (up, down)
    warmup = false            # also signals fired on history (warm-up bars: the sim's backfill, bars
                              #   fetched or loaded at start); off by default, so a restart sends no
                              #   stale alerts

``jsonl``: one JSON line per signal appended to a file (``engine.sinks.jsonl``)::

    path = "signals.jsonl"    # required; a relative path is relative to the config file's directory
    fsync = false             # fsync after every write: durable, slower
    max_bytes = 104857600     # rotate before the file would grow past this (default 100 MiB)
    backups = 5               # rotated files kept: path.1 (newest) .. path.5

``webhook``: every signal POSTed as JSON (``Signal.to_dict()``) to a URL (``engine.sinks.webhook``)::

    url = "https://hooks.example.com/tickdeck"   # required; http or https
    headers = { Authorization = "Bearer ..." }   # optional extra request headers
    timeout = 5.0             # seconds per attempt
    retries = 5               # after the first attempt, on timeouts, connection errors, 5xx and 429
    backoff = 0.5             # first retry delay (s); doubles, with jitter, up to max_backoff
    max_backoff = 30.0        # a Retry-After from the server is honoured instead (up to 600 s)
    queue = 10000             # signals waiting to be sent, at most
    dead_letter = "webhook-1.dead.jsonl"   # default "<name>.dead.jsonl" next to the config file

A signal that cannot be delivered (a 4xx answer other than 429, retries used up, the queue full, still
queued when the sink closes) is appended to the dead-letter file, one JSON line with the reason; the few
cases where a dead letter is lost (the file's writer 100,000 lines behind, a failed write) are counted
and logged (``engine.sinks.http``).

``telegram``: every signal as a Bot API ``sendMessage`` (``engine.sinks.telegram``)::

    chat_id = 123456789       # required: a chat id, or "@channelname"
    token_env = "TICKDECK_TELEGRAM_TOKEN"  # the environment variable holding the bot token (the
                              #   default); the token itself never goes in a config file
    base_url = "https://api.telegram.org"
    timeout, retries, backoff, max_backoff, queue, dead_letter   # as for webhook

The token variable must be set (to ``<digits>:<letters>``) when the config of an enabled telegram sink is
loaded; errors name the variable, never its value.

``metrics``: a Prometheus endpoint, ``/metrics``, and ``/health`` (``engine.sinks.metrics``)::

    host = "127.0.0.1"        # the address to listen on
    port = 9464               # 0: any free port
    # /health is 200 while the feed is live, 503 otherwise; tickdeck_signals_total counts the signals
    # this sink's filter takes

``websocket``: a WebSocket server that broadcasts signals, snapshots and the feed's status to
``tickdeck attach`` and other clients (PROTOCOL.md describes the protocol)::

    host = "127.0.0.1"        # the address to listen on; token_env is required unless every address
                              #   it resolves to is loopback
    port = 8765               # 0: any free port
    fps = 10                  # snapshots a second to each client, at most (coalesced: the newest wins)
    max_queue = 1024          # frames waiting for one client; beyond that it is disconnected (code 1013)
    max_clients = 256         # connections at once; past that the handshake is refused (HTTP 503)
    token_env = "TICKDECK_WS_TOKEN"  # optional: the environment variable holding the token clients must
                              #   send (Authorization: Bearer, or ?token=); without it, HTTP 401

The token variable must be set, to a token of at least 16 characters, when the config of an enabled
websocket sink is loaded; errors name the variable, never its value.

Two sinks that listen (metrics, websocket) may not share a host and port; no two sinks may write the same
file (a jsonl path or a dead-letter file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.sinks.base import SignalFilter, Sink
from engine.sinks.jsonl import JsonlSink
from engine.sinks.table import (
    _NAME_HELP,
    COMMAND_LINE,
    SINK_TYPES,
    DeliverySettings,
    JsonlSettings,
    MetricsSettings,
    SinkError,
    SinkSpec,
    TableParser,
    TelegramSettings,
    WebhookSettings,
    WebsocketSettings,
)

__all__ = ["SINK_TYPES", "DeliverySettings", "JsonlSettings", "MetricsSettings", "SinkError", "SinkSpec",
           "TelegramSettings", "WebhookSettings", "WebsocketSettings", "build_sink", "build_sinks",
           "load_sinks", "signals_out_spec"]


def load_sinks(tables: Iterable[tuple[Mapping[str, Any], str | os.PathLike[str]]], *,
               rule_ids: Sequence[str] | None = None,
               signals_out: str | os.PathLike[str] | None = None,
               env: Mapping[str, str] | None = None) -> tuple[SinkSpec, ...]:
    """Check every (table, file) pair, in order, then add ``--signals-out`` (a jsonl sink of every signal).

    ``rule_ids``, when given, are the configured rules: a ``rules`` filter naming another id is an error.
    ``env`` (default ``os.environ``) is where a telegram sink's ``token_env`` must be set. Names must be
    unique, no two sinks may write the same file, and no two metrics sinks may listen on the same port.
    """
    environ = os.environ if env is None else env
    specs: list[SinkSpec] = []
    positions: dict[str, int] = {}
    for table, path in tables:
        file = os.fspath(path)
        position = positions[file] = positions.get(file, 0) + 1
        specs.append(TableParser(table, file, position, rule_ids, environ).spec())
    if signals_out is not None:
        specs.append(signals_out_spec(signals_out))
    names: dict[str, SinkSpec] = {}
    files: dict[Path, SinkSpec] = {}
    ports: dict[tuple[str, int], SinkSpec] = {}
    for spec in specs:
        if spec.name in names:
            first = names[spec.name]
            raise SinkError(spec.label, spec.file, "name", f"duplicate name {spec.name!r}; {first.label} of "
                            f"{first.file} has it already, and each sink needs {_NAME_HELP}")
        names[spec.name] = spec
        if not spec.enabled:
            continue
        for key, target in spec.files():
            if target in files:
                first = files[target]
                other = "--signals-out" if first.file == COMMAND_LINE else f"{first.label} of {first.file}"
                raise SinkError(spec.label, spec.file, key,
                                f"{target} is also written by {other}; two writers would interleave their "
                                "lines and rotations, so each sink needs its own file")
            files[target] = spec
        s = spec.settings
        if isinstance(s, MetricsSettings | WebsocketSettings) and s.port != 0:
            if (s.host, s.port) in ports:
                first = ports[s.host, s.port]
                raise SinkError(spec.label, spec.file, "port", f"{s.host}:{s.port} is also the address of "
                                f"{first.label} of {first.file}; each listening sink needs its own port")
            ports[s.host, s.port] = spec
    return tuple(specs)


def signals_out_spec(path: str | os.PathLike[str]) -> SinkSpec:
    """``--signals-out PATH``: every signal to a jsonl file with the default settings."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    return SinkSpec("jsonl", "signals-out", "--signals-out", COMMAND_LINE, SignalFilter(),
                    JsonlSettings(target))


def build_sink(spec: SinkSpec, *, env: Mapping[str, str] | None = None) -> Sink:
    """The sink ``spec`` describes, not started. The network sinks' modules are imported here, so a config
    check never imports aiohttp. ``env`` (default ``os.environ``) is where a telegram sink reads its token
    when it starts. A metrics sink has no figures yet: see ``engine.sinks.metrics.MetricsSink.figures``."""
    s = spec.settings
    if isinstance(s, JsonlSettings):
        return JsonlSink(s.path, fsync=s.fsync, max_bytes=s.max_bytes, backups=s.backups, name=spec.name,
                         filter=spec.filter)
    if isinstance(s, WebhookSettings):
        from engine.sinks.webhook import WebhookSink

        return WebhookSink(s.url, headers=dict(s.headers), name=spec.name, filter=spec.filter,
                           **_delivery(s.delivery))
    if isinstance(s, TelegramSettings):
        from engine.sinks.telegram import TelegramSink

        return TelegramSink(s.chat_id, token_env=s.token_env, base_url=s.base_url, env=env, name=spec.name,
                            filter=spec.filter, **_delivery(s.delivery))
    if isinstance(s, WebsocketSettings):
        from engine.sinks.broadcast import BroadcastSink

        environ = os.environ if env is None else env
        token = environ.get(s.token_env, "").strip() if s.token_env else ""
        return BroadcastSink(s.host, s.port, fps=s.fps, max_queue=s.max_queue, max_clients=s.max_clients,
                             token=token or None, token_env=s.token_env, name=spec.name, filter=spec.filter)
    from engine.sinks.metrics import MetricsSink

    return MetricsSink(s.host, s.port, name=spec.name, filter=spec.filter)


def _delivery(d: DeliverySettings) -> dict[str, Any]:
    return {"dead_letter": d.dead_letter, "timeout": d.timeout, "retries": d.retries, "backoff": d.backoff,
            "max_backoff": d.max_backoff, "queue": d.queue}


def build_sinks(specs: Iterable[SinkSpec], *, env: Mapping[str, str] | None = None) -> list[Sink]:
    """The enabled sinks, in order (not started)."""
    return [build_sink(spec, env=env) for spec in specs if spec.enabled]
