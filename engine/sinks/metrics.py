"""The metrics sink: the headless service's figures for Prometheus (``/metrics``) and a health check
(``/health``), served by aiohttp on ``host:port`` (127.0.0.1:9464 by default).

``/metrics`` is the Prometheus text exposition format (version 0.0.4), a ``# HELP`` and a ``# TYPE`` line
before each family::

    tickdeck_ticks_total                       counter  ticks processed by the engine
    tickdeck_bars_total                        counter  bars closed
    tickdeck_signals_total{rule,direction}     counter  signals this sink took (its filter applies)
    tickdeck_bad_messages_total                counter  feed messages skipped as malformed
    tickdeck_reconnects_total                  counter  feed reconnections
    tickdeck_gaps_total                        counter  trades the feed knows it missed (trade id gaps)
    tickdeck_duplicates_total                  counter  duplicate trades the feed dropped
    tickdeck_refills_total                     counter  symbols re-run with missed trades fetched again
    tickdeck_lag_seconds{quantile="0.5"|"0.99"} gauge   receive-to-processed lag, recent batches
    tickdeck_queue_depth                       gauge    batches waiting for the engine
    tickdeck_rss_bytes                         gauge    resident memory of this process
    tickdeck_up                                gauge    1 when the feed is live, else 0
    tickdeck_portfolio_value                   gauge    market value of the feed's priced positions
    tickdeck_position_pnl{symbol}              gauge    unrealized P&L of each priced position

``/health`` answers 200 ``{"status": "ok", "feed": ..., "state": "live"}`` when the feed is live, and 503
otherwise (``status``: ``"unavailable"`` with the feed's state, ``"starting"`` before the service has
given the sink its figures, ``"error"`` when reading them failed).

The signal counts are the sink's own (it is a sink: every signal reaches it). Everything else comes from
the runtime, through ``figures``: a callable, run on the event loop at each request, that returns a
mapping with any of the keys in ``FIGURE_KEYS``; a missing key leaves its sample out (its HELP and TYPE
stay). The RSS is measured here when the figures do not give it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil
from aiohttp import web

from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, Sink, SinkStartError
from engine.sinks.defaults import DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT

log = logging.getLogger("tickdeck.sinks")

Figures = Mapping[str, Any]
FiguresProvider = Callable[[], Figures]

FIGURE_KEYS: dict[str, str] = {
    "feed": "str: the feed's name",
    "state": "str: the state of the feed's last whole-feed status (live, connecting, stale, ...)",
    "ticks": "int: ticks processed by the engine (cumulative)",
    "bars": "int: bars closed (cumulative)",
    "bad_messages": "int: malformed feed messages skipped (cumulative)",
    "reconnects": "int: feed reconnections (cumulative)",
    "gaps": "int: trades known to be missing, by trade id or sequence number (cumulative)",
    "duplicates": "int: duplicate trades dropped (cumulative)",
    "refills": "int: symbols re-run with the trades of a gap fetched again (cumulative)",
    "lag_p50_ms": "float: median receive-to-processed lag, milliseconds",
    "lag_p99_ms": "float: 99th percentile of that lag, milliseconds",
    "queue_depth": "int: batches waiting for the engine",
    "rss_bytes": "int, optional: resident memory (measured by the sink when absent)",
    "portfolio_value": "float, optional: the positions' market value (absent: no positions or prices)",
    "position_pnl": "mapping of symbol to float, optional: each priced position's unrealized P&L",
}
"""What ``figures()`` returns: key -> its type and meaning."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CLOSE_S = 1.0  # for requests in progress when the server stops


