"""``python -m bench.bus_ingest`` stores what it publishes on a real ``nats-server -js`` and reports both
rates; the sizes are cut down here, and no rate is asserted beyond being there."""

from __future__ import annotations

import re

import pytest

from bench import bus_ingest


def test_ingest_reports_the_bar_and_signal_rates(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bus_ingest, "BARS", 3_000)
    monkeypatch.setattr(bus_ingest, "SIGNALS", 600)
    monkeypatch.setattr(bus_ingest, "SYMBOLS", 50)
    assert bus_ingest.main() == 0
    out = capsys.readouterr().out
    bars = re.search(r"bars: ([\d,]+) msg/s stored \(3,000 x 300 B on 50 subjects", out)
    signals = re.search(r"signals: ([\d,]+) msg/s acknowledged \(600,", out)
    assert bars and signals, out
    assert int(bars.group(1).replace(",", "")) > 0 and int(signals.group(1).replace(",", "")) > 0
