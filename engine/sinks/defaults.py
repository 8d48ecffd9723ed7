"""Every sink's defaults and bounds, in one place: ``engine.sinks.config`` checks a ``[[sinks]]`` table
against them, and each sink's constructor takes them as its defaults.

Here rather than in ``config`` because the sinks' modules need them and ``config`` imports those modules
(to build the sinks): a sink importing ``config`` would close a cycle, which the import contracts in
``pyproject.toml`` refuse. Pure Python, no imports of the project: any module of the package may import
this one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# jsonl (and the dead-letter files, which are jsonl files)
DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # rotate before the file would grow past this
DEFAULT_BACKUPS = 5  # rotated files kept
MAX_BACKUPS = 1000

# webhook and telegram: queueing and retries (engine.sinks.http)
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 5
MAX_RETRIES = 100
DEFAULT_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 30.0
DEFAULT_QUEUE = 10_000

# telegram
DEFAULT_TOKEN_ENV = "TICKDECK_TELEGRAM_TOKEN"
DEFAULT_TELEGRAM_URL = "https://api.telegram.org"

# metrics
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9464

# websocket (engine.sinks.broadcast)
DEFAULT_WEBSOCKET_HOST = "127.0.0.1"
DEFAULT_WEBSOCKET_PORT = 8765
DEFAULT_WEBSOCKET_FPS = 10.0
MAX_WEBSOCKET_FPS = 60.0
DEFAULT_WEBSOCKET_QUEUE = 1024
DEFAULT_WEBSOCKET_CLIENTS = 256  # each may hold max_queue frames and a 256 kB kernel buffer
MAX_WEBSOCKET_CLIENTS = 100_000
DEFAULT_WEBSOCKET_SUBSCRIPTIONS = 16  # distinct snapshot ``symbols`` lists (each one join of quote texts)
MIN_WEBSOCKET_TOKEN = 16
"""A shorter token is refused at start: 16 random characters are beyond guessing at the throttled rate
(``engine.sinks.admission``)."""

_TELEGRAM_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
TELEGRAM_TOKEN_HELP = "<digits>:<letters, digits, '_' or '-'>, as @BotFather gives it"


def token_problem(env: Mapping[str, str], var: str) -> str | None:
    """Why the bot token in environment variable ``var`` cannot be used, or None when it can. The
    message names the variable and never shows its value. Checked when the config is loaded and again
    when the Telegram sink starts."""
    value = env.get(var)
    if value is None or not value.strip():
        return (f"the environment variable {var} (the Telegram bot token) is not set; set it, or name "
                "another variable with token_env")
    if not _TELEGRAM_TOKEN.fullmatch(value.strip()):
        return f"the environment variable {var} does not hold a bot token ({TELEGRAM_TOKEN_HELP})"
    return None
