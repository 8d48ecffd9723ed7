"""The engine is a library: it must not pull in the UI stack (DESIGN rule 1)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("textual", "rich", "widgets", "console")


def test_engine_imports_no_ui() -> None:
    code = (
        "import json, sys\n"
        "import engine, engine.pipeline, engine.indicators.bank, engine.indicators.catalogue\n"
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
