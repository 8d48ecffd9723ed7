"""Whether a host name or address stays on this machine: the one test behind "a listener off loopback
needs a token" (``engine.sinks.config``, ``engine.sinks.broadcast``) and "a token sent to another
machine over plain ``ws://`` travels in clear text" (``tickdeck attach``).

Decided on addresses, never on spelling: ``127.example.com`` is a public name like any other, and
``localhost`` is loopback because it resolves to 127.0.0.1 or ::1, not because of its name. A name is
loopback only when every address it resolves to is one (a name that also resolves to a public address
would serve there too); a name that does not resolve is not. Pure standard library: the config check
imports it.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 (Python 3.11 calls it not loopback)
    return ip


def resolve(host: str) -> tuple[IPAddress, ...]:
    """The addresses ``host`` stands for: itself when it is an address literal (``[::1]`` too), else what
    the system resolver returns; () when it does not resolve."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        return ()
    literal = _address(name)
    if literal is not None:
        return (literal,)
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # gaierror is an OSError; an over-long label is a UnicodeError
        return ()
    found = (_address(str(info[4][0])) for info in infos)
    return tuple(dict.fromkeys(ip for ip in found if ip is not None))


def is_loopback(host: str) -> bool:
    """True when ``host`` resolves, and every address it resolves to is a loopback address."""
    addresses = resolve(host)
    return bool(addresses) and all(ip.is_loopback for ip in addresses)
