"""Suite-wide guard: tests talk to servers on 127.0.0.1 only, never the internet.

Any name lookup of a host other than the loopback names fails at once, so a test that forgot to point
a feed at its local server fails loudly (and fast) instead of reaching out or hanging on DNS.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from curl_cffi import CurlECode
from curl_cffi.requests import AsyncSession
from curl_cffi.requests.exceptions import DNSError

from tests.fuzz_settings import pytest_terminal_summary  # noqa: F401  (prints the fuzz tests' input counts)

_LOCAL = {"localhost", "", None}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_literal(name: str) -> bool:
    """An address literal on loopback (127.0.0.0/8, ::1); a name such as ``127.example.com`` is not one."""
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in _LOCAL and not _loopback_literal(str(name)):
        raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {name!r}: use a local server")
    return _real_getaddrinfo(host, *args, **kwargs)


_real_curl_request = AsyncSession.request


async def _curl_loopback_only(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
    """libcurl (Yahoo's requests, through curl_cffi) resolves names in C, past ``socket.getaddrinfo``."""
    name = urlsplit(url).hostname
    if name not in _LOCAL and not _loopback_literal(str(name)):
        raise DNSError(f"tests may not resolve {name!r}: use a local server", CurlECode.COULDNT_RESOLVE_HOST)
    return await _real_curl_request(self, method, url, *args, **kwargs)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only)
    monkeypatch.setattr(AsyncSession, "request", _curl_loopback_only)
    yield


@pytest.fixture(autouse=True)
def _own_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bar store and the state file (watchlists, positions) of a test and of the processes it starts
    are its own, never the user's: ``$TICKDECK_DATA_DIR`` and, for fixtures that clear every
    ``TICKDECK_*`` variable, the XDG data and state homes that platformdirs reads on Linux."""
    base = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("TICKDECK_DATA_DIR", str(base / "tickdeck"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "xdg-state"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TICKDECK_* settings and no user config from the machine running the tests (the numba cache
    location is kept: it only says where compiled kernels are)."""
    for var in list(os.environ):
        if var.startswith("TICKDECK_") and var != "TICKDECK_NUMBA_CACHE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("TICKDECK_CONFIG_DIR", str(tmp_path / "user-config"))
