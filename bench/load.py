"""``tickdeck bench --load [CLIENTS]``: the WebSocket broadcast sink with many subscribers, a few of which
never read (500 subscribers by default).

The real ``BroadcastSink`` serves on 127.0.0.1 in this process, whose event loop does nothing else
but publish signals at a steady rate, each stamped with its sequence number and the time it was handed
to the sink. The subscribers run in other processes (one event loop cannot fairly be both the server
and hundreds of clients): fast ones (the ``websockets`` client, reading every frame) record each
signal's sequence number and its delivery latency (receipt minus hand-over, one machine, one clock).
The run has two phases of the same length and rate: first the fast clients alone, then the same with
``slow`` more clients that complete the handshake and never read again (a small receive buffer, so the
kernel does not hide them for long). The sink must cut each slow one off (its queue passes
``max_queue`` frames: close 1013) while every fast client still gets every signal, in order, as fast
as before. Figures: latency p50/p99/max over the fast clients per phase, the p99 with slow clients
connected against without, delivered counts, slow clients cut off.

A client that stops reading is noticed only once the kernel's send buffer for its socket is full (Linux
autotunes it up to ``net.ipv4.tcp_wmem``'s maximum, 4 MB by default), then websockets' 32 KiB write
buffer, then the sink's queue: 4 MB is some 16,000 signal frames of about 250 bytes, a quarter of an
hour at 20 signals a second. So with every measured signal goes a *ballast* signal of another symbol,
padded to about 8 kB, which the fast clients filter out (they subscribe to the measured symbols only)
and the slow ones, which never subscribe, are sent; and ``max_queue`` is 128 frames (1,024 by
default). A client that stopped reading is then cut off within some 20 s; the mechanism is the same,
and the fast clients' figures are for ordinary signal frames.

Run as ``python -m bench.load fast URL N OUT`` or ``... slow URL N RCVBUF`` it is the client
side (the bench starts these itself).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.report import Figure, emit

DEFAULT_CLIENTS = 500
SLOW = 5
RATE = 20.0  # signals a second
PHASE_S = 20.0
MAX_QUEUE = 128
PROCS = 2
RCVBUF = 4096  # bytes: the slow clients' socket receive buffer
PAD = 512  # values in each ballast signal: frames of about 8 kB (see the module docstring)
SYMBOLS = tuple(f"SYM{i}" for i in range(20))  # the measured signals' symbols, which fast clients take
BALLAST = "BALLAST"
CONNECT_WAVE = 50  # connections opened at once (the listen backlog is 128)
END_RULE = "end"


# --- the client side (its own process) ------------------------------------------------------------

async def _fast_clients(url: str, n: int, out: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    seqs: list[list[int]] = [[] for _ in range(n)]
    lats: list[list[int]] = [[] for _ in range(n)]
    codes = np.zeros(n, dtype=np.int32)  # the close code a client got before the end, if any
    hellos = 0
    all_hello = asyncio.Event()

    async def one(i: int, opened: asyncio.Future[Any]) -> None:
        nonlocal hellos
        try:
            async with connect(url, compression=None, open_timeout=120, max_queue=None) as ws:
                await ws.recv()  # hello
                await ws.send(json.dumps({"op": "subscribe", "symbols": list(SYMBOLS)}))
                while json.loads(await ws.recv()).get("type") != "subscribed":
                    pass
                opened.set_result(None)
                hellos += 1
                if hellos == n:
                    all_hello.set()
                seq, lat = seqs[i], lats[i]
                async for raw in ws:
                    now = time.time_ns()
                    msg = json.loads(raw)
                    if msg.get("type") != "signal":
                        continue
                    if msg["rule"] == END_RULE:
                        return
                    seq.append(int(msg["values"]["seq"]))
                    lat.append(now - msg["detected_ns"])
        except ConnectionClosed as exc:
            codes[i] = exc.rcvd.code if exc.rcvd is not None else -1
        finally:
            if not opened.done():
                opened.set_result(None)

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, n, CONNECT_WAVE):
        wave = [loop.create_future() for _ in range(start, min(start + CONNECT_WAVE, n))]
        tasks += [asyncio.create_task(one(start + k, f)) for k, f in enumerate(wave)]
        await asyncio.gather(*wave)
    await asyncio.wait_for(all_hello.wait(), 120)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    client = np.concatenate([np.full(len(s), i, dtype=np.int32) for i, s in enumerate(seqs)])
    np.savez(out, client=client, seq=np.concatenate([np.array(s, dtype=np.int64) for s in seqs]),
             lat_ns=np.concatenate([np.array(x, dtype=np.int64) for x in lats]), codes=codes)
    print("done", flush=True)


def _slow_clients(url: str, n: int, rcvbuf: int) -> None:
    """``n`` connections that finish the WebSocket handshake and never read again; they stay open until
    the parent closes our standard input."""
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    socks = []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: nothing past the response headers is read
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"slow client: handshake refused: {head[:80]!r}")
        socks.append(sock)
    print("ready", flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


# --- the server side ----------------------------------------------------------------------------------

@dataclass
class LoadRun:
    clients: int
    slow: int
    rate: float
    phase_s: float
    max_queue: int
    published: list[int] = field(default_factory=lambda: [0, 0])  # per phase
    phase_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0])
    first_seq: list[int] = field(default_factory=lambda: [0, 0])  # first sequence number per phase
    slow_connected: int = 0
    slow_dropped: int = 0
    cut_off_s: float = float("nan")  # from the slow clients' arrival to the last one cut off
    seq_cut_off: int = -1  # the first sequence number published after the last slow client was cut off
    sink: dict[str, Any] = field(default_factory=dict)
    frame_bytes: int = 0  # one measured signal frame, encoded
    ballast_bytes: int = 0  # one ballast frame
    client: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    seq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lat_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    @property
    def total(self) -> int:
        return sum(self.published)

    def counts(self) -> np.ndarray:
        """Signals each fast client received."""
        return np.bincount(self.client, minlength=self.clients)

    def complete(self) -> bool:
        """Every fast client got every signal, each once, in order."""
        if not len(self.client) or len(self.client) != self.clients * self.total:
            return False
        order = np.lexsort((np.arange(len(self.seq)), self.client))  # by client, arrival order kept
        expected = np.tile(np.arange(self.total, dtype=np.int64), self.clients)
        return bool(np.array_equal(self.seq[order], expected))

    def latency_ms(self, lo: int, hi: int) -> tuple[float, float, float, int]:
        """p50, p99, max (ms) over the fast clients for sequence numbers in [lo, hi), and the count."""
        lat = self.lat_ns[(self.seq >= lo) & (self.seq < hi)]
        if not len(lat):
            return (float("nan"), float("nan"), float("nan"), 0)
        p50, p99 = np.percentile(lat, [50, 99]) / 1e6
        return float(p50), float(p99), float(lat.max()) / 1e6, len(lat)


async def _spawn(*args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    root = Path(__file__).resolve().parents[1]
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.load", *args, cwd=root,
                                                stdin=stdin, stdout=asyncio.subprocess.PIPE)


async def _expect(proc: asyncio.subprocess.Process, word: str, timeout: float) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if line.strip() != word.encode():
        raise RuntimeError(f"a client process said {line!r} instead of {word!r} (exit {proc.returncode})")


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def run_load(clients: int = DEFAULT_CLIENTS, *, slow: int = SLOW, rate: float = RATE,
                   phase_s: float = PHASE_S, max_queue: int = MAX_QUEUE, procs: int = PROCS,
                   rcvbuf: int = RCVBUF, pad: int = PAD, slow_wait_s: float = 120.0) -> LoadRun:
    """One run (see the module docstring). Phase 2 lasts ``phase_s`` and at least until every slow
    client is cut off (``slow_wait_s`` at most). ``pad``: values in each ballast signal (0: none)."""
    from engine.signals.events import Signal
    from engine.sinks.broadcast import BroadcastSink, dumps, signal_frame

    run = LoadRun(clients, slow, rate, phase_s, max_queue)
    sink = BroadcastSink("127.0.0.1", 0, max_queue=max_queue, max_clients=clients + slow + 16, name="load")
    sink.start()
    await sink.started()
    seq = 0
    padding = {f"pad_{k}": float(k) for k in range(pad)}

    def publish(phase: int) -> None:
        nonlocal seq
        signal = Signal(symbol=SYMBOLS[seq % len(SYMBOLS)], rule="load", direction="up", bar_time=seq,
                        price=100.0, values={"seq": float(seq), "phase": float(phase)},
                        detected_ns=time.time_ns())
        sink.deliver(signal)
        if pad:
            ballast = Signal(symbol=BALLAST, rule="load", direction="up", bar_time=seq, price=100.0,
                             values=padding, detected_ns=time.time_ns())
            sink.deliver(ballast)
            run.ballast_bytes = run.ballast_bytes or len(dumps(signal_frame(ballast)).encode())
        run.frame_bytes = run.frame_bytes or len(dumps(signal_frame(signal)).encode())
        seq += 1
        run.published[phase - 1] += 1

    async def steady(phase: int, seconds: float, until: Callable[[], bool] | None = None,
                     cap: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        run.first_seq[phase - 1] = seq
        k = 0
        while True:
            elapsed = loop.time() - start
            if elapsed >= seconds and (until is None or until() or elapsed >= cap):
                break
            publish(phase)
            k += 1
            await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
        run.phase_seconds[phase - 1] = loop.time() - start

    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"fast{i}.npz") for i in range(procs)]
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        fast = [await _spawn("fast", sink.url, str(n), out) for n, out in zip(shares, outs, strict=True)]
        slow_proc: asyncio.subprocess.Process | None = None
        try:
            for proc in fast:
                await _expect(proc, "ready", 180.0)
            await _until(lambda: sink.stats()["clients"] >= clients, 30.0)
            await steady(1, phase_s)
            if slow:
                slow_proc = await _spawn("slow", sink.url, str(slow), str(rcvbuf),
                                         stdin=asyncio.subprocess.PIPE)
                await _expect(slow_proc, "ready", 60.0)
                await _until(lambda: sink.clients_total >= clients + slow, 30.0)
                run.slow_connected = sink.clients_total - clients
            arrived = time.monotonic()

            def all_cut() -> bool:
                if sink.dropped_clients >= slow and run.seq_cut_off < 0:
                    run.seq_cut_off = seq
                    run.cut_off_s = time.monotonic() - arrived
                return sink.dropped_clients >= slow

            await steady(2, phase_s, all_cut, slow_wait_s)
            all_cut()
            run.slow_dropped = sink.dropped_clients
            sink.deliver(Signal(symbol=SYMBOLS[0], rule=END_RULE, direction="up", bar_time=seq, price=1.0,
                                values={}, detected_ns=time.time_ns()))
            for proc in fast:
                await _expect(proc, "done", 120.0)
                await proc.wait()
        finally:
            for proc in [*fast, *([slow_proc] if slow_proc is not None else [])]:
                if proc.stdin is not None:
                    proc.stdin.close()
                if proc.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 5.0)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            run.sink = sink.stats()
            await sink.close(2.0)
        parts = [np.load(out) for out in outs]
        offsets = np.cumsum([0, *shares[:-1]])
        run.client = np.concatenate([p["client"] + off for p, off in zip(parts, offsets, strict=True)])
        run.seq = np.concatenate([p["seq"] for p in parts])
        run.lat_ns = np.concatenate([p["lat_ns"] for p in parts])
        run.codes = np.concatenate([p["codes"] for p in parts])
    return run


def figures(r: LoadRun) -> list[Figure]:
    counts = r.counts()
    whole = int((counts == r.total).sum())
    fewest = int(counts.min()) if len(counts) else 0
    fast_cut = int((r.codes != 0).sum())
    p1 = r.latency_ms(r.first_seq[0], r.first_seq[1])
    p2 = r.latency_ms(r.first_seq[1], r.total)
    cut = r.seq_cut_off if r.seq_cut_off >= 0 else r.total
    p2s = r.latency_ms(r.first_seq[1], cut)  # published while slow clients were connected
    complete = r.complete()
    ratio = p2s[1] / p1[1] if p1[1] > 0 else float("nan")
    rates = [n / s if s else 0.0 for n, s in zip(r.published, r.phase_seconds, strict=True)]

    def lat(p: tuple[float, float, float, int]) -> str:
        return f"{p[0]:.1f} / {p[1]:.1f} / {p[2]:.1f}"

    return [
        Figure("clients", "fast clients / slow clients (never read)", [r.clients, r.slow],
               f"{r.clients} / {r.slow}"),
        Figure("published", "signals published: without / with slow clients", r.published,
               f"{r.published[0]:,} / {r.published[1]:,}"),
        Figure("rate", "  publish rate, signals/s (frames/s out)", rates,
               f"{rates[0]:.1f}, {rates[1]:.1f} ({rates[0] * r.clients:,.0f})"),
        Figure("delivered", "fast clients with every signal, once, in order", whole,
               f"{whole} of {r.clients}", f"{r.clients} ({r.total:,} each)", complete),
        Figure("delivered_min", "  fewest signals any fast client got", fewest, f"{fewest:,}", f"{r.total:,}",
               fewest == r.total),
        Figure("fast_cut_off", "fast clients cut off", fast_cut, str(fast_cut), "0", fast_cut == 0),
        Figure("latency_without_ms", "latency p50 / p99 / max, ms, without slow clients", list(p1[:3]),
               lat(p1)),
        Figure("latency_with_ms", "latency p50 / p99 / max, ms, slow clients connected", list(p2s[:3]),
               lat(p2s)),
        Figure("latency_after_ms", "  p50 / p99 / max over the whole second phase", list(p2[:3]), lat(p2)),
        Figure("p99_ratio", "p99 with / without slow clients", ratio, f"{ratio:.2f}", "<= 1.5",
               ratio <= 1.5),
        Figure("slow_cut_off", "slow clients cut off (close 1013)", r.slow_dropped,
               f"{r.slow_dropped} of {r.slow_connected}", str(r.slow), r.slow_dropped == r.slow),
        Figure("cut_off_s", "  from their arrival to the last cut off, s", r.cut_off_s, f"{r.cut_off_s:.1f}"),
        Figure("frames_sent", "frames the sink sent", r.sink.get("sent", 0), f"{r.sink.get('sent', 0):,}"),
    ]


def main(args: argparse.Namespace) -> int:
    clients = int(args.load)
    if not 1 <= clients <= 5000:
        print(f"tickdeck: bench --load takes a number of clients from 1 to 5000, got {args.load}",
              file=sys.stderr)
        return 2
    r = asyncio.run(run_load(clients))
    notes = [f"{r.clients} fast clients in {PROCS} processes, {SLOW} slow ones in another; {RATE:g} "
             f"signals/s for {PHASE_S:g} s without, then with the slow clients (until they are cut off); "
             f"signal frames of {r.frame_bytes:,} bytes, each followed by a ballast frame of "
             f"{r.ballast_bytes:,} bytes only the slow clients are sent; max_queue {MAX_QUEUE}; slow "
             f"clients' receive buffer {RCVBUF} bytes; all on 127.0.0.1"]
    return emit("load", f"tickdeck bench --load {clients}", figures(r), args.json, notes)


def _client_main(argv: Sequence[str]) -> None:
    kind, url, n = argv[0], argv[1], int(argv[2])
    if kind == "fast":
        asyncio.run(_fast_clients(url, n, argv[3]))
    elif kind == "slow":
        _slow_clients(url, n, int(argv[3]))
    else:
        raise SystemExit("usage: python -m bench.load fast URL N OUT | slow URL N RCVBUF; "
                         f"got {kind!r}")


if __name__ == "__main__":
    _client_main(sys.argv[1:])
