"""Yahoo's HTTP requests, made with a browser's TLS fingerprint (``curl_cffi``).

Yahoo tells clients apart by their TLS handshake (the JA3/JA4 fingerprint) and HTTP/2 settings as well as
their User-Agent, and answers 429 to those that look like a script: aiohttp's fingerprint is Python's
OpenSSL defaults, whatever User-Agent it sends. yfinance met this in 2024 and moved its requests to
``curl_cffi`` with ``impersonate="chrome"`` (yfinance/_http.py, ``new_session``: "Prefers curl_cffi for
browser TLS impersonation"; plain requests is its fallback, "best-effort ... Yahoo Finance may rate-limit
or block this client"). This module does the same, and only for Yahoo: one ``AsyncSession`` per feed, its
cookie jar holding the session cookie (A3) that the crumb is issued for.

The same code talks to the loopback stand-in in the tests (plain HTTP on 127.0.0.1: the impersonation
changes the TLS handshake and headers, not the protocol), so what the tests exercise is what users run.
Bodies are read as a stream and dropped past a cap (counted after decompression: curl inflates), and a
failed request becomes one line a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from curl_cffi import CurlECode
from curl_cffi.requests import AsyncSession
from curl_cffi.requests.exceptions import RequestException

IMPERSONATE = "chrome"  # curl_cffi's newest Chrome profile: TLS, HTTP/2 and headers as Chrome sends them
MAX_REDIRECTS = 8


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes | None  # None: longer than the cap (not read past it)
    retry_after: str | None
    url: str  # where the last redirect led


class RequestFailed(Exception):
    """No answer: ``reason`` says why in one line; ``timeout`` tells a timeout from a connection error."""

    def __init__(self, reason: str, timeout: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


class YahooSession:
    """One curl_cffi session (connection pool and cookie jar) for every Yahoo request of a feed."""

    def __init__(self, max_clients: int = 4) -> None:
        self._session: AsyncSession[Any] = AsyncSession(impersonate=IMPERSONATE, max_clients=max_clients,
                                     max_redirects=MAX_REDIRECTS)

    async def request(self, method: str, url: str, *, params: dict[str, str] | None = None,
                      data: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                      limit: int, timeout: float) -> Answer:
        try:
            response = await self._session.request(
                method, url, params=params, data=data, headers=headers, timeout=timeout, stream=True,  # type: ignore[arg-type]
                allow_redirects=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_content():
                    body += chunk
                    if len(body) > limit:
                        return Answer(response.status_code, None, None, str(response.url))
            finally:
                await response.aclose()
        except RequestException as exc:
            raise RequestFailed(describe(exc, url, timeout), _is_timeout(exc)) from exc
        return Answer(response.status_code, bytes(body), response.headers.get("Retry-After"),
                      str(response.url))

    def has_cookie(self, name: str) -> bool:
        return any(cookie.name == name for cookie in self._session.cookies.jar)

    def clear_cookies(self) -> None:
        self._session.cookies.clear()

    async def close(self) -> None:
        await self._session.close()


def _is_timeout(exc: RequestException) -> bool:
    return getattr(exc, "code", None) == CurlECode.OPERATION_TIMEDOUT


_TLS = {CurlECode.SSL_CONNECT_ERROR, CurlECode.PEER_FAILED_VERIFICATION, CurlECode.SSL_CERTPROBLEM,
        CurlECode.SSL_CIPHER, CurlECode.SSL_CACERT_BADFILE, CurlECode.SSL_ENGINE_NOTFOUND}


def describe(exc: RequestException, url: str, timeout: float) -> str:
    """Why a request failed, in one line: DNS, refused, TLS, timeout, dropped connection (the curl error
    codes of libcurl-errors.html)."""
    host = urlsplit(url).netloc or url
    code = getattr(exc, "code", None)
    detail = str(exc).split("curl: (", 1)[-1].split(")", 1)[-1].split(". See https://curl.se", 1)[0].strip()
    if code == CurlECode.COULDNT_RESOLVE_HOST:
        return f"DNS lookup failed for {host}: {detail}"
    if code == CurlECode.COULDNT_CONNECT:
        return f"connection refused by {host}"
    if code == CurlECode.OPERATION_TIMEDOUT:
        return f"no answer from {host} within {timeout:g} s"
    if code in _TLS:  # OpenSSL's reason, the last part of "error:100000f7:SSL routines:...:REASON"
        return f"TLS error with {host}: {detail.rsplit(':', 1)[-1] if 'SSL routines' in detail else detail}"
    if code in (CurlECode.GOT_NOTHING, CurlECode.RECV_ERROR, CurlECode.SEND_ERROR, CurlECode.PARTIAL_FILE):
        return f"{host} closed the connection"
    if code == CurlECode.TOO_MANY_REDIRECTS:
        return f"more than {MAX_REDIRECTS} redirects from {host}"
    return f"{type(exc).__name__} from {host}: {detail or exc}"
