"""The Telegram sink: every signal as a message from a bot, through the Bot API's ``sendMessage``.

Each signal is one ``POST {base_url}/bot<token>/sendMessage`` with the JSON body ``{"chat_id", "text",
"parse_mode": "HTML", "disable_web_page_preview": true}``; the text reads, for example::

    ▲ BTCUSDT  rsi_oversold          (the symbol in bold)
    price 64123.45
    rsi_14 29.43 · level 30
    bar 2024-05-31 14:05 UTC

Queueing, retries and the dead-letter file are ``engine.sinks.http.HttpSink``'s, as for the webhook sink.
Telegram answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description",
"parameters"}``: a 429 (``parameters.retry_after`` seconds: the bot sends too fast) and a 5xx are
retried, after the delay Telegram asks for when it gives one; any other error (a chat the bot cannot
write to, a token Telegram refuses) is not, and goes to the dead-letter file with Telegram's description.

The bot token comes from the environment variable ``token_env`` names (``TICKDECK_TELEGRAM_TOKEN`` by
default), read when the sink starts. It is part of every request's URL, so it is kept out of everything
the sink shows: logs, stats, ``repr``, dead letters and exception messages name the variable, never the
value.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter, SinkStartError
from engine.sinks.defaults import DEFAULT_TELEGRAM_URL, DEFAULT_TOKEN_ENV, token_problem
from engine.sinks.http import HttpSink, Outcome, excerpt, origin, retry_after

log = logging.getLogger("tickdeck.sinks")

MAX_VALUES = 12  # operands shown in a message; a rule with more says "+N more"
REDACTED = "<token>"


def message(signal: Signal) -> str:
    """The text of a signal's message, in Telegram's HTML (everything from the signal is escaped)."""
    arrow = "▲" if signal.direction == "up" else "▼"
    lines = [f"{arrow} <b>{_esc(signal.symbol)}</b>  {_esc(signal.rule)}",
             f"price {_number(signal.price, 10)}"]
    values = [f"{_esc(k)} {_number(v)}" for k, v in list(signal.values.items())[:MAX_VALUES]]
    if len(signal.values) > MAX_VALUES:
        values.append(f"+{len(signal.values) - MAX_VALUES} more")
    if values:
        lines.append(" · ".join(values))
    if (p := signal.position) is not None:  # a position rule's signal: what the position stands at
        # (a bare & is malformed in Telegram's HTML: "&" must be written &amp;, per its formatting docs)
        pct = p.get("unrealized_pct", math.nan)
        lines.append(f"position {_number(p.get('quantity', math.nan), 12)} @ "
                     f"{_number(p.get('average_cost', math.nan), 10)} · P&amp;L "
                     f"{_signed(p.get('unrealized', math.nan))} ({_signed(pct, 3)}%)")
    bar = datetime.fromtimestamp(signal.bar_time / 1e9, UTC)
    shown = "%Y-%m-%d %H:%M" if bar.second == 0 and bar.microsecond == 0 else "%Y-%m-%d %H:%M:%S"
    lines.append(f"bar {bar.strftime(shown)} UTC" + (" · history (warm-up)" if signal.warmup else ""))
    return "\n".join(lines)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _signed(x: float, digits: int = 6) -> str:
    text = _number(x, digits)
    return text if text == "n/a" or text.startswith("-") or text == "0" else f"+{text}"


def _number(x: float, digits: int = 6) -> str:
    """``x`` to ``digits`` significant digits, in plain notation (a price of 0.00001234 stays readable)."""
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    decimals = min(max(digits - 1 - math.floor(math.log10(abs(x))), 0), 12)
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class TelegramSink(HttpSink):
    """Signals as messages to ``chat_id`` from the bot whose token is in ``$token_env``."""

    type = "telegram"

    def __init__(self, chat_id: int | str, *, token_env: str = DEFAULT_TOKEN_ENV,
                 base_url: str = DEFAULT_TELEGRAM_URL, env: Mapping[str, str] | None = None,
                 name: str = "telegram", filter: SignalFilter = ANY,
                 dead_letter: str | os.PathLike[str] | None = None, **delivery: Any) -> None:
        super().__init__(name, filter, dead_letter=dead_letter or f"{name}.dead.jsonl", **delivery)
        self.chat_id = chat_id
        self.token_env = token_env
        self.base_url = base_url.rstrip("/")
        self._env = env
        self._token = ""  # read by ``check``, at start
        self._secrets: tuple[str, ...] = ()
        self._url = ""

    @property
    def endpoint(self) -> str:
        return origin(self.base_url)

    def __repr__(self) -> str:
        return (f"<TelegramSink {self.name!r} to chat {self.chat_id} via {self.endpoint}, "
                f"token in ${self.token_env}>")

    def check(self) -> None:
        env = os.environ if self._env is None else self._env
        problem = token_problem(env, self.token_env)
        if problem is not None:
            raise SinkStartError(f"telegram sink {self.name}: {problem}")
        token = env[self.token_env].strip()
        self._token = token
        # the forms the token may take in a message: as is, and percent-encoded in a URL
        self._secrets = tuple(sorted({token, quote(token), quote(token, safe="")}, key=len, reverse=True))
        self._url = f"{self.base_url}/bot{token}/sendMessage"

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "chat_id": self.chat_id, "token_env": self.token_env}

    async def attempt(self, session: aiohttp.ClientSession, signal: Signal) -> Outcome:
        payload = {"chat_id": self.chat_id, "text": message(signal), "parse_mode": "HTML",
                   "disable_web_page_preview": True}
        async with session.post(self._url, json=payload, allow_redirects=False) as response:
            body = await self.read_answer(response)
            status = response.status
            header_wait = retry_after(response.headers.get("Retry-After"))
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):  # not the Bot API talking (a proxy's error page)
            detail = f"HTTP {status}: {excerpt(body)}" if body.strip() else f"HTTP {status}"
            if 200 <= status < 300:
                return Outcome(False, reason="rejected", detail=f"not a Bot API answer: {detail}")
            return Outcome(False, retry=status == 429 or status >= 500, wait=header_wait, detail=detail)
        if answer.get("ok") is True and 200 <= status < 300:
            return Outcome(True)
        code = answer.get("error_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else status
        description = str(answer.get("description") or "no description")[:200]
        detail = f"Telegram {code}: {description}"
        parameters = answer.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        if code == 429 or status == 429:
            asked = parameters.get("retry_after")
            wait = header_wait
            if isinstance(asked, int | float) and not isinstance(asked, bool) and math.isfinite(asked):
                wait = max(float(asked), 0.0)
            return Outcome(False, retry=True, wait=wait, detail=detail)
        if code >= 500 or status >= 500:
            return Outcome(False, retry=True, wait=header_wait, detail=detail)
        if code in (401, 404) and "token" not in self._logged:
            self._logged.add("token")
            log.error("sink %s: Telegram refused the bot token in $%s (%s); check the variable",
                      self.name, self.token_env, self.redact(detail))
        moved = parameters.get("migrate_to_chat_id")
        if isinstance(moved, int) and not isinstance(moved, bool):
            detail += f"; the group is now chat {moved}: set chat_id = {moved}"
        return Outcome(False, reason="rejected", detail=detail)
