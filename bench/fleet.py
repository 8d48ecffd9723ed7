"""``tickdeck bench --fleet [--quick]``: a fleet of headless engines publishing to one NATS JetStream
server on this machine, and what goes through the bus.

The run starts ``nats-server -js`` on 127.0.0.1 (``bench.servers.nats``, as the fleet's tests do), then
``ENGINES`` headless engines as separate processes (``tickdeck --headless --publish nats://...``), each on
its own sim (``SYMBOLS`` symbols, its own seed, so the engines' signals differ and none is removed as a
duplicate) with 1 s bars. Once every engine has published a snapshot with ticks in it, and after a short
warm-up (the sims' backfill bars go out at start), a measured window of ``WINDOW_S`` seconds:

- signals/s and bars/s through the bus: the growth of the JetStream streams' message counts
  (``TICKDECK_SIGNALS``, ``TICKDECK_BARS``: stream info at both ends of the window) over its length, so
  only what the server stored counts;
- publish -> subscriber latency: a core NATS subscriber in this process, on ``tickdeck.signals.>`` and
  ``tickdeck.snapshots.>``, takes its receive time (wall clock) minus the time stamp the message carries:
  a signal's ``detected_ns`` (the engine's wall clock when its detector fired, so the figure includes the
  engine's hand-over to its publisher and JetStream's publish) and a snapshot's ``at_ns`` (when the
  engine built it; snapshots go out at most once per ``[bus] snapshot_every``, the newest one each time).
  Sender and receiver share this machine's clock;
- publish -> attach screen latency: ``tickdeck attach nats://`` itself, headless at 160x48 in a process of
  its own (``bench.fleet_screen``), started once the engines publish: the first rendered frame showing a
  signal or an engine's snapshot, minus the same time stamps (the decode, the merge and the render are in
  it); the samples of frames painted inside the window;
- the nats-server process's CPU (percent of one core, averaged over the window) and its largest RSS
  sampled once a second (psutil on its pid).

Checks: every engine is still running at the end of the window, at least one signal and one bar was
stored and at least one signal and one snapshot arrived at the subscriber, and on the attach console's
screen, within it. The exit status is 1
when a check failed, each named on stderr; 2 when the server could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.report import Figure, emit
from bench.servers.nats import NatsServer, NatsServerError

ROOT = Path(__file__).resolve().parents[1]
READY_S = 180.0  # every engine publishing: a fresh checkout compiles kernels first (about a minute)
STOP_S = 15.0  # for an engine to stop after SIGTERM, before it is killed
MAX_SAMPLES = 1_000_000  # latency samples kept per kind: the rest are counted, not kept
MB = 1_000_000


@dataclass(frozen=True)
class Size:
    engines: int
    symbols: int
    rate: float  # sim ticks/s per engine, across its symbols
    warmup_s: float
    window_s: float


FULL = Size(engines=4, symbols=1_000, rate=5_000.0, warmup_s=5.0, window_s=30.0)
QUICK = Size(engines=2, symbols=100, rate=500.0, warmup_s=2.0, window_s=5.0)


@dataclass
class Tap:
    """What the subscriber saw: latencies (ns) of messages received inside the window, and which engines
    have sent a snapshot with ticks."""

    measuring: bool = False
    signal_ns: list[int] = field(default_factory=list)
    snapshot_ns: list[int] = field(default_factory=list)
    signals_seen: int = 0
    snapshots_seen: int = 0
    live_engines: set[str] = field(default_factory=set)

    def on_signal(self, frame: dict[str, Any], now_ns: int) -> None:
        if self.measuring:
            self.signals_seen += 1
            if len(self.signal_ns) < MAX_SAMPLES:
                self.signal_ns.append(now_ns - int(frame["detected_ns"]))

    def on_snapshot(self, engine: str, frame: dict[str, Any], now_ns: int) -> None:
        if int(frame.get("ticks", 0)) > 0:
            self.live_engines.add(engine)
        if self.measuring:
            self.snapshots_seen += 1
            if len(self.snapshot_ns) < MAX_SAMPLES:
                self.snapshot_ns.append(now_ns - int(frame["at_ns"]))


def engine_command(url: str) -> list[str]:
    return [sys.executable, "-m", "console", "--headless", "--feed", "sim", "--interval", "1s",
            "--publish", url, "--status-every", "0"]


def engine_env(size: Size, index: int, work: Path) -> dict[str, str]:
    """The engine's settings through the environment (config.toml's precedence), with an empty user
    config directory and a state directory of its own (its disk buffer)."""
    state = work / f"engine-{index}"
    state.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TICKDECK_STATE_DIR": str(state), "TICKDECK_CONFIG_DIR": str(work / "config"),
            "TICKDECK_BUS_ENGINE": f"bench-{index}", "TICKDECK_FEEDS_SIM_SYMBOLS": str(size.symbols),
            "TICKDECK_FEEDS_SIM_SEED": str(101 + index), "TICKDECK_FEEDS_SIM_RATE": str(size.rate),
            "TICKDECK_FEEDS_SIM_BACKFILL": "60", "TICKDECK_BUS_SNAPSHOT_EVERY": "1.0"}


async def stream_counts(js: Any) -> tuple[int, int]:
    from engine.bus.subjects import BARS_STREAM, SIGNALS_STREAM

    signals = (await js.stream_info(SIGNALS_STREAM)).state.messages
    bars = (await js.stream_info(BARS_STREAM)).state.messages
    return int(signals), int(bars)


def pct(values: Sequence[int], q: float) -> float:
    """The q-th percentile in ms; NaN without samples."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) / 1e6 if values else float("nan")


