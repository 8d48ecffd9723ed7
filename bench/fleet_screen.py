"""The attach console of ``tickdeck bench --fleet``: ``tickdeck attach nats://`` as users run it
(``FleetRuntime``, its handshake, ``build_app``), headless at 160x48 in a process of its own, timing
publish -> screen.

It observes rendered frames the way ``tickdeck bench --ui`` times a key press: the app's ``_display``
(what hands a frame to the terminal driver) is wrapped, and on each frame the console's state is read.
A snapshot counts once per engine, on the first frame painted after the app took a merged snapshot
holding that engine's newest build (the rows' ``at_ns``: a snapshot sent in parts counts on its first
part); a signal once, on the first frame painted after it entered the signal log. The sample is the
frame's wall-clock time minus the message's own time stamp (a snapshot's ``at_ns``, a signal's
``detected_ns``), so it holds the engine's publish, the bus, the decode and merge, the app's message
queue and the render. Engines and console share this machine's clock.

Protocol with the parent (``bench.fleet``): the child prints ``ready`` once a frame shows a snapshot,
then records until a line on its stdin, then prints one JSON object: ``samples``, a list of
``[kind, frame_ns, latency_ns]``, and ``dropped``, the samples past ``MAX_SAMPLES`` (counted, not kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from typing import Any

SIZE = (160, 48)
READY_S = 120.0  # from the handshake to the first frame holding a snapshot
MAX_SAMPLES = 1_000_000
SEEN = 10_000  # signal keys remembered (the log holds 500)


class ScreenTap:
    """What each painted frame shows that no frame showed before, timed."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[tuple[str, int, int]] = []
        self.dropped = 0
        self.first = asyncio.Event()
        self._engines: dict[tuple[Any, ...], int] = {}
        self._signals: dict[tuple[Any, ...], None] = {}
        self._shown: Any = None  # the merged snapshot the last frame showed

    def _add(self, kind: str, frame_ns: int, latency_ns: int) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((kind, frame_ns, latency_ns))
        else:
            self.dropped += 1

    def on_frame(self) -> None:
        now = time.time_ns()
        app = self.app
        snapshot = app.watchlist.snapshot
        if snapshot is not None and snapshot is not self._shown:
            self._shown = snapshot
            self.first.set()
            health = app.header.health
            for view in getattr(health, "engines", ()):
                key = (view.feed, view.interval, view.name)
                if view.at_ns > self._engines.get(key, 0):
                    if key in self._engines:  # the first one seen was built before the console opened
                        self._add("snapshot", now, now - view.at_ns)
                    self._engines[key] = view.at_ns
        for signal in app.signal_log.signals:
            mark = (signal.symbol, signal.rule, signal.direction, signal.bar_time)
            if mark not in self._signals:
                self._signals[mark] = None
                self._add("signal", now, now - signal.detected_ns)
        while len(self._signals) > SEEN:
            del self._signals[next(iter(self._signals))]


def _child(url: str) -> None:
    from console.app import build_app
    from engine.bus.attach import FleetRuntime
    from engine.bus.connection import settings_from
    from engine.config import load_config

    runtime = FleetRuntime(settings_from(url, name="tickdeck-bench-attach"))
    asyncio.run(runtime.handshake())
    config = load_config(overrides={"ui.columns": list(runtime.outputs) or None,
                                    "engine.interval": runtime.interval or None})
    app = build_app(config, runtime, saved_theme=False)
    tap = ScreenTap(app)
    display = app._display

    def timed_display(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        tap.on_frame()

    app._display = timed_display  # type: ignore[method-assign]

    async def drive() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wait_for_parent() -> None:
            sys.stdin.readline()  # a line, or the parent gone (EOF): either ends the run
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_parent, daemon=True, name="stdin").start()
        async with app.run_test(size=SIZE):
            try:
                await asyncio.wait_for(tap.first.wait(), READY_S)
            except TimeoutError:
                print(f"no snapshot on the attach console's screen within {READY_S:.0f} s", file=sys.stderr)
                raise SystemExit(1) from None
            print("ready", flush=True)
            await stop.wait()  # the parent's line, or its end (EOF)
        print(json.dumps({"samples": tap.samples, "dropped": tap.dropped}), flush=True)

    asyncio.run(drive())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    _child(parser.parse_args().url)
