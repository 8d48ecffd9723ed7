"""Shared settings, input counts and input strategies for the fuzz tests (``tests/unit/test_fuzz_*.py``).

Two budgets, chosen with ``HYPOTHESIS_PROFILE``:

- ``ci`` (the default, what ``make test`` runs): enough examples to catch the easy crashes while the
  whole fuzz suite stays under a minute on two cores;
- ``long`` (``HYPOTHESIS_PROFILE=long``, what ``make fuzz`` runs): 20 times as many.

The budgets are applied per test with :func:`fuzz` rather than by loading a global profile, so the other
property tests in the suite keep their own settings whatever profile is active. Both are also registered
with hypothesis (``fuzz-ci``, ``fuzz-long``) for ``pytest --hypothesis-profile``.

Every fuzz test calls :func:`tried` once per example; ``pytest_terminal_summary`` (imported into the
suite's ``conftest.py``) prints ``fuzz: <test>: N inputs in S s`` lines at the end of a run, so a run
reports how much was tried, not only that nothing failed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG_FACTOR = 20
PROFILE = "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "ci"

_BASE = settings(deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much])
settings.register_profile("fuzz-ci", _BASE)
settings.register_profile("fuzz-long", _BASE, max_examples=100 * LONG_FACTOR)

COUNTS: Counter[str] = Counter()
"""Examples run per test (the test's name), in this process."""


def fuzz(examples: int) -> settings:
    """Settings for a fuzz test that runs ``examples`` inputs under ``ci`` (20x that under ``long``).

    ``ci`` is derandomized: every ``make test`` tries the same inputs, so a red run is reproducible and
    a green main stays green; ``long`` (``make fuzz``) draws new inputs on every run, to find what the
    fixed set does not (each find becomes a regression test)."""
    if PROFILE == "long":
        return settings(_BASE, max_examples=examples * LONG_FACTOR)
    return settings(_BASE, max_examples=examples, derandomize=True)


def tried(name: str) -> None:
    """Count one input tried by fuzz test ``name``."""
    COUNTS[name] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per fuzz test that ran: inputs tried (shrinking included) and its duration."""
    if not COUNTS:
        return
    durations: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "call":
                name = report.nodeid.rpartition("::")[2].partition("[")[0]
                durations[name] = durations.get(name, 0.0) + report.duration
    terminalreporter.section(f"fuzz inputs tried (profile {PROFILE})")
    for name, count in sorted(COUNTS.items()):
        seconds = durations.get(name)
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        terminalreporter.write_line(f"fuzz: {name}: {count} inputs{took}")
    terminalreporter.write_line(f"fuzz: total: {sum(COUNTS.values())} inputs")


# --- strategies shared by the fuzz tests ---------------------------------------------------------------

INT64_MAX = 2**63 - 1
EDGE_INTS = (0, -1, 1, 2**31, 2**53 + 1, 2**62, INT64_MAX, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30)
EDGE_NUMBER_TEXT = ("NaN", "nan", "inf", "-Infinity", "-1", "0", "1e400", "1e-400", "", " 1", "1_0", "0x10",
                    "\u00b2", "1e5", "43000.5", "9" * 400)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(EDGE_NUMBER_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_json = st.builds(_nested, st.integers(900, 5000), st.sampled_from(["array", "object"]))


def dumps(value: Any) -> str:
    """JSON text as a careless server might write it: NaN and Infinity included."""
    return json.dumps(value, allow_nan=True)


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, Any]) -> str:
    """``template`` (a valid frame) with one field somewhere replaced, removed, or a field added."""
    frame = json.loads(json.dumps(template))
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            paths.append((node, key))
            walk(child)

    walk(frame)
    node, key = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["replace", "replace", "remove", "add", "nest"]))
    if action == "remove" and isinstance(node, dict):
        del node[key]
    elif action == "add" and isinstance(node, dict):
        node[draw(st.text(max_size=5))] = draw(json_values)
    elif action == "nest":
        node[key] = json.loads(_nested(draw(st.integers(1, 50)), "array"))
    else:
        node[key] = draw(json_values)
    return dumps(frame)


@st.composite
def invalid_utf8(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """``template`` as JSON bytes with a byte that cannot start a UTF-8 character put inside one of its
    strings: what a binary WebSocket frame or an HTTP body in another encoding can hold."""
    data = dumps(template).encode()
    quotes = [i for i, byte in enumerate(data) if byte == ord('"')]
    at = draw(st.sampled_from(quotes)) + 1
    return data[:at] + bytes([draw(st.integers(0x80, 0xBF))]) + data[at:]
