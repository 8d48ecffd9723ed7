"""The figure table the reliability benchmarks (``tickdeck bench --soak/--faults/--load``) print.

Each run is judged figure by figure against a stated target, so a reader sees at once which one missed,
and ``--json`` gives the same rows to a script (CI keeps the history; the table is for people). Each
missed figure is also named on stderr, and the exit status is 1 when one was missed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure; ``ok`` is None when the figure has no target (context only)."""

    key: str  # the JSON name
    label: str
    value: Any
    shown: str  # the value as the table shows it
    target: str = ""
    ok: bool | None = None


def verdict(figures: Sequence[Figure]) -> bool:
    """True when no figure with a target missed it."""
    return all(f.ok is not False for f in figures)


def misses(figures: Sequence[Figure]) -> list[str]:
    """One line per figure that missed its target, naming it, what was measured and the target."""
    return [f"target missed: {f.label.strip()} = {f.shown}, target {f.target}" for f in figures
            if f.ok is False]


def as_json(name: str, figures: Sequence[Figure], **context: Any) -> str:
    out: dict[str, Any] = {"bench": name, "pass": verdict(figures), "failed": misses(figures), **context}
    out["figures"] = {f.key: {"value": f.value, "target": f.target or None,
                              "pass": f.ok} for f in figures}
    return json.dumps(out, default=str)


def render(title: str, figures: Sequence[Figure], notes: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for f in figures:
        mark = "" if f.ok is None else ("[green]PASS[/]" if f.ok else "[red]MISS[/]")
        table.add_row(f.label, f.shown, f.target, mark)
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
    console.print("all targets met" if verdict(figures) else "[red]some targets missed[/]")


def emit(name: str, title: str, figures: Sequence[Figure], as_json_output: bool,
         notes: Sequence[str] = (), **context: Any) -> int:
    """Print the figures (table or JSON) and each miss on stderr; the exit status is 0 when every target
    was met, else 1."""
    if as_json_output:
        print(as_json(name, figures, **context), flush=True)
    else:
        render(title, figures, notes)
        sys.stdout.flush()
    for line in misses(figures):
        print(f"tickdeck bench --{name}: {line}", file=sys.stderr)
    return 0 if verdict(figures) else 1
