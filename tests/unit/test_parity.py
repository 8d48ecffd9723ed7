"""Every catalogue output that TA-Lib has equals TA-Lib on every data shape, streamed bar by bar."""

from __future__ import annotations

import pytest

from tests.data import scenarios
from tests.unit.oracle import TALIB, assert_matches, scale_for
from tests.unit.streaming import stream

SCENARIOS = scenarios()
NAMES = sorted(TALIB)


@pytest.fixture(scope="module")
def streamed() -> dict[str, dict]:
    return {key: stream(NAMES, bars) for key, bars in SCENARIOS.items()}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("name", NAMES)
def test_equals_talib(streamed: dict[str, dict], scenario: str, name: str) -> None:
    bars = SCENARIOS[scenario]
    assert_matches(name, streamed[scenario][name], TALIB[name](bars), scale_for(name, bars))
