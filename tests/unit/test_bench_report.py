"""The figure table of the reliability benchmarks: the exit status and stderr name every missed target."""

from __future__ import annotations

import json

import pytest

from bench.report import Figure, emit

FIGURES = [
    Figure("rss_slope", "RSS slope, MB/h", 0.4, "0.4", "< 1", True),
    Figure("context", "signals delivered", 12, "12"),  # no target: never a miss
    Figure("fds", "file descriptors, first / last", [9, 11], "9 / 11", "equal", False),
]


@pytest.mark.parametrize("as_json", [False, True])
def test_a_missed_target_exits_1_and_is_named_on_stderr(as_json: bool,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert emit("soak", "tickdeck bench --soak 20", FIGURES, as_json) == 1
    captured = capsys.readouterr()
    line = "target missed: file descriptors, first / last = 9 / 11, target equal"
    assert captured.err == f"tickdeck bench --soak: {line}\n"
    if as_json:
        out = json.loads(captured.out)
        assert (out["pass"], out["failed"]) == (False, [line])
        assert out["figures"]["fds"]["pass"] is False and out["figures"]["context"]["pass"] is None
    else:
        assert "MISS" in captured.out and "some targets missed" in captured.out


@pytest.mark.parametrize("as_json", [False, True])
def test_every_target_met_exits_0_quietly(as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert emit("soak", "tickdeck bench --soak 20", FIGURES[:2], as_json) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    if as_json:
        assert json.loads(captured.out)["failed"] == []
    else:
        assert "all targets met" in captured.out
