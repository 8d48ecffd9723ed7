"""Nothing is imported that a run does not use: each heavy module costs RSS for nothing (measured with
``python -X importtime`` and RSS after numpy: pandas ~85 MB, pyarrow ~26 MB, aiohttp ~20 MB, plotext
~9 MB, msgspec ~4 MB, websockets ~2 MB). The console's own set is checked by ``tickdeck bench --ui``
(tests/functional/test_bench_ui.py) and ``--help``'s by tests/unit/test_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ("textual", "rich", "widgets", "console", "plotext")
FILES = ("pandas", "pyarrow")  # only the file formats that need them (Parquet, a recording)
NETWORK = ("aiohttp", "websockets", "msgspec")  # only the feeds and sinks that speak to a service

RUN = """
import asyncio, json, sys
from engine.config import load_config
from engine.runtime import Runtime
{extra}
config = load_config(env={{}}, overrides={{"feeds.sim.symbols": 20, "feeds.sim.rate": 2000.0}})
runtime = Runtime(config)

async def main():
    updates = []
    task = asyncio.create_task(runtime.run(updates.append, lambda status: None))
    async with asyncio.timeout(60):
        while len(updates) < 3:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

asyncio.run(main())
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def loaded(extra: str = "") -> set[str]:
    out = subprocess.run([sys.executable, "-c", RUN.format(extra=extra)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_engine_on_the_sim_loads_no_ui_no_file_formats_and_no_network_clients() -> None:
    modules = loaded()
    assert {"numba", "numpy", "engine"} <= modules  # it did run the engine
    assert modules.isdisjoint((*UI, *FILES, *NETWORK, "psutil")), modules & {*UI, *FILES, *NETWORK, "psutil"}


def test_the_headless_service_without_network_sinks_loads_no_network_clients() -> None:
    modules = loaded("import engine.headless")
    assert "engine" in modules
    assert modules.isdisjoint((*UI, *FILES, *NETWORK)), modules & {*UI, *FILES, *NETWORK}