def escape_label(value: str) -> str:
    """A label value as the exposition format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


class Exposition:
    """Families of samples written in the text format."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str,
               samples: list[tuple[dict[str, str], float | None]]) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            shown = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{shown}}} {format_value(value)}" if shown
                              else f"{name} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class MetricsSink(Sink):
    """Serves ``/metrics`` and ``/health`` while started; counts the signals it is handed."""

    type = "metrics"

    def __init__(self, host: str = DEFAULT_METRICS_HOST, port: int = DEFAULT_METRICS_PORT, *,
                 figures: FiguresProvider | None = None, name: str = "metrics", filter: SignalFilter = ANY
                 ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {port}")
        super().__init__(name, filter)
        self.host = host
        self.port = port  # the configured port; ``bound_port`` is the one listened on (port 0: any)
        self.figures = figures  # set by the service once its runtime exists
        self.signals: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests = 0
        self.figure_errors = 0
        self._process = psutil.Process()
        self._sock: socket.socket | None = None
        self._bound: int | None = None  # the port listened on, kept after close for the summary
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._logged: set[str] = set()

    @property
    def bound_port(self) -> int:
        """The port listened on (port 0: the one the system chose); still known after ``close``, when the
        summary reads it, since the socket is gone by then."""
        if self._bound is None:
            raise RuntimeError(f"sink {self.name} was never started")
        return self._bound

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    # --- the sink ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError(f"sink {self.name} is already started")
        loop = asyncio.get_running_loop()
        self._sock = self._listen()  # here, so a port in use is a start-up error
        self._bound = int(self._sock.getsockname()[1])
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/health", self._serve_health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=_CLOSE_S)
        self._task = loop.create_task(self._serve(self._runner, self._sock),
                                      name=f"tickdeck-sink-{self.name}")

    def _listen(self) -> socket.socket:
        where = f"{self.host}:{self.port}"
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except OSError as exc:
            raise SinkStartError(exc.errno, f"metrics sink {self.name}: cannot listen on {where}: "
                                            f"{exc.strerror or exc}") from None
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise SinkStartError(exc.errno, f"metrics sink {self.name}: cannot listen on {where}: "
                                            f"{exc.strerror or exc}") from None
        return sock

    async def _serve(self, runner: web.AppRunner, sock: socket.socket) -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    def enqueue(self, signal: Signal) -> None:
        self.signals[signal.rule, signal.direction] += 1

    async def close(self, timeout: float = 2.0) -> None:
        """Stop serving within ``timeout`` seconds: requests still in progress then are cut off."""
        deadline = time.monotonic() + max(timeout, 0.0)
        task, runner, sock = self._task, self._runner, self._sock
        self._task = None
        if task is not None:
            await asyncio.wait({task}, timeout=max(deadline - time.monotonic(), 0.0))
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            elif not task.cancelled() and task.exception() is not None:
                log.error("sink %s: the server did not start: %s", self.name, task.exception())
        if runner is not None and runner.server is not None:
            try:  # aiohttp waits up to its shutdown_timeout for requests in progress: not past ours
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                    await runner.cleanup()
            except TimeoutError:
                log.warning("sink %s: requests in progress when it closed were cut off", self.name)
        self._runner = None
        self._sock = None
        if sock is not None:
            sock.close()

    def stats(self) -> dict[str, Any]:
        port = self._bound if self._bound is not None else self.port
        return {**super().stats(), "address": f"{self.host}:{port}", "requests": self.requests,
                "figure_errors": self.figure_errors}

    # --- the figures ---------------------------------------------------------------------------------
    def read_figures(self) -> tuple[Figures | None, str]:
        """(figures, "") or (None, why: "starting" or "error")."""
        if self.figures is None:
            return None, "starting"
        try:
            figures = self.figures()
            if not isinstance(figures, Mapping):
                raise TypeError(f"figures() returned {type(figures).__name__}, not a mapping")
        except Exception:
            self.figure_errors += 1
            if "figures" not in self._logged:
                self._logged.add("figures")
                log.exception("sink %s: cannot read the runtime's figures (logged once, counted after)",
                              self.name)
            return None, "error"
        return figures, ""

    def render(self) -> str:
        """The ``/metrics`` text for the figures as they are now."""
        figures, _ = self.read_figures()
        f: Figures = figures or {}
        out = Exposition()
        counters = (("ticks", "Ticks processed by the engine."), ("bars", "Bars closed by the engine."))
        for key, help in counters:
            out.family(f"tickdeck_{key}_total", "counter", help, [({}, _number(f.get(key)))])
        signals = sorted(self.signals.items())
        out.family("tickdeck_signals_total", "counter", "Signals fired, by rule and direction.",
                   [({"rule": rule, "direction": direction}, n) for (rule, direction), n in signals])
        out.family("tickdeck_bad_messages_total", "counter", "Feed messages skipped as malformed.",
                   [({}, _number(f.get("bad_messages")))])
        out.family("tickdeck_reconnects_total", "counter", "Feed reconnections.",
                   [({}, _number(f.get("reconnects")))])
        out.family("tickdeck_gaps_total", "counter",
                   "Trades the feed knows it missed (gaps in trade ids or sequence numbers).",
                   [({}, _number(f.get("gaps")))])
        out.family("tickdeck_duplicates_total", "counter", "Duplicate trades the feed dropped.",
                   [({}, _number(f.get("duplicates")))])
        out.family("tickdeck_refills_total", "counter",
                   "Symbols re-run from the bar where a gap began, with the missed trades fetched again.",
                   [({}, _number(f.get("refills")))])
        lag = []
        for quantile, key in (("0.5", "lag_p50_ms"), ("0.99", "lag_p99_ms")):
            ms = _number(f.get(key))
            lag.append(({"quantile": quantile}, None if ms is None else ms / 1000.0))
        out.family("tickdeck_lag_seconds", "gauge", "Receive-to-processed lag over the recent batches.", lag)
        out.family("tickdeck_queue_depth", "gauge", "Batches waiting for the engine.",
                   [({}, _number(f.get("queue_depth")))])
        rss = _number(f.get("rss_bytes"))
        if rss is None:
            rss = self._rss()
        out.family("tickdeck_rss_bytes", "gauge", "Resident memory of the process.", [({}, rss)])
        out.family("tickdeck_up", "gauge", "1 when the feed is live, else 0.",
                   [({}, 1 if f.get("state") == "live" else 0)])
        out.family("tickdeck_portfolio_value", "gauge",
                   "Market value of the feed's priced positions (shorts negative), in the quote currency.",
                   [({}, _number(f.get("portfolio_value")))])
        pnl = f.get("position_pnl")
        out.family("tickdeck_position_pnl", "gauge", "Unrealized P&L of each priced position.",
                   [({"symbol": str(s)}, _number(v)) for s, v in sorted(pnl.items())]
                   if isinstance(pnl, Mapping) else [])
        return out.text()

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of ``/health``."""
        figures, why = self.read_figures()
        if figures is None:
            return 503, {"status": why, "feed": None, "state": None}
        state, feed = figures.get("state"), figures.get("feed")
        if state == "live":
            return 200, {"status": "ok", "feed": feed, "state": state}
        return 503, {"status": "unavailable", "feed": feed, "state": state}

    def _rss(self) -> int | None:
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return None

    # --- the endpoints -------------------------------------------------------------------------------
    async def _serve_metrics(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=self.render().encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    async def _serve_health(self, request: web.Request) -> web.Response:
        self.requests += 1
        status, body = self.health()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
