"""The ``tickdeck`` command line.

``tickdeck`` with no command starts the console; ``tickdeck indicators IN.csv`` computes indicators over
a CSV file; ``tickdeck bench`` runs the benchmarks. Everything heavy (textual, numpy, pandas, numba) is
imported only once a command needs it, so ``tickdeck --help`` answers at once.

User mistakes (a bad config value, a malformed CSV, a missing file) print one line on stderr and exit
with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine.config import CONFIG_DIR_VAR, Config, ConfigError, load_config
from engine.feeds.registry import FEED_NAMES

PROG = "tickdeck"
EXIT_USAGE = 2

_EPILOG = f"""\
configuration layers, highest precedence first (merged key by key):
  1. the flags above
  2. environment variables TICKDECK_<SECTION>_<KEY>, e.g. TICKDECK_UI_FPS=20
  3. the file given with --config PATH
  4. config.toml in your user config directory (or in ${CONFIG_DIR_VAR})
  5. the built-in defaults (the repository's config.toml lists them)

run '{PROG} COMMAND --help' for a command's options.
"""


THEME_CHOICES = ("dark", "light", "high-contrast", "ansi16")
"""The theme names ``--help`` lists: ``themes.THEME_NAMES``, written out because importing ``themes``
loads textual, which ``--help`` must not wait for (a test keeps the two equal)."""


def _feed_name(text: str) -> str:
    """``--feed``: a feed's name, or ``ccxt:<exchange id>``."""
    name, colon, exchange = text.partition(":")
    if name not in FEED_NAMES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(FEED_NAMES)}, "
                                         "or ccxt:EXCHANGE)")
    if colon and (name != "ccxt" or not exchange):
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (only the ccxt feed takes an exchange: "
                                         "ccxt:kraken)")
    return text


