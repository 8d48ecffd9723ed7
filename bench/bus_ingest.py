"""``python -m bench.bus_ingest``: what one nats-server (JetStream, file storage, one replica) on this
machine stores, published the way the engines publish: the fleet's scaling notes (README, "Fleet") start
from these figures.

Two runs on a fresh server on 127.0.0.1 (``bench.servers.nats``):

- bars: ``BARS`` messages of a bar frame's size on ``SYMBOLS`` subjects, published as the engines publish
  bars (core publish, no acknowledgement, a flush every ``FLUSH`` messages), into a stream that keeps the
  last ``PER_SUBJECT`` messages of each subject; timed until the stream holds them all;
- signals: ``SIGNALS`` messages published with ``js.publish`` and a ``Nats-Msg-Id`` each (acknowledged,
  de-duplicated: what the engines do for signals), ``IN_FLIGHT`` awaiting their acknowledgement at once.

For each: messages per second and the server's CPU (percent of one core, psutil on its pid). One Python
publisher drives each run, so a figure is the lesser of what the client can send and what the server
stores: the server's CPU says which.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers.nats import NatsServer, NatsServerError

BARS = 300_000
SIGNALS = 20_000
SYMBOLS = 1_000
PER_SUBJECT = 600
FLUSH = 5_000
IN_FLIGHT = 256
PAYLOAD = b"x" * 300  # about a bar frame's size on the bus


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def measure(server: NatsServer) -> dict[str, float]:
    import nats
    import psutil
    from nats.js.api import StreamConfig

    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    out: dict[str, float] = {}
    try:
        await js.add_stream(StreamConfig(name="INGEST_BARS", subjects=["ingest.bars.>"],
                                         max_msgs_per_subject=PER_SUBJECT))
        subjects = [f"ingest.bars.sim.1s.S{i}" for i in range(SYMBOLS)]
        cpu, start = _cpu(proc), time.perf_counter()
        for i in range(BARS):
            await nc.publish(subjects[i % SYMBOLS], PAYLOAD)
            if i % FLUSH == 0:
                await nc.flush()
        await nc.flush()
        while (await js.stream_info("INGEST_BARS")).state.messages < min(BARS, SYMBOLS * PER_SUBJECT):
            await asyncio.sleep(0.02)
        took = time.perf_counter() - start
        out["bars_per_s"], out["bars_server_cpu_pct"] = BARS / took, (_cpu(proc) - cpu) / took * 100

        await js.add_stream(StreamConfig(name="INGEST_SIGNALS", subjects=["ingest.signals.>"],
                                         duplicate_window=120.0))
        cpu, start = _cpu(proc), time.perf_counter()
        waiting: list[Any] = []
        for i in range(SIGNALS):
            waiting.append(js.publish(f"ingest.signals.sim.1s.S{i % SYMBOLS}", PAYLOAD,
                                      headers={"Nats-Msg-Id": f"signal-{i}"}))
            if len(waiting) == IN_FLIGHT:
                await asyncio.gather(*waiting)
                waiting = []
        await asyncio.gather(*waiting)
        took = time.perf_counter() - start
        out["signals_per_s"], out["signals_server_cpu_pct"] = SIGNALS / took, (_cpu(proc) - cpu) / took * 100
        out["server_rss_mb"] = proc.memory_info().rss / 1e6
    finally:
        await nc.close()
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tickdeck-ingest-") as tmp:
        try:
            server = NatsServer(Path(tmp)).start()
        except NatsServerError as exc:
            print(f"bench.bus_ingest: {exc}", file=sys.stderr)
            return 2
        try:
            r = asyncio.run(measure(server))
        finally:
            server.stop()
    print(f"bars: {r['bars_per_s']:,.0f} msg/s stored ({BARS:,} x {len(PAYLOAD)} B on {SYMBOLS:,} subjects, "
          f"core publish), nats-server {r['bars_server_cpu_pct']:.0f} % of a core")
    print(f"signals: {r['signals_per_s']:,.0f} msg/s acknowledged ({SIGNALS:,}, js.publish with Nats-Msg-Id, "
          f"{IN_FLIGHT} in flight), nats-server {r['signals_server_cpu_pct']:.0f} % of a core")
    print(f"nats-server RSS at the end: {r['server_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
