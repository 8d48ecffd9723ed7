"""The log of the headless service and of ``tickdeck sink``: tickdeck's INFO and everyone's WARNING
records on standard error, as text or as one JSON object per line (``--log-format json``) with the
record's event and fields, so a journal or a log shipper can read them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event ("log" unless given), message, and the
    record's ``fields`` (``extra={"event": ..., "fields": {...}}``) merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "event": getattr(record, "event", "log"),
                               "message": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{_iso(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def install_logging(log_format: LogFormat, stream: TextIO) -> Callable[[], None]:
    """Send tickdeck's INFO and everyone's WARNING records (and Python warnings) to ``stream`` in the
    format asked for; returns the function that undoes it."""
    root, ours = logging.getLogger(), logging.getLogger("tickdeck")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else TextLogFormatter())
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.INFO)
    logging.captureWarnings(True)

    def restore() -> None:
        logging.captureWarnings(False)
        ours.setLevel(level)
        root.removeHandler(handler)
        handler.flush()

    return restore
