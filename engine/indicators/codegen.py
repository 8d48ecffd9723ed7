"""Kernels written as Python source from the catalogue's declarations, saved where numba caches, imported.

Two kinds of module are generated (``engine.indicators.dispatch`` and ``engine.indicators.specialised``
build their text):

- the dispatch: a plan interpreter with one branch per declared kind, for the engine's compiled bar path,
  which serves any indicator set with one compiled artefact;
- a specialised kernel per indicator set: the set's instances with their state rows, output rows and
  parameters as constants, for the indicator bank.

A generated module is written into numba's cache directory (keyed by the kernels' sources, see
``engine.jit``) under a name that is a hash of its text, and only when it is not there yet, so its file
keeps its modification time and numba's on-disk cache of it stays valid across processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TextIO

from engine.files import write_atomically

PACKAGE = "engine.indicators.generated"
"""The generated modules' package name: under ``engine.``, so a compile of theirs shows in the progress."""


def directory() -> Path:
    from engine.jit import cache_dir

    return Path(cache_dir()) / "generated"


def text_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def load(prefix: str, source: str) -> ModuleType:
    """Import ``source`` as a module named by ``prefix`` and a hash of the text (writing it first when it
    is not on disk yet); the same text gives the same module, once per process."""
    digest = text_digest(source)
    name = f"{PACKAGE}.{prefix}_{digest}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    path = directory() / f"{prefix}_{digest}.py"
    if not path.is_file() or path.read_text(encoding="utf-8") != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda fh: _write(fh, source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _write(fh: TextIO, text: str) -> None:
    fh.write(text)


def step_imports(kinds: list[tuple[str, str]]) -> list[str]:
    """``from <module> import <step>`` lines for (module, function) pairs, each once, sorted."""
    return [f"from {module} import {function}" for module, function in sorted(set(kinds))]
