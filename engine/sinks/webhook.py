"""The webhook sink: every signal POSTed as JSON (``Signal.to_dict()``) to a URL.

Queueing, retries and the dead-letter file are ``engine.sinks.http.HttpSink``'s: an answer in 2xx is a
delivery; a timeout, a connection error, a 5xx or a 429 is retried (after the server's ``Retry-After``
when it gives one); any other answer (a 4xx other than 429, a redirect) goes to the dead-letter file.

The webhook URL's path and the header values are never logged or shown in stats (a webhook's path is
often its secret): only its origin is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from engine.signals.events import Signal
from engine.sinks.base import ANY, SignalFilter
from engine.sinks.http import HttpSink, Outcome, excerpt, origin, retry_after


def encode_json(signal: Signal) -> bytes:
    """The body a webhook receives: ``Signal.to_dict()`` as strict JSON (no NaN), UTF-8."""
    return json.dumps(signal.to_dict(), separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False).encode("utf-8")


class WebhookSink(HttpSink):
    """Every signal POSTed to ``url`` as ``Signal.to_dict()`` JSON (``Content-Type: application/json``),
    with any extra ``headers``. A 2xx answer is a delivery."""

    type = "webhook"

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, name: str = "webhook",
                 filter: SignalFilter = ANY, dead_letter: str | os.PathLike[str] | None = None,
                 **delivery: Any) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook needs an http:// or https:// URL, got one for {origin(url)!r}")
        super().__init__(name, filter, dead_letter=dead_letter or f"{name}.dead.jsonl", **delivery)
        self.url = url
        self._headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        self._headers.update(headers or {})

    @property
    def endpoint(self) -> str:
        return origin(self.url)

    async def attempt(self, session: aiohttp.ClientSession, signal: Signal) -> Outcome:
        async with session.post(self.url, data=encode_json(signal), headers=self._headers,
                                allow_redirects=False) as response:
            body = await self.read_answer(response)
            if 200 <= response.status < 300:
                return Outcome(True)
            detail = f"HTTP {response.status} {response.reason or ''}".rstrip()
            if body.strip():
                detail += f": {excerpt(body)}"
            if response.status == 429 or response.status >= 500:
                return Outcome(False, retry=True, wait=retry_after(response.headers.get("Retry-After")),
                               detail=detail)
            return Outcome(False, reason="rejected", detail=detail)
