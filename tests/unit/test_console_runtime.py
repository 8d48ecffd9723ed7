"""The runtime protocol the console is typed against: both runtimes implement it, a view-only runtime
refuses what its flags deny, and the protocol module stays light for the console's first frame."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.config import CONFIG_DIR_VAR, load_config
from engine.console_runtime import ConsoleRuntime, ViewOnlyRuntime
from engine.remote import RemoteRuntime
from engine.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


class Shown(ViewOnlyRuntime):
    feed = SimpleNamespace(name="shown", market="shown", closed_universe=False, universe=lambda: ("AAA",))
    watch = ("AAA",)

    async def run(self, on_update: Any, on_status: Any) -> None:
        return None


def test_the_local_and_the_attached_runtime_declare_what_they_can_do(tmp_path: Path) -> None:
    local = Runtime(load_config(env={CONFIG_DIR_VAR: str(tmp_path)}))
    attached = RemoteRuntime("127.0.0.1:9")
    for runtime, can in ((local, True), (attached, False)):
        assert isinstance(runtime, ConsoleRuntime)
        assert runtime.implements_subscribe is can
        assert runtime.implements_watch is can
        assert runtime.implements_history is can
    assert not isinstance(SimpleNamespace(feed=local.feed, watch=()), ConsoleRuntime)  # members missing


async def test_a_view_only_runtime_refuses_what_its_flags_deny() -> None:
    shown = Shown()
    assert isinstance(shown, ConsoleRuntime)
    with pytest.raises(NotImplementedError, match="Shown cannot subscribe"):
        await shown.add_symbols(["BBB"])
    with pytest.raises(NotImplementedError, match="Shown cannot unsubscribe"):
        await shown.drop_symbols(["AAA"])
    with pytest.raises(NotImplementedError, match="shows the symbols it is sent"):
        shown.set_watch(["BBB"])
    with pytest.raises(NotImplementedError, match="no local engine"):
        await shown.chart("AAA", 1, 10)
    with pytest.raises(NotImplementedError, match="no local engine"):
        await shown.closed_bars("AAA")
    with pytest.raises(NotImplementedError, match="no local engine"):
        shown.chart_reach()
    assert shown.close_history() is None  # nothing was opened: nothing to close
    assert shown.check_symbol("AAA") is None
    assert shown.check_symbol("BBB") == "BBB is not among the symbols the attached instance publishes"


def test_the_protocol_imports_no_engine() -> None:
    code = ("import sys, engine.console_runtime\n"
            "print(sorted(m for m in ('numpy', 'numba', 'textual', 'websockets', 'engine.runtime')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
