"""Loopback ports for test servers: one nobody holds, and whether one answers."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from harness.launch.health import free_port_block


def free_port() -> int:
    """A port on 127.0.0.1 that no one listens on right now, below the ephemeral range (see
    :func:`port_block`): the server given it binds it seconds later, after its start-up."""
    return port_block(1)


def port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports below the kernel's ephemeral range: a server
    that binds one seconds later (after its start-up) cannot find it taken by the local port of
    some client's outgoing connection, as one in that range can be."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return free_port_block(n, start=min(20000, low // 2), end=low)


def dead_url() -> str:
    """An http URL on 127.0.0.1 that refuses connections."""
    return f"http://127.0.0.1:{free_port()}"


def port_open(url: str) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    u = urlparse(url)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((u.hostname, u.port)) == 0
