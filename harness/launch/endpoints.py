"""Replicas that are already running somewhere: the harness only checks that they answer.

The first N of ``target.launcher.urls`` serve a cell with N replicas, so one list serves a sweep
over ``load.replicas: [1, 2, 4]``. Nothing is started and nothing is stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.errors import InputError, LaunchError
from harness.launch.base import Replica, Replicas
from harness.launch.health import is_emulated, is_healthy


class EndpointsLauncher:
    def __init__(self, target, replicas: int, log_dir: Path, *, wait_s: float = 30.0,
                 poll_s: float = 0.5):
        urls = [u.rstrip("/") for u in target.launcher.urls]
        if replicas > len(urls):
            raise InputError(f"{replicas} replicas asked for but only {len(urls)} URLs given",
                             field="target.launcher.urls")
        self.urls = urls[:replicas]
        self.health_path = target.launcher.health_path
        from harness.protocols.access import Access

        self.access = Access.from_target(target)   # https settings and headers (a token) for /health
        self.wait_s = wait_s
        self.poll_s = poll_s

    def __enter__(self) -> Replicas:
        deadline = time.monotonic() + self.wait_s
        waiting = set(range(len(self.urls)))
        while waiting:
            waiting = {i for i in waiting if not is_healthy(self.urls[i], self.health_path, access=self.access)}
            if not waiting:
                break
            if time.monotonic() > deadline:
                bad = ", ".join(f"{self.urls[i]}{self.health_path}" for i in sorted(waiting))
                raise LaunchError(f"endpoint(s) not healthy after {self.wait_s:g} s: {bad}")
            time.sleep(self.poll_s)
        items = [Replica(index=i, url=u) for i, u in enumerate(self.urls)]
        return Replicas(items=items, kind="endpoints",
                        emulated=all(is_emulated(u, access=self.access) for u in self.urls))

    def __exit__(self, exc_type, exc, tb) -> None:
        return None
