"""``tickdeck --headless``: the console's runtime with no UI, run as a service.

The same ``Runtime`` (feed -> bounded queue -> engine thread) as the app. Every signal goes, as one JSON
line (``Signal.to_dict()``), to standard output and to every configured sink (``[[sinks]]``, and
``--signals-out PATH``, a jsonl file of every signal). Standard error carries the log (text, or one JSON
object per line with ``--log-format json``), a status line every ``--status-every`` seconds (ticks/s,
signals, lag p99, RSS, reconnects, bad messages, gaps, duplicates, refills; ``history 12/40`` while
history loads; the portfolio's value, unrealized and day P&L when the feed has positions, see
``engine.positions.portfolio``) and, as its last line whatever the log format, a JSON summary of the
run (``ticks``, ``bars``, ``signals``, ``bad_messages``, ``reconnects``, ``gaps``, ``refills``,
``duplicates``, ``history_bars``, ``history_failed``, ``rest_errors``, ``runtime_s``, ``sinks``: each
sink's figures, ...).

With ``[bus] url`` (``--publish nats://HOST:4222``) the bus publisher (``engine.bus.publisher``) is one
more sink, connected before the run: signals, closed bars, the feed's status and snapshots go to NATS
JetStream; an unreachable bus at start is exit status 2.

A warm-up signal (fired on history at start, ``"warmup": true``) is not news: standard output and
``--signals-out`` skip it, and so does every sink that does not set ``warmup = true``.

Stopping: SIGTERM or SIGINT stops the feed (``StoppableFeed`` ends its stream), the runtime processes
what its queue already holds through the engine and returns as at the end of a replay, the sinks write
everything they were handed, and the process exits 0. Every step shares one deadline, ``STOP_BUDGET_S``
after the signal, so the sum cannot overrun it: the runtime drains until ``DRAIN_S`` at most (the sinks
keep ``SINKS_S``), the sinks drain until ``CLOSE_S`` before the deadline, and close (what cannot be sent
goes to dead-letter files, connections that do not close are reset) by the deadline. A second signal
skips the draining. A replay that reaches its end exits 0 the same way, its sinks given ``FINAL_FLUSH_S``
to drain and ``END_CLOSE_S`` to close. Exit status 1: the feed or the engine failed (the
summary says why); 2: a configuration or start-up mistake (one line on stderr, no summary).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

import psutil

from engine.config import Config
from engine.engine_thread import in_daemon_thread
from engine.feeds.base import FeedStatus
from engine.feeds.registry import FeedUnavailable, build_feed
from engine.positions.portfolio import Portfolio, PortfolioFigures, follow, portfolio_text, watch
from engine.positions.stored import state_path
from engine.precompile import compile_logged
from engine.runtime import Runtime, Update, build_engine
from engine.service_log import LOG_FORMATS, LogFormat, install_logging
from engine.signals.rules import RuleError, load_rules
from engine.sinks.base import Sink, SinkGroup
from engine.sinks.config import SinkError, SinkSpec, build_sinks, load_sinks
from engine.sinks.jsonl import JsonlStreamSink
from engine.snapshot import MarketSnapshot
from engine.stoppable_feed import StoppableFeed

if TYPE_CHECKING:  # imported by build_sinks only when configured: they bring aiohttp and websockets
    from engine.positions.book import PositionBook
    from engine.sinks.broadcast import BroadcastSink

log = logging.getLogger("tickdeck.headless")

__all__ = ["LOG_FORMATS", "Headless", "StoppableFeed", "install_logging", "main", "prepare", "serve"]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STOP_BUDGET_S = 3.5
"""Stop request to sinks closed. The requirement is an exit within 5 s: the rest is for the 0.1 s
``SinkGroup.close`` may add to cancel a sink that overran its time, the summary and the interpreter's exit
(0.2 to 0.4 s measured with every sink type; more on a loaded machine)."""
SINKS_S = 1.0  # of the budget, kept for the sinks however long the runtime takes to drain
DRAIN_S = STOP_BUDGET_S - SINKS_S  # after a stop request, how long the runtime may take to drain its queue
CLOSE_S = 0.5  # of the budget, kept for closing the sinks however long they take to drain
FINAL_FLUSH_S = 60.0  # after the feed ended by itself, how long the sinks may take to write what they hold
END_CLOSE_S = 2.0  # then, how long they may take to close


def _of_class(sinks: Iterable[Sink], module: str, name: str) -> list[Any]:
    """The sinks of class ``module.name``; none when that module was never imported, since only
    ``build_sinks`` creates them and it imports a network sink's module when one is configured."""
    cls = getattr(sys.modules.get(module), name, None)
    return [] if cls is None else [s for s in sinks if isinstance(s, cls)]



