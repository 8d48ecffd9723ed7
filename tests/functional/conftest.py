"""Fixtures for the functional tests: a fast, seeded sim config isolated from the user's own config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import CONFIG_DIR_VAR, Config, load_config

FAST = {"feeds.sim.rate": 2000.0, "feeds.sim.seed": 7, "engine.interval": "1s"}
"""A quick sim: 2000 ticks/s and one-second bars, with a fixed seed."""


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test keeps its watchlists and theme in its own directory, never the user's."""
    path = tmp_path / "state"
    monkeypatch.setenv("TICKDECK_STATE_DIR", str(path))
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """``make_config({"feed.name": "x"})``: the fast sim config plus dotted overrides, ignoring the
    user's config file and ``TICKDECK_*`` variables."""

    def make(overrides: dict[str, object] | None = None) -> Config:
        return load_config(overrides={**FAST, **(overrides or {})}, env={CONFIG_DIR_VAR: str(tmp_path)})

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()
