"""``tickdeck bench --ui``: the real console, headless, on 1,000 symbols and a 20,000 ticks/s sim.

The app runs in a child process (``python -m bench.ui``) so its startup, CPU and memory are its
own: the parent writes a state file holding one watchlist of every sim symbol, starts the child, and
judges what the child reports against the targets. The child builds the app with ``build_app`` (what
users run) and drives it with Textual's Pilot at 160x48:

- startup: from the parent starting the process to the first frame the app paints, and whether numba
  and pandas were loaded by then (they must load after it, in the runtime's thread);
- frame time: snapshot received -> screen refreshed, from the app's own ``PerfMonitor``;
- key latency: ``down`` pressed every 0.25 s -> the first paint after the cursor moved;
- CPU over the measured phase (process CPU time / wall time; 100 % is one core) and peak RSS (psutil,
  sampled through the measured phase; MB = 10^6 bytes);
- that nothing the run does not use was imported (``UNUSED``).

Headless means nothing is written to a terminal; the compositor, the widgets and the runtime do all of
their work. Output bytes are what the app would have written (its ``PerfMonitor`` counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYMBOLS, RATE, SIZE = 1000, 20_000.0, (160, 48)
TARGETS = {"key_p99_ms": 50.0, "cpu_percent": 60.0, "rss_mb": 200.0, "startup_s": 1.0}
MB = 1_000_000  # decimal megabytes, as the engine's memory figures
KEY_EVERY_S = 0.25
UNUSED = ("pandas", "pyarrow", "aiohttp", "websockets", "plotext")
"""Modules a console on the sim never uses (file formats, HTTP and WebSocket services, the detail pane's
chart): loaded, they would cost RSS for nothing (pandas alone ~85 MB)."""


def main(args: argparse.Namespace) -> int:
    from bench.report import Figure, emit
    from engine.feeds.sim import rate_for_window

    seconds = float(args.ui)
    rate = rate_for_window(RATE, seconds + 15, time.time_ns())  # the tape averages RATE over the run
    with tempfile.TemporaryDirectory(prefix="tickdeck-bench-ui-") as tmp:
        positions = bool(getattr(args, "positions", False))
        env = _prepare(Path(tmp), positions)
        started = time.time()
        out = subprocess.run([sys.executable, "-m", "bench.ui", "--seconds", str(seconds),
                              "--rate", str(rate)],
                             env=env, capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return 2
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    startup = r["first_frame_wall"] - started
    figures = [
        Figure("symbols", "symbols in the watchlist", r["rows"], f"{r['rows']:,}"),
        Figure("ticks_per_s", "sim ticks/s processed (measured phase)", r["ticks_per_s"],
               f"{r['ticks_per_s']:,.0f}"),
        Figure("fps", "frames drawn per second (ui.fps 10)", r["fps"], f"{r['fps']:.1f}"),
        Figure("frame_p50_ms", "frame time p50, ms", r["frame_p50_ms"], f"{r['frame_p50_ms']:.1f}"),
        Figure("frame_p99_ms", "frame time p99, ms", r["frame_p99_ms"], f"{r['frame_p99_ms']:.1f}"),
        Figure("key_p99_ms", "key press -> screen p99, ms", r["key_p99_ms"], f"{r['key_p99_ms']:.1f}",
               f"< {TARGETS['key_p99_ms']:.0f}", r["key_p99_ms"] < TARGETS["key_p99_ms"]),
        Figure("cpu_percent", "process CPU, % of one core", r["cpu_percent"], f"{r['cpu_percent']:.0f}",
               f"< {TARGETS['cpu_percent']:.0f}", r["cpu_percent"] < TARGETS["cpu_percent"]),
        Figure("rss_mb", "peak RSS, MB", r["rss_mb"], f"{r['rss_mb']:.0f}",
               f"< {TARGETS['rss_mb']:.0f}", r["rss_mb"] < TARGETS["rss_mb"]),
        Figure("startup_s", "start -> first frame, s", startup, f"{startup:.2f}",
               f"< {TARGETS['startup_s']:.0f}", startup < TARGETS["startup_s"]),
        Figure("heavy_after_first_frame", "numba and pandas loaded after the first frame",
               not r["heavy_at_first_frame"], "yes" if not r["heavy_at_first_frame"] else
               f"no: {', '.join(r['heavy_at_first_frame'])}", "yes", not r["heavy_at_first_frame"]),
        Figure("unused_loaded", "modules the run does not use, loaded", len(r["unused_loaded"]),
               ", ".join(r["unused_loaded"]) or "none", "none", not r["unused_loaded"]),
        Figure("output_kb_per_s", "terminal output, KB/s (what would be written)", r["output_kb_per_s"],
               f"{r['output_kb_per_s']:.1f}"),
    ]
    notes = [f"{seconds:g} s measured after the first snapshot; {r['keys']} key presses; "
             f"{SIZE[0]}x{SIZE[1]} headless; the machine's load shows in every figure."]
    held = f", a position on each ({r.get('positions', 0):,})" if positions else ""
    return emit("ui", f"tickdeck bench --ui ({SYMBOLS:,} symbols{held}, sim {RATE:,.0f} ticks/s)", figures,
                bool(getattr(args, "json", False)), notes)


def _prepare(tmp: Path, positions: bool = False) -> dict[str, str]:
    """A state file with one watchlist of every sim symbol (``positions``: and a lot in each, long and
    short in turn, so the position columns, the totals row and the valuation run every frame), and an
    environment that uses it."""
    from decimal import Decimal

    from console.book import Book
    from console.state import StateStore, positions_change
    from engine.feeds.sim import universe
    from engine.positions.book import Lot, PositionBook

    state = tmp / "state"
    state.mkdir()
    store = StateStore(state)
    symbols = universe(SYMBOLS, 7)
    store.save("sim", Book.default(symbols))
    if positions:
        book = PositionBook.of({s: [Lot(Decimal(10 if i % 2 else -5), Decimal("100.25"), Decimal("1"))]
                                for i, s in enumerate(symbols)})
        store.apply([positions_change("sim", book)])
    config_dir = tmp / "config"
    config_dir.mkdir()
    # The user's own config and state stay out; TICKDECK_ENGINE_* and TICKDECK_UI_* pass through, so
    # e.g. TICKDECK_ENGINE_HISTORY=2000 measures a deeper history, and the numba cache is shared.
    keep = ("TICKDECK_ENGINE_", "TICKDECK_UI_", "TICKDECK_NUMBA_CACHE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKDECK_") or k.startswith(keep)}
    env |= {"TICKDECK_STATE_DIR": str(state), "TICKDECK_CONFIG_DIR": str(config_dir)}
    return env


def _child(seconds: float, rate: float) -> None:
    from textual import events

    from console.app import build_app
    from engine.config import load_config

    config = load_config(overrides={"feeds.sim.symbols": SYMBOLS, "feeds.sim.rate": rate,
                                    "engine.max_symbols": SYMBOLS + 24})
    app = build_app(config, saved_theme=False)
    paints: list[float] = []
    first: dict[str, Any] = {}
    display = app._display

    def timed_display(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        now = time.perf_counter()
        if not first:
            first["wall"] = time.time()
            first["heavy"] = sorted({"numba", "pandas"} & set(sys.modules))
        paints.append(now)

    app._display = timed_display  # type: ignore[method-assign]
    result: dict[str, Any] = {}

    async def drive() -> None:
        import psutil

        async with app.run_test(size=SIZE) as pilot:
            while app.watchlist.snapshot is None or len(app.watchlist.snapshot.quotes) < SYMBOLS:
                await pilot.pause(0.1)
            await pilot.pause(2.0)  # the backfill's catch-up frames are not the steady state
            proc = psutil.Process()
            cpu0, wall0, frames0 = sum(proc.cpu_times()[:2]), time.perf_counter(), app.frames
            runtime: Any = app.runtime  # the app built it from a sim config: a local Runtime, with an engine
            ticks0 = runtime.engine.stats.ticks if runtime is not None else 0
            bytes0 = app.perf.bytes.total
            frames: list[float] = []
            app.perf.frame_log = frames
            keys: list[float] = []
            rss = proc.memory_info().rss
            end = wall0 + seconds
            while time.perf_counter() < end:
                cursor = app.watchlist.rows.cursor
                pressed = time.perf_counter()
                app.post_message(events.Key("down" if cursor < 500 else "up", None))  # as a terminal sends it
                while (app.watchlist.rows.cursor == cursor or not paints or paints[-1] < pressed) \
                        and time.perf_counter() - pressed < 2.0:
                    await asyncio.sleep(0.001)
                keys.append((time.perf_counter() - pressed) * 1000)
                await pilot.pause(KEY_EVERY_S)
                rss = max(rss, proc.memory_info().rss)
            wall = time.perf_counter() - wall0
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            ticks = (runtime.engine.stats.ticks if runtime is not None else 0) - ticks0
            frame_ms = [f * 1000 for f in frames]
            result.update(
                rows=len(app.watchlist.symbols), fps=(app.frames - frames0) / wall, ticks_per_s=ticks / wall,
                cpu_percent=100 * cpu / wall, rss_mb=rss / MB, keys=len(keys),
                key_p99_ms=_pct(keys, 99), output_kb_per_s=(app.perf.bytes.total - bytes0) / wall / 1024,
                frame_p50_ms=_pct(frame_ms, 50), frame_p99_ms=_pct(frame_ms, 99),
                positions=len(app.position_book or ()),
            )

    asyncio.run(drive())
    result["unused_loaded"] = sorted(set(UNUSED) & {m.split(".")[0] for m in sys.modules})
    result.update(first_frame_wall=first["wall"], heavy_at_first_frame=first["heavy"])
    print(json.dumps(result), flush=True)


def _pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=RATE, help="the sim's rate (its daily average)")
    child = parser.parse_args()
    _child(child.seconds, child.rate)
