"""Check a URL a user typed (a replica, InfluxDB, an emulator) before anything connects to it.

A URL that cannot be right (no scheme, no host, a port that is not a number, spaces) is bad
input: it is refused with one sentence naming what is wrong, never left to fail deep inside an
HTTP client with a traceback or after a 30 s timeout.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_S = 10.0

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return bool(name) and len(name) <= 253 and all(_LABEL.match(p) for p in name.split("."))


def _shown(text: str) -> str:
    """The URL as it may appear in a message: credentials in it never do."""
    return re.sub(r"//[^/@?#]*@", "//***@", text)


def check_http_url(text: object, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``text`` if it is a well-formed http(s) URL with a host and a valid port; else ValueError
    (whose message never repeats credentials written into the URL)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a URL such as http://127.0.0.1:8080")
    if _shown(text) != text:
        raise ValueError(f"a URL carries no credentials (got {_shown(text)!r}); give them by "
                         "environment variable or file")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"a URL cannot contain spaces (got {_shown(text)!r})")
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise ValueError(f"not a URL ({e}): {_shown(text)!r}") from None
    if parts.scheme not in schemes:
        want = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"a URL must start with {want} (got {_shown(text)!r})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port must be a number from 1 to 65535 (got {_shown(text)!r})") from None
    if port == 0:
        raise ValueError(f"the port must be a number from 1 to 65535 (got {_shown(text)!r})")
    host = parts.hostname
    if not host:
        raise ValueError(f"the URL has no host (got {_shown(text)!r})")
    if not _host_ok(host):
        raise ValueError(f"{host!r} is not a valid host name (got {_shown(text)!r})")
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL takes no ?query or #fragment (got {_shown(text)!r})")
    return text


def resolve_host(text: str) -> None:
    """Raise ValueError naming the host when the URL's host does not resolve from here."""
    host = urlsplit(text).hostname or ""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    # a resolver that never answers must not hold the command: ask in a thread, wait a while
    pool = ThreadPoolExecutor(1, thread_name_prefix="resolve")
    try:
        pool.submit(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP).result(RESOLVE_TIMEOUT_S)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) and e.strerror else "not found"
        raise ValueError(f"host {host!r} does not resolve ({reason}): {_shown(text)}") from None
    except FutureTimeout:
        raise ValueError(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s: "
                         f"{_shown(text)}") from None
    finally:
        pool.shutdown(wait=False)
