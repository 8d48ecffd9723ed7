"""Coverage-guided fuzzing (atheris/libFuzzer) of the config loader: ``config.toml`` and its rules and sinks.

Run by ``make fuzz``; by hand: ``python -m tests.atheris.fuzz_config -max_total_time=60 [corpus_dir]``.
Each input is written as a ``--config`` file and loaded with its ``[[rules]]`` and ``[[sinks]]``: a
``ConfigError``, ``RuleError`` or ``SinkError`` whose one-line message names the file is the expected
outcome for a bad file; any other exception is a crash. The repository's ``config.toml`` is a good seed:
``mkdir corpus && cp config.toml corpus/``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["engine"]):
    from engine.config import ConfigError, load_config
    from engine.signals.rules import RuleError, load_rules
    from engine.sinks.config import SinkError, load_sinks

_FOLDER = Path(tempfile.mkdtemp(prefix="tickdeck-atheris-"))
_PATH = _FOLDER / "config.toml"
_ENV = {"TICKDECK_CONFIG_DIR": str(_FOLDER / "no-user-config")}


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        config = load_config(str(_PATH), env=_ENV)
        load_rules(config.rules)
        load_sinks(config.sinks, env=_ENV)
    except (ConfigError, RuleError, SinkError) as exc:
        message = str(exc)
        if "\n" in message or str(_PATH) not in message:
            raise AssertionError(f"not one line naming the file: {message!r}") from None


def main() -> None:
    logging.disable(logging.WARNING)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