# --- the service -----------------------------------------------------------------------------------

class Headless:
    """One headless run: a runtime over a stoppable feed, its sinks, the status line and the summary."""

    def __init__(self, runtime: Runtime, feed: StoppableFeed, sinks: SinkGroup, *,
                 status_every: float = 10.0, portfolio: Portfolio | None = None) -> None:
        self.runtime = runtime
        self.portfolio = portfolio
        self.snapshot: MarketSnapshot | None = None  # the latest, for the portfolio's figures
        self.feed = feed
        self.sinks = sinks
        self.status_every = status_every
        self.signals = 0  # live signals; warm-up ones (fired on history) are counted apart
        self.warmup_signals = 0
        self.stopped_by = "end"  # "end" (the feed ended), "SIGTERM", "SIGINT" or "error"
        self.error = ""
        self.exit_code = EXIT_OK
        self._started = time.monotonic()
        self._stop_at: float | None = None
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._process = psutil.Process()
        self.feed_state = "connecting"
        self.broadcasts: list[BroadcastSink] = (_of_class(sinks, "engine.sinks.broadcast", "BroadcastSink")
                                                + _of_class(sinks, "engine.bus.publisher", "BusPublisher"))
        """Broadcast sinks and the bus publisher, which also take the frames."""

    def figures(self) -> dict[str, Any]:
        """What the metrics sink serves, read on the event loop at each request."""
        stats, counters, m = self.runtime.engine.stats, self.runtime.feed.counters, self.runtime.metrics
        p50, p99 = m.lag_percentiles()
        return {"feed": self.feed.name, "state": self.feed_state, "ticks": stats.ticks, "bars": stats.bars,
                "bad_messages": counters.bad_total, "reconnects": counters.reconnects, "gaps": counters.gaps,
                "duplicates": counters.duplicates, "refills": stats.refills, "lag_p50_ms": p50,
                "lag_p99_ms": p99, "queue_depth": m.queue_depth, "rss_bytes": self._process.memory_info().rss,
                **self._portfolio_figures()}

    def _portfolio_figures(self) -> dict[str, Any]:
        p = self.portfolio_figures()
        return {} if p is None else {"portfolio_value": p.value, "position_pnl": p.unrealized_by_symbol}

    def portfolio_figures(self) -> PortfolioFigures | None:
        """The positions valued at the latest snapshot (None: no positions, or no snapshot yet)."""
        if self.portfolio is None or not len(self.portfolio.book) or self.snapshot is None:
            return None
        return self.portfolio.figures(self.snapshot)

    # --- callbacks, on the event loop ----------------------------------------------------------------
    def on_update(self, update: Update) -> None:
        for sig in update.signals:  # stdout and every sink skip warm-up signals unless they opt in
            if sig.warmup:
                self.warmup_signals += 1
            else:
                self.signals += 1
            self.sinks.deliver(sig)
        if update.snapshot is not None:
            self.snapshot = update.snapshot
            for sink in self.broadcasts:
                sink.publish(update.snapshot, update.health)

    def on_status(self, status: FeedStatus) -> None:
        if not status.symbols:  # a per-symbol stale quote is not the feed's state
            self.feed_state = status.state
        for sink in self.broadcasts:
            sink.publish_status(status)
        level = logging.WARNING if status.state in ("stale", "reconnecting", "failed") else logging.INFO
        detail = f" ({status.reason})" if status.reason else ""
        if status.retry_in:
            detail += f", retrying in {status.retry_in:.1f} s"
        if status.symbols:
            more = " ..." if len(status.symbols) > 10 else ""
            detail += f", symbols {', '.join(status.symbols[:10])}{more}"
        log.log(level, "feed %s: %s%s", status.feed, status.state, detail,
                extra={"event": "feed_status", "fields": {"feed": status.feed, "state": status.state,
                                                          "reason": status.reason,
                                                          "symbols": list(status.symbols)}})

    def request_stop(self, name: str) -> None:
        """The first SIGTERM/SIGINT stops the feed and drains; a second one stops at once."""
        if self._stop_at is not None:
            log.warning("%s, a second stop signal: stopping now, without waiting for the queue", name)
            self._force.set()
            return
        self._stop_at = time.monotonic()
        self.stopped_by = name
        log.info("%s: stopping the feed, draining the queue through the engine, flushing the sinks", name,
                 extra={"event": "stop", "fields": {"signal": name}})
        self.feed.stop()
        self._stopping.set()

    def _left(self, within: float = STOP_BUDGET_S) -> float:
        """Seconds left of the first ``within`` seconds after the stop request (``STOP_BUDGET_S``: until
        the deadline every step of the stop shares)."""
        assert self._stop_at is not None
        return self._stop_at + within - time.monotonic()

    # --- the run ---------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until the feed ends, fails, or ``request_stop``; then flush and close the sinks (started
        by the caller). Returns the exit status."""
        self._started = time.monotonic()
        run = asyncio.create_task(self.runtime.run(self.on_update, self.on_status), name="tickdeck-runtime")
        status = asyncio.create_task(self._report_status(), name="tickdeck-status")
        force = asyncio.create_task(self._force.wait(), name="tickdeck-force-stop")
        stopping = asyncio.create_task(self._stopping.wait(), name="tickdeck-stop")
        positions = asyncio.create_task(self._watch_positions(), name="tickdeck-positions")
        try:
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():  # stop requested: the feed has ended; the queue goes through the engine
                await asyncio.wait({run, force}, timeout=max(self._left(DRAIN_S), 0.0),
                                   return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                log.error("the runtime had not drained its queue %.1f s after the stop request; batches "
                          "still queued are abandoned", time.monotonic() - (self._stop_at or 0.0))
                run.cancel()
                await asyncio.wait({run})
        finally:
            for task in (status, force, stopping, positions):
                task.cancel()
            await asyncio.wait({status, force, stopping, positions})
        if not run.cancelled() and (exc := run.exception()) is not None:
            self.stopped_by, self.error, self.exit_code = "error", f"{type(exc).__name__}: {exc}", EXIT_FAILED
            log.error("the runtime stopped: %s", self.error, exc_info=exc)
        await self._flush_sinks()
        return self.exit_code

    async def _flush_sinks(self) -> None:
        """Let the sinks write what they hold, then close them: after the feed ended, as long as it takes
        (``FINAL_FLUSH_S`` at most, then ``END_CLOSE_S`` to close); after a stop request (one may come
        meanwhile), until ``CLOSE_S`` before the stop deadline, and close them by the deadline."""
        drain = asyncio.create_task(self.sinks.drain(FINAL_FLUSH_S), name="tickdeck-drain-sinks")
        stopping = asyncio.create_task(self._stopping.wait(), name="tickdeck-stop")
        force = asyncio.create_task(self._force.wait(), name="tickdeck-force-stop")
        try:
            await asyncio.wait({drain, stopping, force}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done() and not force.done():
                await asyncio.wait({drain, force}, timeout=max(self._left() - CLOSE_S, 0.0),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (drain, stopping, force):
                task.cancel()
            await asyncio.wait({drain, stopping, force})
        if drain.cancelled() or drain.exception() is not None or not drain.result():
            log.error("some sinks had not written everything when the time was up (see the summary's sinks)")
        if self._stop_at is None:
            await self.sinks.close(END_CLOSE_S)
        else:
            left = max(self._left(), 0.0)
            await self.sinks.close(min(left, CLOSE_S) if self._force.is_set() else left)

    async def _watch_positions(self) -> None:
        if self.portfolio is not None:
            await watch(self.portfolio, self._positions_changed)

    async def _positions_changed(self, book: PositionBook) -> None:
        """A new book: its symbols subscribed (those the feed lacked), then handed to the detector."""
        assert self.portfolio is not None
        await follow(self.runtime, self.portfolio)
        await self.runtime.set_positions(book)

    async def _report_status(self) -> None:
        if not self.status_every > 0:
            return
        last_t, last_ticks = time.monotonic(), self.runtime.engine.stats.ticks
        while True:
            await asyncio.sleep(self.status_every)
            now, ticks = time.monotonic(), self.runtime.engine.stats.ticks
            rate = (ticks - last_ticks) / max(now - last_t, 1e-9)
            last_t, last_ticks = now, ticks
            fields = self.status_fields(rate)
            loading = (f"history {fields['history_done']:,}/{fields['history_total']:,}, "
                       if fields["history_done"] < fields["history_total"] else "")
            log.info("status: %s%s ticks/s, %s signals, lag p99 %.1f ms, RSS %.0f MB, %d reconnects, "
                     "%d bad messages, %d gaps, %d duplicates, %d refills%s", loading, f"{rate:,.0f}",
                     f"{self.signals:,}", fields["lag_p99_ms"], fields["rss_mb"], fields["reconnects"],
                     fields["bad_messages"], fields["gaps"], fields["duplicates"], fields["refills"],
                     portfolio_text(fields), extra={"event": "status", "fields": fields})

    def status_fields(self, ticks_per_s: float) -> dict[str, Any]:
        counters = self.runtime.feed.counters
        _, p99 = self.runtime.metrics.lag_percentiles()
        return {"ticks_per_s": round(ticks_per_s, 1), "ticks": self.runtime.engine.stats.ticks,
                "signals": self.signals, "lag_p99_ms": round(p99, 3),
                "queue_depth": self.runtime.metrics.queue_depth,
                "rss_mb": round(self._process.memory_info().rss / 2**20, 1),
                "reconnects": counters.reconnects, "bad_messages": counters.bad_total,
                "gaps": counters.gaps, "refills": self.runtime.engine.stats.refills,
                "duplicates": counters.duplicates, "history_done": counters.history_done,
                "history_total": counters.history_total,
                "uptime_s": round(time.monotonic() - self._started, 3),
                **(p.fields() if (p := self.portfolio_figures()) is not None else {})}

    def summary(self) -> dict[str, Any]:
        stats = self.runtime.engine.stats
        counters = self.runtime.feed.counters
        p50, p99 = self.runtime.metrics.lag_percentiles()
        out = _summary(
            self.feed.name, self.stopped_by, self.exit_code, time.monotonic() - self._started,
            ticks=stats.ticks, bars=stats.bars, signals=self.signals, bad_messages=counters.bad_total,
            reconnects=counters.reconnects, gaps=counters.gaps, refills=stats.refills,
            duplicates=counters.duplicates, late_ticks=stats.late_ticks, bad_ticks=stats.bad_ticks,
            lag_p50_ms=round(p50, 3), lag_p99_ms=round(p99, 3), coalesced=self.runtime.metrics.coalesced,
            sinks=self.sinks.stats(), warmup_signals=self.warmup_signals,
            history_bars=stats.history_bars, history_failed=counters.history_failed,
            rest_errors=sum(counters.rest_bad.values()))
        if self.error:
            out["error"] = self.error
        return out


# --- entry point -----------------------------------------------------------------------------------

class StartError(Exception):
    """A mistake found before the run starts: one line on stderr, exit status 2."""


def _sink_specs(config: Config, signals_out: str | os.PathLike[str] | None) -> tuple[SinkSpec, ...]:
    """The rules and sinks checked (fast, nothing built): a mistake is a StartError."""
    try:
        rule_ids = [rule.id for rule in load_rules(config.rules)]
        return load_sinks(config.sinks, rule_ids=rule_ids, signals_out=signals_out)
    except (RuleError, SinkError) as exc:
        raise StartError(str(exc)) from None


def _sink_group(specs: tuple[SinkSpec, ...], stdout_fd: int | None) -> SinkGroup:
    sinks: list[Sink] = [JsonlStreamSink(stdout_fd)] if stdout_fd is not None else []
    sinks += build_sinks(specs)
    return SinkGroup(sinks)


def build_runtime(config: Config) -> tuple[Runtime, StoppableFeed]:
    """The runtime over a stoppable feed. Slow: the first run of a version compiles the engine's kernels
    (up to a minute, its progress logged every few seconds), a replay loads its whole file; :func:`serve`
    runs it in a thread."""
    compile_logged(log)
    engine = build_engine(config)
    try:
        feed = StoppableFeed(build_feed(config, engine))
    except FeedUnavailable as exc:
        raise StartError(str(exc)) from None
    return Runtime(config, engine=engine, feed=feed), feed


def prepare(config: Config, *, signals_out: str | os.PathLike[str] | None = None,
            stdout_fd: int | None = 1) -> tuple[Runtime, StoppableFeed, SinkGroup]:
    """The runtime (over a stoppable feed) and the sinks (stdout first, not started) for ``config``,
    built in the caller's thread (the benchmarks' way; :func:`serve` builds the runtime in a thread)."""
    sinks = _sink_group(_sink_specs(config, signals_out), stdout_fd)
    return (*build_runtime(config), sinks)


def _summary(feed: str, stopped_by: str, exit_code: int, runtime_s: float,
             **figures: Any) -> dict[str, Any]:
    """The summary line: every figure is present in every summary (zero when nothing was processed),
    so whatever reads it (a log pipeline, a test, systemd's journal) finds the same keys every time."""
    out: dict[str, Any] = {
        "event": "summary", "ticks": 0, "bars": 0, "signals": 0, "warmup_signals": 0, "bad_messages": 0,
        "reconnects": 0, "gaps": 0, "refills": 0, "duplicates": 0, "runtime_s": round(runtime_s, 3),
        "late_ticks": 0, "bad_ticks": 0, "history_bars": 0, "history_failed": 0, "rest_errors": 0,
        "feed": feed, "stopped_by": stopped_by, "exit_code": exit_code, "lag_p50_ms": 0.0,
        "lag_p99_ms": 0.0, "coalesced": 0, "sinks": {},
    }
    unknown = figures.keys() - out.keys()
    assert not unknown, f"summary figures without a default: {sorted(unknown)}"
    out.update(figures)
    return out


def _summary_before_start(config: Config, stopped_by: str, runtime_s: float) -> dict[str, Any]:
    """The summary of a service stopped while its runtime was still being built: nothing processed."""
    return {**_summary(config.feed.name, stopped_by, EXIT_OK, runtime_s), "started": False}


async def serve(config: Config, *, signals_out: str | os.PathLike[str] | None = None,
                status_every: float = 10.0, stdout_fd: int | None = 1) -> tuple[int, dict[str, Any]]:
    """Run until the feed ends or a signal stops it; (exit status, summary).

    SIGTERM and SIGINT are handled from the start. The runtime is built in a thread (a first run
    compiles the engine's kernels, a replay loads its file), so the event loop hears a signal that
    arrives meanwhile: the service stops at once, exit status 0, with a summary of nothing processed
    (``"started": false``); the thread is a daemon, left to end with the process. A signal between the
    build and the start of the run stops the run as soon as it begins (the usual summary, status 0).
    """
    early: list[str] = []
    stop_early = asyncio.Event()

    def during_start(name: str) -> None:
        if len(early) < 2:  # the first stops, a second forces; more add nothing (a kill loop stays small)
            early.append(name)
        stop_early.set()

    handler: list[Callable[[str], None]] = [during_start]
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, lambda name: handler[0](name), signal.Signals(signum).name)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
            pass
    try:
        specs = _sink_specs(config, signals_out)
        began = time.monotonic()
        built = in_daemon_thread(build_runtime, config)
        stopping: asyncio.Future[Any] = asyncio.create_task(stop_early.wait(), name="tickdeck-stop-early")
        try:
            await asyncio.wait({built, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not built.done():
            log.info("%s during start-up: stopping before the feed started (the engine was still being "
                     "built)", early[0], extra={"event": "stop", "fields": {"signal": early[0]}})
            return EXIT_OK, _summary_before_start(config, early[0], time.monotonic() - began)
        runtime, feed = built.result()
        sinks = _sink_group(specs, stdout_fd)
        await _open_sharding(config, runtime, check=True)  # a mistake found before connecting
        if config.bus.url:  # connected before the sinks start: an unreachable bus is a start-up error
            sinks.sinks.append(await _open_bus(config, runtime))
        sharding = await _open_sharding(config, runtime)  # the feed's other symbols dropped before the run
        try:
            await sinks.start()
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise StartError(f"cannot open the signal sink{where}: {exc.strerror or exc}") from None
        described = ", ".join(f"{s.name} ({s.filter.describe()})" for s in sinks)
        log.info("headless: feed %s, %d rules, sinks: %s", config.feed.name,
                 len(runtime.engine.detector.rules), described or "none",
                 extra={"event": "start", "fields": {"feed": config.feed.name,
                                                     "sinks": [s.name for s in sinks]}})
        portfolio = Portfolio(state_path(), config.feed.name)
        await asyncio.to_thread(portfolio.refresh)
        await follow(runtime, portfolio)  # held symbols the feed's list lacks are subscribed, as a console's
        await runtime.set_positions(portfolio.book)  # before the run: warm-up signals see them too
        service = Headless(runtime, feed, sinks, status_every=status_every, portfolio=portfolio)
        for metrics in _of_class(sinks, "engine.sinks.metrics", "MetricsSink"):
            metrics.figures = service.figures
        for broadcast in service.broadcasts:
            broadcast.set_source(runtime.feed.name, runtime.watch, runtime.outputs, config.engine.interval)
        if sharding is not None:  # --shard auto moves symbols: hello, and the clients connected, follow
            for sink in _of_class(sinks, "engine.sinks.broadcast", "BroadcastSink"):
                sharding.on_change(sink.set_symbols)
        handler[0] = service.request_stop
        for name in early:
            service.request_stop(name)
        if sharding is not None:
            sharding.start()
        try:
            code = await service.run()
        finally:
            if sharding is not None:
                await sharding.close()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    summary = service.summary()
    if sharding is not None:
        summary["shard"] = sharding.stats()
    return code, summary


async def _open_bus(config: Config, runtime: Runtime) -> Sink:
    """The bus publisher (``engine.bus``, nats-py imported only now), connected within
    ``bus.connect_timeout`` seconds, else a StartError."""
    from engine.bus.connection import BusError
    from engine.bus.publisher import open_publisher

    try:
        return await open_publisher(config, runtime)
    except BusError as exc:
        raise StartError(str(exc)) from None


async def _open_sharding(config: Config, runtime: Runtime, check: bool = False) -> Any:
    """This engine's share of the feed (``engine.bus.sharding``; None: every symbol), else a StartError;
    ``check``: only find the mistakes."""
    if not config.bus.shard:
        return None
    from engine.bus.connection import BusError
    from engine.bus.sharding import check_sharding, open_sharding

    try:
        return check_sharding(config, runtime) if check else await open_sharding(config, runtime)
    except BusError as exc:
        raise StartError(str(exc)) from None


def main(config: Config, *, signals_out: str | os.PathLike[str] | None = None,
         log_format: LogFormat | str = "text", status_every: float = 10.0, stdout_fd: int | None = 1,
         stderr: TextIO | None = None) -> int:
    """Run the headless service for ``config``; returns the exit status (see the module docstring)."""
    err = stderr or sys.stderr
    if log_format not in LOG_FORMATS:
        print(f"tickdeck: --log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}", file=err)
        return EXIT_USAGE
    if not (math.isfinite(status_every) and status_every >= 0):
        print(f"tickdeck: --status-every must be a number of seconds >= 0 (0: off), got {status_every}",
              file=err)
        return EXIT_USAGE
    restore = install_logging("json" if log_format == "json" else "text", err)
    try:
        code, summary = asyncio.run(serve(config, signals_out=signals_out, status_every=status_every,
                                          stdout_fd=stdout_fd))
    except StartError as exc:
        restore()
        print(f"tickdeck: {exc}", file=err)
        return EXIT_USAGE
    except BaseException:
        restore()
        raise
    if log_format == "text":
        log.info("stopped (%s): %s ticks, %s bars, %s signals in %.1f s", summary["stopped_by"],
                 f"{summary['ticks']:,}", f"{summary['bars']:,}", f"{summary['signals']:,}",
                 summary["runtime_s"])
    restore()
    print(json.dumps(summary, default=str), file=err, flush=True)  # the last line on stderr
    return code
