"""The layer rules in ``pyproject.toml`` ([tool.importlinter]) hold, and each one fails when broken.

``make lint`` runs ``lint-imports`` on the source; here it runs on a copy of the source with one import
added, so a contract that could never fail (a typo in a module name, a wrong contract type) would show.
The imports added are the ones the contracts were written against: a widget importing the console's
``PerfSample``, and a sink importing ``engine.sinks.config`` (which imports the sinks to build them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "console", "widgets", "themes")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and of pyproject.toml (no caches, no compiled files)."""
    root = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def lint(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy, not the installed checkout
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_source_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("contract", "module", "line"), [
    ("engine", "engine/sinks/base.py", "import textual.widget"),
    ("engine", "engine/snapshot.py", "if TYPE_CHECKING:\n    from widgets.perf_sample import PerfSample"),
    ("widgets", "widgets/perf_panel.py", "if TYPE_CHECKING:\n    from console.perf import PerfMonitor"),
    ("kernels", "engine/signals/events.py", "from engine.sinks.base import Sink"),
    ("kernels", "engine/indicators/__init__.py", "import engine.feeds.base"),
    ("sinks", "engine/sinks/webhook.py", "from engine.sinks.config import DeliverySettings"),
    ("sinks", "engine/sinks/telegram.py", "from engine.sinks.webhook import WebhookSink"),
    ("bus", "engine/bus/subjects.py", "from engine.bus.publisher import BusPublisher"),
    ("sinks-no-bus", "engine/sinks/base.py", "import engine.bus.subjects"),
    ("nats", "engine/bus/publisher.py", "def later():\n    import nats"),
    ("kernels", "engine/signals/rules.py", "import engine.bus.subjects"),
    ("acyclic", "engine/sinks/defaults.py", "def later():\n    from engine.sinks import config"),
    ("acyclic", "widgets/formatting.py", "from widgets.perf_panel import PerfPanel"),
])
def test_each_contract_fails_when_broken(tree: Path, contract: str, module: str, line: str) -> None:
    path = tree / module
    source = path.read_text()
    try:
        path.write_text(f"{source}\n{line}\n")
        result = lint(tree, contract)
    finally:
        path.write_text(source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    named = module.removesuffix(".py").removesuffix("/__init__").rpartition("/")[2]
    assert named in result.stdout  # the report names the module that broke it
