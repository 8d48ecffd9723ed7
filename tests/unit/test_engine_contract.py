"""The engine is a library: it must not pull in the UI stack (ARCHITECTURE.md, Layers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("textual", "rich", "widgets", "console")


def test_engine_imports_no_ui() -> None:
    code = (
        "import json, sys\n"
        "import engine, engine.tick_engine, engine.indicators.bank, engine.indicators.catalogue\n"
        "import engine.signals.detector, engine.signals.rules, engine.config, engine.history\n"
        "print(json.dumps(sorted(m for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert leaked == []


def test_catalogue_is_light() -> None:
    """Config validation and the console's first frame resolve names without numba or numpy."""
    code = (
        "import json, sys\n"
        "import engine.indicators.catalogue as c\n"
        "c.resolve('rsi_14')\n"
        "print(json.dumps(sorted(m for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("numba", "numpy", "pandas")]


def test_replaying_an_ohlcv_csv_imports_no_ui(tmp_path: Path) -> None:
    """Reading and replaying a bar file uses the engine's own reader (engine.ohlcv_file), not the CLI's."""
    path = tmp_path / "ACME.csv"
    rows = [f"2024-01-02T09:{m:02d}:00Z,{10 + m},{11 + m},{9 + m},{10.5 + m},100" for m in range(30)]
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code = (
        "import asyncio, json, sys\n"
        "import numpy as np\n"
        "from engine.feeds.replay import ReplayFeed\n"
        "from engine.ticks import SymbolTable\n"
        "async def main():\n"
        "    feed = ReplayFeed(SymbolTable(4), sys.argv[1], speed='max')\n"
        "    feed.max_batch = 16\n"
        "    feed.load()\n"
        "    ticks, stream = 0, feed.stream()\n"
        "    async for item in stream:\n"
        "        if isinstance(item, np.ndarray):\n"
        "            ticks += len(item)\n"
        "            if ticks >= 48:\n"
        "                break\n"
        "    await stream.aclose()\n"
        "    return ticks, feed.universe()\n"
        "ticks, universe = asyncio.run(main())\n"
        "print(json.dumps({'ticks': ticks, 'universe': universe, 'modules': sorted(sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    assert result["ticks"] == 48 and result["universe"] == ["ACME"]  # three batches of 16 were replayed
    assert "engine.ohlcv_file" in result["modules"]
    leaked = [m for m in result["modules"] if m.split(".")[0] in FORBIDDEN]
    assert leaked == []
