"""``tickdeck bench --feeds`` runs both paths end to end and reports every figure (never timed here)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_run_reports_every_figure() -> None:
    out = subprocess.run([sys.executable, "-m", "console.bench_feeds", "--quick", "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    for key in ("sim_engine_ticks_per_s", "engine_only_ticks_per_s", "ws_messages_per_s",
                "ws_latency_p50_ms", "ws_latency_p99_ms"):
        assert result[key] > 0, key
    assert result["ws_messages"] == 5_000  # every frame the local server sent reached the engine
    assert result["sim_ticks"] >= 50_000
