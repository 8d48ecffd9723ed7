"""``python -m tests.fuzz_report`` (``make fuzz``): every fuzz test with the long budget, then the atheris
harnesses, and how many inputs each one tried.

The hypothesis tests print ``fuzz: <test>: N inputs in S s`` lines (see ``tests.fuzz_settings``); each
atheris harness runs for ``--atheris-seconds`` under libFuzzer, seeded with the repository's
``config.toml`` and sample frames, and its ``Done N runs in S second(s)`` becomes a ``fuzz: atheris
<name>: N inputs in S s`` line. Exit status: non-zero when anything crashed or failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ_TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "unit").glob("test_fuzz_*.py"))
HARNESSES = ("fuzz_feeds", "fuzz_ccxt", "fuzz_config")
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


def _seeds(name: str, folder: Path) -> None:
    """A few valid inputs for libFuzzer to start from (it mutates them)."""
    if name == "fuzz_config":
        (folder / "repo.toml").write_bytes((ROOT / "config.toml").read_bytes())
        return
    if name == "fuzz_ccxt":
        from tests.unit.test_fuzz_ccxt import KRAKEN, OKX

        for i, (kind, frame) in enumerate([(0, f) for f in KRAKEN] + [(1, f) for f in OKX]):
            (folder / f"seed{i}").write_bytes(bytes([kind]) + b"T" + json.dumps(frame).encode())
        return
    from tests.unit.test_fuzz_feeds import BINANCE_KLINE, BINANCE_TRADE, COINBASE_TRADES, YAHOO_QUOTES

    for i, (kind, frame) in enumerate(((0, BINANCE_TRADE), (1, BINANCE_KLINE), (2, COINBASE_TRADES),
                                       (3, YAHOO_QUOTES))):
        (folder / f"seed{i}").write_bytes(bytes([kind]) + b"T" + json.dumps(frame).encode())


def run_atheris(name: str, seconds: int) -> int:
    with tempfile.TemporaryDirectory(prefix=f"tickdeck-{name}-") as corpus:
        _seeds(name, Path(corpus))
        done = subprocess.run([sys.executable, "-m", f"tests.atheris.{name}", f"-max_total_time={seconds}",
                               "-print_final_stats=0", corpus], cwd=ROOT, capture_output=True)
    found = _DONE.search(done.stderr)
    runs = f"{int(found.group(1))} inputs in {int(found.group(2))} s" if found else "no count"
    failed = "" if done.returncode == 0 else f" (FAILED, exit {done.returncode})"
    print(f"fuzz: atheris {name}: {runs}{failed}")
    if done.returncode != 0:
        sys.stdout.write(done.stderr.decode("utf-8", "replace")[-4000:])
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("ci", "long"), default="long", help="hypothesis budget (long)")
    parser.add_argument("--atheris-seconds", type=int, default=60,
                        help="seconds per atheris harness; 0 skips them (default 60)")
    args = parser.parse_args(argv)
    os.environ["HYPOTHESIS_PROFILE"] = args.profile  # read when tests.fuzz_settings is imported
    import pytest

    status = int(pytest.main(["-q", "-p", "no:cacheprovider", *FUZZ_TESTS]))
    if args.atheris_seconds > 0:
        if importlib.util.find_spec("atheris") is None:
            print("fuzz: atheris is not installed (wheels: Linux x86-64, CPython 3.11-3.13): skipped")
        else:
            for name in HARNESSES:
                status = run_atheris(name, args.atheris_seconds) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
