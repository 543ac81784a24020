"""Loopback ports for test servers: one nobody holds, and whether one answers."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from harness.launch.health import free_port_block


def free_port() -> int:
    """A port on 127.0.0.1 that no one listens on right now, from below the ephemeral range
    (:func:`harness.launch.health.free_port_block`): the server given it binds it seconds later."""
    return free_port_block(1)


def dead_url() -> str:
    """An http URL on 127.0.0.1 that refuses connections."""
    return f"http://127.0.0.1:{free_port()}"


def port_open(url: str) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    u = urlparse(url)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((u.hostname, u.port)) == 0
