"""Replicas given by URL (``run --url``, ``locust --host``): checked to answer before any load.

Nothing is started or stopped. Every URL gets a TCP connection (any server, any protocol, no
health route assumed); when none answers the run is refused with the reason (exit 3, as when
launched replicas never become healthy). Some answering is a warning: the dead ones then
show as ``connect`` errors in the run.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

from harness.errors import LaunchError
from harness.launch.base import Replica, Replicas
from harness.launch.health import is_emulated

log = logging.getLogger(__name__)


def unreachable(url: str, timeout_s: float = 3.0) -> str | None:
    """Why ``url``'s host and port take no TCP connection, or None when one is taken."""
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", port), timeout=timeout_s):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


class GivenUrls:
    """A launcher (context manager) for replicas that already run at ``urls``."""

    def __init__(self, urls: list[str], replicas: int | None = None):
        self.urls = [u.rstrip("/") for u in urls]
        self.replicas = replicas or len(self.urls)

    def __enter__(self) -> Replicas:
        dead = {u: why for u in self.urls if (why := unreachable(u)) is not None}
        if len(dead) == len(self.urls):
            raise LaunchError("no replica answers: " +
                              "; ".join(f"{u}: {why}" for u, why in dead.items()))
        for u, why in dead.items():
            log.warning("replica %s does not answer (%s): its requests will fail as 'connect'", u,
                        why)
        items = [Replica(index=i, url=u) for i, u in enumerate(self.urls)]
        alive = [u for u in self.urls if u not in dead]
        return Replicas(items=items, kind="endpoints",
                        emulated=all(is_emulated(u) for u in alive))

    def __exit__(self, exc_type, exc, tb) -> None:
        return None
