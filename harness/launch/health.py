"""Health probes shared by the launchers: is a replica answering, and is it the emulator?"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path


def is_healthy(url: str, path: str = "/health", timeout_s: float = 2.0, access=None) -> bool:
    """True when ``GET {url}{path}`` answers 200 (any other answer or no answer: False).

    ``access`` (:class:`harness.protocols.access.Access`): the target's TLS settings and headers."""
    if access is not None:
        try:
            return access.get(url.rstrip("/") + path, timeout_s)[0] == 200
        except OSError:
            return False
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_emulated(url: str, timeout_s: float = 2.0, access=None) -> bool:
    """True when the replica is the harness emulator (``GET /emulator/gpu`` says ``emulated``)."""
    if access is not None:
        try:
            status, body = access.get(url.rstrip("/") + "/emulator/gpu", timeout_s)
            return status == 200 and bool(json.loads(body or b"{}").get("emulated"))
        except (OSError, ValueError, AttributeError):
            return False
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/emulator/gpu", timeout=timeout_s) as resp:
            if resp.status != 200:
                return False
            return bool(json.loads(resp.read() or b"{}").get("emulated"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (a launch there would be ambiguous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port_block(n: int, host: str = "127.0.0.1", start: int | None = None, end: int | None = None) -> int:
    """The first port of ``n`` consecutive ports nobody listens on and the OS lets us bind.

    By default from below the kernel's ephemeral range: a server given the block binds it seconds
    later, after its start-up, and there the local port of some client's outgoing connection can
    never take one first."""
    import random

    if end is None:
        try:
            end = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            end = 32768
    if start is None:
        start = min(20000, end // 2)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(start, end - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no block of {n} free ports on {host}")
