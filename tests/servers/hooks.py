"""Local stand-ins for what the network sinks talk to: a webhook receiver and Telegram's Bot API
(``sendMessage``), both on 127.0.0.1 (port 0).

``WebhookServer`` records every request (method, path, headers, raw body) and answers 200 with an empty
JSON object, unless a scripted answer is queued: ``answer(status, headers=..., body=...)`` or ``stall(s)``
replace the next answer, in order, so a test scripts exactly which request fails and how.

``TelegramServer`` answers as the Bot API does (https://core.telegram.org/bots/api#making-requests):
``POST /bot<token>/<method>`` with a JSON (or form) body; every answer is a JSON object with ``ok``, and
either ``result`` or ``error_code``, ``description`` and, for some errors, ``parameters``. A token other
than its own gets 401 ``Unauthorized``; another method 404 ``Not Found``; an unknown chat 400 ``Bad
Request: chat not found``; HTML it cannot parse (``parse_mode`` HTML allows b, strong, i, em, u, ins, s,
strike, del, a, code, pre, span, tg-spoiler, blockquote; other text must escape <, > and &) 400 ``Bad
Request: can't parse entities: ...``. A sent message's result is a Message: the text without its tags,
with ``entities`` (offsets in UTF-16 code units). ``rate_limit(n)`` makes the next request a 429 with
``parameters.retry_after = n``; ``fail(code, description)`` any other error.

Neither server logs requests (``access_log=None``): a request path holds the bot token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

ALLOWED_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
                "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
                "a": "text_link", "code": "code", "pre": "pre", "span": "spoiler", "tg-spoiler": "spoiler",
                "blockquote": "blockquote"}
MAX_TEXT = 4096


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released): connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    stall_s: float = 0.0  # wait this long (or until the server closes) before answering


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Server:
    def __init__(self) -> None:
        self.url = ""
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        """Stalled answers go out now, and later stalls do not wait."""
        self._closing.set()

    async def stalled(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


class WebhookServer(_Server):
    """``async with WebhookServer() as server:`` then POST to ``server.url + "/hook"`` (any path)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []  # every request, in order, answered or not
        self.answers: deque[Answer] = deque()

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._hook)

    def answer(self, status: int, *, headers: dict[str, str] | None = None, body: bytes = b"",
               times: int = 1) -> None:
        for _ in range(times):
            self.answers.append(Answer(status, dict(headers or {}), body))

    def stall(self, seconds: float = 30.0, times: int = 1) -> None:
        for _ in range(times):
            self.answers.append(Answer(stall_s=seconds))

    @property
    def bodies(self) -> list[Any]:
        return [r.json() for r in self.received]

    async def __aenter__(self) -> WebhookServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path, dict(request.headers), body))
        answer = self.answers.popleft() if self.answers else Answer()
        if answer.stall_s:
            await self.stalled(answer.stall_s)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers,
                            content_type="application/json" if answer.body.startswith(b"{") else "text/plain")


class _Entities(HTMLParser):
    """Telegram's HTML parse mode: the plain text and its entities, or ``error`` (as Telegram words it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.entities: list[dict[str, Any]] = []
        self.open: list[tuple[str, int]] = []  # (tag, start offset in UTF-16 units)
        self.error = ""

    def units(self) -> int:
        return len(self.text.encode("utf-16-le")) // 2

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS and not self.error:
            self.error = f'Unsupported start tag "{tag}" at byte offset {self.units()}'
        self.open.append((tag, self.units()))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1][0] != tag:
            self.error = self.error or f'Unexpected end tag at byte offset {self.units()}'
            return
        _, start = self.open.pop()
        end = self.units()
        if end > start:
            self.entities.append({"offset": start, "length": end - start, "type": ALLOWED_TAGS.get(tag, tag)})

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_html(text: str) -> tuple[str, list[dict[str, Any]], str]:
    """(plain text, entities, error) for a message in Telegram's HTML parse mode."""
    parser = _Entities()
    parser.feed(text)
    parser.close()
    if parser.open and not parser.error:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.open[-1][0]}"'
    return parser.text, sorted(parser.entities, key=lambda e: e["offset"]), parser.error


class TelegramServer(_Server):
    """``async with TelegramServer(token, chats=[42]) as server:`` then ``base_url = server.url``."""

    BOT = {"id": 7000000001, "is_bot": True, "first_name": "tickdeck test", "username": "tickdeck_test_bot"}

    def __init__(self, token: str, chats: tuple[int | str, ...] = (42,)) -> None:
        super().__init__()
        self.token = token
        self.chats = set(chats)
        self.requests: list[Received] = []  # every request, in order
        self.messages: list[dict[str, Any]] = []  # the parameters of every message sent
        self.errors: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._message_id = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._api)

    def rate_limit(self, retry_after: int) -> None:
        """The next request is refused for flooding, as Telegram does."""
        self.fail(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def fail(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        self.errors.append((code, description, dict(parameters or {})))

    async def __aenter__(self) -> TelegramServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Received(request.method, request.path, dict(request.headers), body))
        prefix, _, method = request.path.lstrip("/").partition("/")
        if not prefix.startswith("bot") or prefix[3:] != self.token:
            return _error(401, "Unauthorized")
        if method != "sendMessage":
            return _error(404, "Not Found")
        if self.errors:
            return _error(*self.errors.popleft())
        params = self._params(request, body)
        if params is None:
            return _error(400, "Bad Request: can't parse JSON")
        chat = params.get("chat_id")
        if chat not in self.chats and str(chat) not in {str(c) for c in self.chats}:
            return _error(400, "Bad Request: chat not found")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        entities: list[dict[str, Any]] = []
        if params.get("parse_mode") == "HTML":
            text, entities, error = parse_html(text)
            if error:
                return _error(400, f"Bad Request: can't parse entities: {error}")
        if len(text) > MAX_TEXT:
            return _error(400, "Bad Request: message is too long")
        self.messages.append(params)
        self._message_id += 1
        result: dict[str, Any] = {"message_id": self._message_id, "from": self.BOT,
                                  "chat": {"id": chat, "first_name": "Ann", "type": "private"},
                                  "date": int(time.time()), "text": text}
        if entities:
            result["entities"] = entities
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _params(request: web.Request, body: bytes) -> dict[str, Any] | None:
        if request.content_type == "application/json":
            try:
                params = json.loads(body)
            except ValueError:
                return None
            return params if isinstance(params, dict) else None
        return dict(parse_qsl(body.decode("utf-8", "replace")))


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    payload: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return web.json_response(payload, status=code)
