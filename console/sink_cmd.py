"""``tickdeck sink --from nats://HOST:4222 --config sinks.toml``: the signal sinks as a process of their own,
on a durable JetStream consumer of the fleet's signal stream (``engine.bus.consumer`` says how every
signal is delivered once, across restarts).

The config file holds ``[[sinks]]`` tables (jsonl, webhook, telegram; the same keys as the headless
service's, ``engine.sinks.config``), and optionally::

    [bus]                       # how to reach the bus (as in config.toml's [bus])
    creds_file = ""             # a NATS .creds file (relative: to this file)
    token_env = ""              # the environment variable holding a NATS token
    connect_timeout = 5.0       # seconds the first connection may take (then exit status 2)
    max_backoff = 30.0          # the longest wait between reconnection attempts

    [consumer]
    durable = "tickdeck-sink"   # the consumer's name: a restart with the same name resumes where it stopped
    subject = "tickdeck.signals.>"  # which signals (a subject filter, PROTOCOL.md "The bus")
    ack_wait = 30.0             # seconds the server waits for an ack before delivering again
    batch = 64                  # messages fetched and delivered at a time
    delivered = ""              # the journal of delivered ids ("": <durable>.delivered next to this file)

Standard error carries the log and, last, one JSON summary line. SIGTERM or SIGINT: the batch in hand is
delivered (``STOP_BUDGET_S`` at most, else left to be delivered again), the sinks close, exit status 0.
A mistake in the file, or a bus that cannot be reached at start: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2
STOP_BUDGET_S = 3.0
BUS_KEYS = {"creds_file": str, "token_env": str, "connect_timeout": float, "max_backoff": float}
CONSUMER_KEYS = {"durable": str, "subject": str, "ack_wait": float, "batch": int, "delivered": str}


class SinkConfigError(Exception):
    """One line for the user."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    sink = commands.add_parser(
        "sink", help="run the signal sinks on the fleet's bus (a durable NATS JetStream consumer)",
        description="Deliver every signal of the fleet's signal stream to the [[sinks]] of a config file "
                    "(webhook, telegram, jsonl), once each, acknowledging a signal only after its delivery. "
                    "A restarted process resumes where the last one stopped.")
    sink.add_argument("--from", dest="bus_url", metavar="nats://HOST:4222", required=True,
                      help="the bus (nats:// or tls://)")
    sink.add_argument("--config", dest="sink_config", metavar="sinks.toml", required=True,
                      help="[[sinks]] tables, and optional [bus] and [consumer] tables")
    sink.add_argument("--log-format", dest="sink_log_format", choices=("text", "json"), default="text")


def _typed(table: Any, keys: dict[str, type], section: str, file: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SinkConfigError(f"{file}: [{section}] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            raise SinkConfigError(f"{file}: [{section}] has no key {key!r} (known: {', '.join(keys)})")
        ok = (isinstance(value, int | float) and not isinstance(value, bool) if kind is float
              else isinstance(value, kind) and not isinstance(value, bool) if kind is int
              else isinstance(value, kind))
        if not ok or (kind in (int, float) and not (math.isfinite(value) and value > 0)):
            what = "string" if kind is str else "positive number"
            raise SinkConfigError(f"{file}: [{section}] {key} must be a {what}, got {value!r}")
        out[key] = value
    return out


def load(path: str) -> tuple[list[tuple[dict[str, Any], str]], dict[str, Any], dict[str, Any]]:
    """The sink tables, the [bus] and the [consumer] settings of ``path``; SinkConfigError otherwise."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SinkConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SinkConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"sinks", "bus", "consumer"}
    if unknown:
        raise SinkConfigError(f"{path}: unknown table {sorted(unknown)[0]!r} (known: sinks, bus, consumer)")
    sinks = data.get("sinks", [])
    if not isinstance(sinks, list) or not sinks:
        raise SinkConfigError(f"{path}: no [[sinks]] tables: nothing to deliver to")
    bus = _typed(data.get("bus", {}), BUS_KEYS, "bus", path)
    consumer = _typed(data.get("consumer", {}), CONSUMER_KEYS, "consumer", path)
    here = file.resolve().parent
    if bus.get("creds_file"):
        bus["creds_file"] = str(here / Path(bus["creds_file"]).expanduser())
    durable = consumer.get("durable", "tickdeck-sink")
    if not durable.replace("-", "").replace("_", "").isalnum():
        raise SinkConfigError(f"{path}: [consumer] durable must be letters, digits, '_' and '-', got "
                              f"{durable!r}")
    consumer["delivered"] = here / Path(consumer.get("delivered") or f"{durable}.delivered").expanduser()
    return [(t, str(file.resolve())) for t in sinks], bus, consumer


def run(args: argparse.Namespace) -> int:
    from engine.bus.connection import BusError, settings_from
    from engine.bus.consumer import ConsumerSettings, SignalConsumer, build_consumer_sinks, summary_line
    from engine.service_log import install_logging
    from engine.sinks.base import SinkGroup
    from engine.sinks.config import SinkError

    try:
        tables, bus, consumer = load(args.sink_config)
        settings = settings_from(args.bus_url, bus.get("creds_file", ""), bus.get("token_env", ""),
                                 connect_timeout=bus.get("connect_timeout", 5.0),
                                 max_backoff=bus.get("max_backoff", 30.0), name="tickdeck-sink")
        sinks = SinkGroup(build_consumer_sinks(tables))
    except (SinkConfigError, BusError, SinkError) as exc:
        print(f"tickdeck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    restore = install_logging(args.sink_log_format, sys.stderr)
    try:
        worker = SignalConsumer(settings, ConsumerSettings(**consumer), sinks, stop_budget=STOP_BUDGET_S)
        code, stopped_by = asyncio.run(_serve(worker, sinks))
    except (BusError, OSError) as exc:
        restore()
        print(f"tickdeck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    restore()
    print(summary_line(worker, sinks, stopped_by), file=sys.stderr, flush=True)
    return code


async def _serve(worker: Any, sinks: Any) -> tuple[int, str]:
    stopped_by = ["end"]
    loop = asyncio.get_running_loop()

    def stop(name: str) -> None:
        stopped_by[0] = name
        worker.request_stop(name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signal.Signals(signum).name)
    await worker.open()
    try:
        await sinks.start()
        try:
            await worker.run()
        finally:
            await sinks.close(1.0)
    finally:
        await worker.close()
    return EXIT_OK, stopped_by[0]