def ms(x: float) -> str:
    return "-" if x != x else f"{x:,.1f} ms"


@dataclass
class Screen:
    """The attach console's samples (``bench.fleet_screen``) inside the window: latencies in ns."""

    signal_ns: list[int] = field(default_factory=list)
    snapshot_ns: list[int] = field(default_factory=list)

    def take(self, samples: Sequence[Sequence[Any]], start_ns: int, end_ns: int) -> None:
        for kind, frame_ns, latency_ns in samples:
            if start_ns <= frame_ns <= end_ns:
                (self.signal_ns if kind == "signal" else self.snapshot_ns).append(int(latency_ns))


async def start_screen(url: str, work: Path) -> asyncio.subprocess.Process:
    """The attach console in a process of its own, once it shows a snapshot (``bench.fleet_screen``)."""
    env = {**os.environ, "TICKDECK_STATE_DIR": str(work / "console"),
           "TICKDECK_CONFIG_DIR": str(work / "config")}
    with (work / "console.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fleet_screen", url, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), READY_S)
    if line.strip() != b"ready":
        await _stop([proc])
        raise RuntimeError(f"the attach console did not start: {_tail(work / 'console.log')}")
    return proc


async def screen_samples(proc: asyncio.subprocess.Process) -> list[Any]:
    """Ask the attach console for its samples and let it end."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    out = await asyncio.wait_for(proc.stdout.read(), STOP_S)
    await asyncio.wait_for(proc.wait(), STOP_S)
    return list(json.loads(out.decode().strip().splitlines()[-1])["samples"])


@dataclass
class Result:
    size: Size
    window_s: float = 0.0
    signals: int = 0  # stored in the stream within the window
    bars: int = 0
    alive: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    cpu_pct: float = float("nan")
    rss_max: int = 0
    tap: Tap = field(default_factory=Tap)
    screen: Screen = field(default_factory=Screen)
    failure: str = ""  # a reason the run could not measure at all


async def measure(server: NatsServer, size: Size, work: Path) -> Result:
    from engine.bus.connection import connect, settings_from

    result = Result(size)
    tap = result.tap
    client = await connect(settings_from(server.url, name="tickdeck-bench"))

    async def on_signal(msg: Any) -> None:
        tap.on_signal(json.loads(msg.data), time.time_ns())

    async def on_snapshot(msg: Any) -> None:
        tap.on_snapshot(msg.subject.rsplit(".", 1)[-1], json.loads(msg.data), time.time_ns())

    await client.subscribe("tickdeck.signals.>", cb=on_signal)
    await client.subscribe("tickdeck.snapshots.>", cb=on_snapshot)
    js = client.jetstream()
    logs = [(work / f"engine-{i}.log").open("wb") for i in range(size.engines)]
    procs = [await asyncio.create_subprocess_exec(
        *engine_command(server.url), cwd=ROOT, env=engine_env(size, i, work),
        stdin=asyncio.subprocess.DEVNULL, stdout=logs[i], stderr=logs[i]) for i in range(size.engines)]
    try:
        deadline = time.monotonic() + READY_S
        while len(tap.live_engines) < size.engines:
            dead = [i for i, p in enumerate(procs) if p.returncode is not None]
            if dead or time.monotonic() > deadline:
                result.failure = (f"engine {dead[0]} exited with {procs[dead[0]].returncode} before "
                                  f"publishing: {_tail(work / f'engine-{dead[0]}.log')}" if dead else
                                  f"only {len(tap.live_engines)} of {size.engines} engines published a "
                                  f"snapshot within {READY_S:.0f} s")
                return result
            await asyncio.sleep(0.05)
        try:
            screen = await start_screen(server.url, work)
        except (RuntimeError, TimeoutError) as exc:
            result.failure = str(exc) or "the attach console did not show a snapshot in time"
            return result
        procs.append(screen)
        await asyncio.sleep(size.warmup_s)  # the backfill's bars out of the way: a bench phase, not a wait
        assert server.proc is not None
        bus = psutil.Process(server.proc.pid)
        cpu0 = bus.cpu_times()
        first = await stream_counts(js)
        t0, t0_ns = time.monotonic(), time.time_ns()
        tap.measuring = True
        end = t0 + size.window_s
        while (now := time.monotonic()) < end:
            result.rss_max = max(result.rss_max, bus.memory_info().rss)
            await asyncio.sleep(min(1.0, end - now))
        tap.measuring = False
        t1_ns = time.time_ns()
        last = await stream_counts(js)
        result.window_s = time.monotonic() - t0
        result.exit_codes = [p.returncode for p in procs[:size.engines]]
        result.screen.take(await screen_samples(screen), t0_ns, t1_ns)
        cpu1 = bus.cpu_times()
        result.rss_max = max(result.rss_max, bus.memory_info().rss)
        busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        result.cpu_pct = 100.0 * busy / result.window_s
        result.signals, result.bars = last[0] - first[0], last[1] - first[1]
        result.alive = sum(code is None for code in result.exit_codes)
        return result
    finally:
        await _stop(procs)
        for log in logs:
            log.close()
        await client.close()


async def _stop(procs: Sequence[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), STOP_S)
        except TimeoutError:
            p.kill()
            await p.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def figures(r: Result) -> list[Figure]:
    s, tap, w = r.size, r.tap, max(r.window_s, 1e-9)
    sig_p50, sig_p99 = pct(tap.signal_ns, 50), pct(tap.signal_ns, 99)
    snap_p50, snap_p99 = pct(tap.snapshot_ns, 50), pct(tap.snapshot_ns, 99)
    return [
        Figure("engines", "engines x sim symbols", s.engines, f"{s.engines} x {s.symbols:,}"),
        Figure("symbols_per_engine", "  symbols per engine", s.symbols, f"{s.symbols:,}"),
        Figure("window_s", "measured window", round(r.window_s, 3), f"{r.window_s:.1f} s"),
        Figure("engines_alive", "engines running at the end", r.alive, f"{r.alive} of {s.engines}",
               f"{s.engines}", r.alive == s.engines),
        Figure("signals", "signals stored (stream growth)", r.signals, f"{r.signals:,}", "> 0",
               r.signals > 0),
        Figure("signals_per_s", "  signals/s through the bus", round(r.signals / w, 2),
               f"{r.signals / w:,.1f}"),
        Figure("bars", "bars stored (stream growth)", r.bars, f"{r.bars:,}", "> 0", r.bars > 0),
        Figure("bars_per_s", "  bars/s through the bus", round(r.bars / w, 2), f"{r.bars / w:,.1f}"),
        Figure("signal_samples", "signals at the subscriber", tap.signals_seen, f"{tap.signals_seen:,}",
               "> 0", tap.signals_seen > 0),
        Figure("signal_latency_p50_ms", "  detected -> received p50", _num(sig_p50), ms(sig_p50)),
        Figure("signal_latency_p99_ms", "  detected -> received p99", _num(sig_p99), ms(sig_p99)),
        Figure("snapshot_samples", "snapshots at the subscriber", tap.snapshots_seen,
               f"{tap.snapshots_seen:,}", "> 0", tap.snapshots_seen > 0),
        Figure("snapshot_latency_p50_ms", "  built -> received p50", _num(snap_p50), ms(snap_p50)),
        Figure("snapshot_latency_p99_ms", "  built -> received p99", _num(snap_p99), ms(snap_p99)),
        *screen_figures(r.screen),
        Figure("bus_cpu_pct", "nats-server CPU (% of one core)", round(r.cpu_pct, 1), f"{r.cpu_pct:.1f} %"),
        Figure("bus_rss_mb", "nats-server RSS (max)", round(r.rss_max / MB, 1), f"{r.rss_max / MB:,.1f} MB"),
    ]


def screen_figures(screen: Screen) -> list[Figure]:
    out = []
    for kind, samples, what in (("signal", screen.signal_ns, "detected"),
                                ("snapshot", screen.snapshot_ns, "built")):
        p50, p99 = pct(samples, 50), pct(samples, 99)
        out += [Figure(f"screen_{kind}_samples", f"{kind}s on the attach console's screen", len(samples),
                       f"{len(samples):,}", "> 0", len(samples) > 0),
                Figure(f"screen_{kind}_latency_p50_ms", f"  {what} -> on screen p50", _num(p50), ms(p50)),
                Figure(f"screen_{kind}_latency_p99_ms", f"  {what} -> on screen p99", _num(p99), ms(p99))]
    return out


def _num(x: float) -> float | None:
    return None if x != x else round(x, 3)


NOTES = ["Rates are the JetStream streams' growth over the window. Received: a NATS subscriber's receive "
         "time minus the message's own time stamp (a signal's detection, a snapshot's build); on screen: "
         "the first frame of a headless `tickdeck attach nats://` (160x48) showing it, minus the same time "
         "stamp; all on this machine's clock."]


def main(args: argparse.Namespace) -> int:
    size = QUICK if getattr(args, "quick", False) else FULL
    with tempfile.TemporaryDirectory(prefix="tickdeck-bench-fleet-") as tmp:
        work = Path(tmp)
        (work / "config").mkdir()
        server = NatsServer(work / "nats")
        try:
            server.start()
        except NatsServerError as exc:
            print(f"tickdeck bench --fleet: {exc}", file=sys.stderr)
            return 2
        try:
            result = asyncio.run(measure(server, size, work))
        finally:
            server.stop()
    if result.failure:
        print(f"tickdeck bench --fleet: {result.failure}", file=sys.stderr)
        return 1
    return emit("fleet", f"tickdeck bench --fleet: {size.engines} engines x {size.symbols:,} sim symbols, "
                f"1 s bars, one nats-server -js", figures(result), args.json, NOTES,
                quick=size is QUICK, sim_rate_per_engine=size.rate)