class _OneFile(argparse.Action):
    """``--file`` given twice is refused, not silently narrowed to the last one: the replay feed plays one
    file (several symbols go in one file, with a ``symbol`` column)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None:
            parser.error(f"{option_string} was given twice ({earlier}, {values}): the replay feed plays one "
                         "file; put several symbols in one file with a symbol column (or backtest several "
                         "files: tickdeck backtest A.csv B.csv)")
        setattr(namespace, self.dest, values)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, but never breaking a line inside a hyphenated word such as ``high-contrast``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and status 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tickdeck")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A terminal trading console: live feeds, incremental indicators, signals.",
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--config", metavar="PATH", help="a config file layered over your user config")
    parser.add_argument("--feed", metavar="NAME", type=_feed_name,
                        help=f"the market data feed: {', '.join(FEED_NAMES)} (ccxt:EXCHANGE, as ccxt:kraken, "
                             "picks the exchange)")
    parser.add_argument("--theme", metavar="NAME",
                        help=f"the console's colour theme: {', '.join(THEME_CHOICES)} (t cycles them)")
    parser.add_argument("--interval", metavar="I",
                        help="the bar interval, from 1s to 1d: 1s, 15s, 1m, 5m, 1h, 4h, 1d, ...")
    parser.add_argument("--file", metavar="PATH", action=_OneFile,
                        help="replay an OHLCV or tick file (CSV, Parquet, .jsonl[.gz]; one file, which may "
                             "hold several symbols); sets --feed replay")
    parser.add_argument("--speed", metavar="S", help="replay speed: 1 (real time), 10, 0.5, or max")
    parser.add_argument("--loop", action="store_true", default=None, help="replay the file over and over")
    parser.add_argument("--record", metavar="PATH",
                        help="record every tick the feed delivers (.parquet, .jsonl or .jsonl.gz); "
                             "an existing file is refused unless --force")
    parser.add_argument("--force", action="store_true", default=None,
                        help="with --record (or feed.record): replace an existing recording")
    parser.add_argument("--headless", action="store_true",
                        help="run the feed, engine and signals with no UI: signals as JSON lines on stdout, "
                             "status and a closing JSON summary on stderr; SIGTERM/SIGINT drain and exit 0")
    parser.add_argument("--signals-out", metavar="PATH",
                        help="with --headless: also append every signal to this JSON lines file "
                             "(rotated at 100 MiB, 5 backups)")
    parser.add_argument("--publish", metavar="nats://HOST:4222",
                        help="with --headless: publish signals, bars, status and snapshots to this NATS "
                             "JetStream bus (bus.url; README, Fleet)")
    parser.add_argument("--shard", metavar="K/N|auto",
                        help="with --headless: keep this engine's share of the feed's symbols, K of N (1/2, "
                             "2/2) or auto: shared with the live engines on the bus (bus.shard)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="with --headless: the log and status lines on stderr as text (default) or JSON")
    parser.add_argument("--status-every", metavar="S", type=float, default=None,
                        help="with --headless: seconds between status lines on stderr (default 10; 0: off)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    indicators = commands.add_parser(
        "indicators",
        help="compute the default indicators over an OHLCV CSV file",
        description="Read an OHLCV CSV (a timestamp column named date, time, datetime or timestamp, or "
                    "first and unnamed; columns open, high, low, close, volume in any case), feed the bars "
                    "one at a time through the streaming indicator engine and write the input columns "
                    "followed by one column per indicator output (empty while an indicator warms up).",
    )
    indicators.add_argument("input", metavar="IN.csv", help="the OHLCV file, oldest bar first")
    indicators.add_argument("-o", "--output", metavar="OUT.csv",
                            help="write the result here (all or nothing) instead of to standard output")
    backtest = commands.add_parser(
        "backtest", help="replay OHLCV files through the engine and score the signal rules",
        description="Replay OHLCV files (CSV or Parquet; one symbol per file, named by its stem, or a symbol "
                    "column) through the live engine and signal detector; per rule and direction: signals, "
                    "hit rate and mean/median forward return after 1, 5 and 20 bars (signed by direction) "
                    "against random entries, max adverse excursion within 20 bars, signals per 1,000 bars.")
    backtest.add_argument("files", nargs="+", metavar="FILE", help="OHLCV files of one bar interval")
    backtest.add_argument("--config", dest="backtest_config", metavar="PATH", help="a config with [[rules]]")
    backtest.add_argument("--rules", metavar="ID,...", help="test only these rule ids")
    backtest.add_argument("--seed", type=int, default=0, metavar="N", help="random baseline's seed (0)")
    backtest.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    backtest.add_argument("--csv", metavar="PATH", help="write every signal to this CSV file")
    _add_history(commands)
    bench = commands.add_parser("bench", help="measure the engine and print figures against the anchors")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--feeds", action="store_true",
                       help="measure feed -> engine throughput and latency instead of the indicators")
    bench.add_argument("--soak", nargs="?", const=600.0, type=float, metavar="SECONDS",
                       help="run the headless service on the sim at 50,000 ticks/s for SECONDS (600) and "
                            "report RSS slope, tasks, file descriptors and queue depth")
    bench.add_argument("--faults", nargs="?", const=180.0, type=float, metavar="SECONDS",
                       help="run the headless service against a local Binance-protocol server that "
                            "disconnects, stalls and sends garbage and duplicates, for SECONDS (180), and "
                            "check every trade, gap and status")
    bench.add_argument("--ui", nargs="?", const=60.0, type=float, metavar="SECONDS",
                       help="drive the real console headless with 1,000 symbols and a 20,000 ticks/s sim "
                            "for SECONDS (60): frame time, key latency, CPU, RSS, startup")
    bench.add_argument("--positions", action="store_true",
                       help="with --ui: a position on every symbol (the position columns, totals row and "
                            "valuation every frame)")
    bench.add_argument("--history", action="store_true",
                       help="40 symbols x 1,000 one-minute bars of history from a local Binance stand-in "
                            "that enforces Binance's weight limits: time until every bar is in the engine "
                            "and every row shows its indicators")
    bench.add_argument("--store", action="store_true",
                       help="what keeping bars on disk costs (append per bar, load time for 2,000 bars, "
                            "bytes per bar) for the bar store (SQLite), Parquet and DuckDB (if installed)")
    bench.add_argument("--load", nargs="?", const=500, type=int, metavar="CLIENTS",
                       help="the WebSocket broadcast sink with CLIENTS (500) local subscribers and a few "
                            "that never read: delivery latency, counts, slow clients cut off")
    bench.add_argument("--fleet", action="store_true",
                       help="4 headless engines x 1,000 sim symbols publishing to a local nats-server -js: "
                            "signals/s and bars/s through the bus, publish -> subscriber latency, the "
                            "server's CPU and RSS (--quick: 2 x 100)")
    bench.add_argument("--quick", action="store_true", help="with --fleet or --feeds: a short, small run")
    from console.positions_cmd import add_parser as add_positions  # argparse only: --help stays light

    add_positions(commands, FEED_NAMES)
    from console.sink_cmd import add_parser as add_sink

    add_sink(commands)
    attach = commands.add_parser(
        "attach", help="open the console on a headless instance's WebSocket broadcast, or on a fleet's bus",
        description="Open the console on the broadcast of a 'tickdeck --headless' whose config has a "
                    "[[sinks]] table of type \"websocket\": its symbols, prices, indicator columns, signals "
                    "and feed status, with no feed or engine here (numba is not needed). With "
                    "nats://HOST:PORT, on every engine publishing to that NATS bus (--publish): their "
                    "symbols in one watchlist, their signals once each, a row per engine in the "
                    "performance panel (credentials: [bus] creds_file or token_env). The console "
                    "reconnects by itself when the connection drops. "
                    "Options such as --config and --theme go before 'attach'.")
    attach.add_argument("url", metavar="ws://HOST:PORT|nats://HOST:PORT",
                        help="the publisher's address (ws:// or wss://), or a fleet's bus (nats:// or tls://)")
    attach.add_argument("--feed", dest="fleet_feed", metavar="NAME",
                        help="with nats://: only the engines of this feed")
    attach.add_argument("--interval", dest="fleet_interval", metavar="I",
                        help="with nats://: only the engines of this bar interval")
    token = attach.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="PATH",
                       help="read the publisher's token from this file (one line); by default it comes from "
                            "$TICKDECK_ATTACH_TOKEN, if set")
    token.add_argument("--token", metavar="T",
                       help="the token itself: every user of this machine can read it in the process list "
                            "(ps), so prefer --token-file or $TICKDECK_ATTACH_TOKEN")
    return parser


def _add_history(commands: argparse._SubParsersAction) -> None:
    """``tickdeck history`` and its three commands (``console.history_cmd`` runs them)."""
    history = commands.add_parser(
        "history", help="list, export or prune the bars stored from live feeds",
        description="The bar store keeps the closed bars of the live feeds (binance, coinbase, yahoo) "
                    "under history.store, so a restart starts warm. Options such as --config go before "
                    "'history'.")
    sub = history.add_subparsers(dest="history_command", metavar="COMMAND", title="commands", required=True)
    sub.add_parser("list", help="every stored feed, symbol and interval: bars, first and last time, bytes")
    export = sub.add_parser("export", help="write one symbol's stored bars as CSV or Parquet",
                            description="Write the stored bars of FEED SYMBOL as an OHLCV file that "
                                        "'tickdeck backtest', 'tickdeck indicators' (CSV) and --file read.")
    export.add_argument("feed", metavar="FEED", help="the feed the bars came from: binance, coinbase, yahoo")
    export.add_argument("symbol", metavar="SYMBOL", help="the symbol, as the feed names it")
    export.add_argument("--interval", metavar="I", help="the bar interval, when several are stored")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="FILE.csv or FILE.parquet (written all or nothing); default: CSV on stdout")
    prune = sub.add_parser("prune", help="delete old bars (by default: the retention and the size cap)")
    prune.add_argument("--older-than", metavar="D", help="a duration: 30d, 12h, 90m")
    prune.add_argument("--feed", metavar="F", help="only this feed's bars")
    prune.add_argument("--symbol", metavar="S", help="only this symbol's bars")



def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _files_problem(config: Config, force: bool) -> str:
    """A missing replay file or an unusable recording path, found before the screen switches.

    An existing recording is refused unless ``force``: recording onto it would silently destroy it
    (``engine.feeds.record`` says why a recording is not appended to)."""
    replaying = config.feed.name == "replay"
    if replaying:
        path = Path(config.feeds.replay.file)
        if not config.feeds.replay.file:
            return "the replay feed needs a file: --file PATH"
        if not path.is_file():
            return f"cannot replay {path}: no such file"
    if not config.feed.record:
        return "--force works with --record only" if force else ""
    from engine.feeds.record import RecorderError, recording_format

    target = Path(config.feed.record)
    try:
        recording_format(target)
    except RecorderError as exc:
        return str(exc)
    if not target.parent.resolve().is_dir():
        return f"cannot record to {target}: no directory {target.parent}"
    if target.is_dir():
        return f"cannot record to {target}: it is a directory"
    if replaying and target.resolve() == Path(config.feeds.replay.file).resolve():
        return f"cannot record to {target}: it is the file being replayed"
    if (target.exists() or target.is_symlink()) and not force:
        return (f"cannot record to {target}: the file exists; --force replaces it (or choose another "
                "name)")
    return ""


def _clear_recording(config: Config, force: bool) -> str:
    """With ``force``, remove the recording ``feed.record`` would replace; a problem, or ''."""
    target = Path(config.feed.record)
    if not (force and config.feed.record and (target.exists() or target.is_symlink())):
        return ""
    try:
        target.unlink()
    except OSError as exc:
        return f"cannot replace the recording {target}: {exc.strerror or exc}"
    return ""


def _attach(args: argparse.Namespace) -> int:
    """``tickdeck attach URL``: the publisher's hello gives the symbols, columns and interval; then the
    console opens on a ``RemoteRuntime`` (a refused token or an unreachable publisher is one line)."""
    given = {"--headless": args.headless or None, "--feed": args.feed, "--file": args.file,
             "--interval": args.interval, "--speed": args.speed, "--loop": args.loop, "--record": args.record,
             "--force": args.force,
             "--signals-out": args.signals_out, "--log-format": args.log_format,
             "--status-every": args.status_every}
    local = [flag for flag, value in given.items() if value is not None]
    if local:
        return _fail(f"{local[0]} does not apply to attach: the publisher runs the feed and the engine")
    if args.url.strip().lower().startswith(("nats://", "tls://")):
        return _attach_fleet(args)
    if args.fleet_feed is not None or args.fleet_interval is not None:
        return _fail("attach --feed and --interval choose engines on a bus: they work with nats:// only")
    import asyncio

    from engine.remote import TOKEN_VAR, AttachError, RemoteRuntime, attach_token

    try:
        remote = RemoteRuntime(args.url, token=attach_token(args.token, args.token_file))
    except ValueError as exc:  # a bad URL, or a TokenError naming where the token came from
        return _fail(str(exc))
    if args.token is not None:
        print(f"{PROG}: warning: --token shows the token to every user of this machine (ps); use "
              f"--token-file PATH or ${TOKEN_VAR} instead", file=sys.stderr)
    if remote.token_in_clear:
        print(f"{PROG}: warning: the token goes to {remote.where} over ws:// in clear text; use wss:// or an "
              f"SSH tunnel (ssh -L PORT:127.0.0.1:PORT HOST, then attach to ws://127.0.0.1:PORT)",
              file=sys.stderr)
    try:
        asyncio.run(remote.handshake())
    except AttachError as exc:
        return _fail(f"cannot attach to {remote.where}: {exc}")
    config = load_config(args.config, {"ui.theme": args.theme, "ui.columns": list(remote.outputs) or None,
                                       "engine.interval": remote.interval or None})
    remote.stall_s = config.feeds.attach.stale_after
    from console.app import run_app

    return run_app(config, remote, saved_theme=args.theme is None)


def _attach_fleet(args: argparse.Namespace) -> int:
    """``tickdeck attach nats://HOST:PORT``: the console on every engine publishing to the bus
    (``engine.bus.attach``); an unreachable bus or unusable credentials are one line."""
    if args.token is not None or args.token_file is not None:
        return _fail("a bus takes its credentials from [bus] creds_file or token_env, not "
                     "--token/--token-file")
    import asyncio

    from engine.bus.attach import FleetRuntime
    from engine.bus.connection import BusError, settings_of

    config = load_config(args.config)
    try:
        runtime = FleetRuntime(settings_of(config, args.url.strip()), feed=args.fleet_feed or "",
                               interval=args.fleet_interval or "")
        asyncio.run(runtime.handshake())
    except BusError as exc:
        return _fail(str(exc))
    config = load_config(args.config, {"ui.theme": args.theme, "ui.columns": list(runtime.outputs) or None,
                                       "engine.interval": runtime.interval or None})
    from console.app import run_app

    return run_app(config, runtime, saved_theme=args.theme is None)


def _run(args: argparse.Namespace) -> int:
    if args.command == "attach":
        return _attach(args)

    if args.command == "indicators":
        from console import indicators_cmd

        try:
            return indicators_cmd.run(args.input, args.output)
        except indicators_cmd.InputError as exc:
            return _fail(str(exc))

    if args.command == "backtest":
        from console import backtest_cmd

        try:
            return backtest_cmd.run(args)
        except backtest_cmd.BacktestError as exc:
            return _fail(str(exc))

    if args.command == "history":
        from console import history_cmd

        try:
            return history_cmd.run(args, load_config(args.config))
        except history_cmd.HistoryError as exc:
            return _fail(str(exc))

    if args.command == "sink":
        from console import sink_cmd

        return sink_cmd.run(args)
    if args.command == "positions":
        from console import positions_cmd

        try:
            feed = args.positions_feed or args.feed or load_config(args.config).feed.name
            return positions_cmd.run(args, feed)
        except positions_cmd.PositionsCommandError as exc:
            return _fail(str(exc))

    if args.command == "bench":
        if args.store:
            from bench.store import main as store_main

            return store_main(args)
        if args.ui is not None:
            from bench.ui import main as ui_main

            return ui_main(args)
        if args.soak is not None:
            from bench.soak import main as soak_main

            return soak_main(args)
        if args.faults is not None:
            from bench.faults import main as faults_main

            return faults_main(args)
        if args.load is not None:
            from bench.load import main as load_main

            return load_main(args)
        if args.history:
            from bench.history import main as history_main

            return history_main(args)
        if args.fleet:
            from bench.fleet import main as fleet_main

            return fleet_main(args)
        if args.feeds:
            from bench.feeds import main as feeds_main

            return feeds_main(args)
        from bench.indicators import main as bench_main

        return int(bench_main(args) or 0)

    headless_only = [flag for flag, value in (("--signals-out", args.signals_out),
                                              ("--publish", args.publish), ("--shard", args.shard),
                                              ("--log-format", args.log_format),
                                              ("--status-every", args.status_every)) if value is not None]
    if headless_only and not args.headless:
        return _fail(f"{headless_only[0]} works with --headless only")
    if args.shard is not None:
        from engine.bus.shards import ShardError, parse_shard

        try:
            parse_shard(args.shard)
        except ShardError as exc:
            return _fail(f"--shard {exc}")
    feed, _, exchange = (args.feed or ("replay" if args.file else "")).partition(":")
    config = load_config(
        args.config,
        {"feed.name": feed or None, "feeds.ccxt.exchange": exchange or None, "ui.theme": args.theme,
         "engine.interval": args.interval,
         "feeds.replay.file": args.file, "feeds.replay.speed": args.speed, "feeds.replay.loop": args.loop,
         "feed.record": args.record, "bus.url": args.publish, "bus.shard": args.shard},
    )
    # Checked here, before the screen switches, so a mistake is one line on the terminal.
    from engine.signals.rules import RuleError, load_rules

    try:
        load_rules(config.rules)
    except RuleError as exc:
        return _fail(str(exc))
    force = bool(args.force)
    if problem := _files_problem(config, force) or _clear_recording(config, force):
        return _fail(problem)
    if args.headless:
        from engine.headless import main as headless_main

        return headless_main(config, signals_out=args.signals_out, log_format=args.log_format or "text",
                             status_every=10.0 if args.status_every is None else args.status_every)
    from console.app import run_app

    result = run_app(config, saved_theme=args.theme is None)  # --theme wins over the one chosen with t
    return result if isinstance(result, int) else 0


def _stack_dumps() -> None:
    """A crash in a compiled kernel or a C extension prints every thread's Python stack on stderr instead
    of ending the process without a word (the console's screen would freeze as it was), and
    ``kill -USR1 PID`` prints them from a running process: the first facts about a hang, in a terminal
    or in the service's journal. faulthandler keeps the file descriptor, so it still reaches the terminal
    while Textual redirects ``sys.stderr``."""
    import faulthandler
    import signal

    with contextlib.suppress(ValueError, OSError, AttributeError):  # no usable stderr (pythonw, closed fd)
        faulthandler.enable(all_threads=True)
        if hasattr(signal, "SIGUSR1"):
            faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``tickdeck`` entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    _stack_dumps()
    try:
        return _run(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (``tickdeck indicators x.csv | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
