"""Client-side choice of replica per request: least outstanding requests, or round robin.

A replica that refused a connection is skipped for ``down_s`` (while another is up), so a dead
replica - which answers instantly and so always has the fewest outstanding requests - does not
draw all the load; it is retried after that pause, and every refusal is still recorded.
"""

from __future__ import annotations

import time


class ReplicaPicker:
    """Tracks this process's outstanding requests per replica URL."""

    def __init__(self, urls: list[str], policy: str = "least-outstanding", down_s: float = 1.0):
        if not urls:
            raise ValueError("no replica URLs")
        if policy not in ("least-outstanding", "round-robin"):
            raise ValueError(f"unknown balance policy {policy!r}")
        self.urls = [u.rstrip("/") for u in urls]
        self.policy = policy
        self.outstanding = {u: 0 for u in self.urls}
        self.down_until = {u: 0.0 for u in self.urls}
        self.down_s = down_s
        self._rr = 0

    def mark_down(self, url: str) -> None:
        self.down_until[url] = time.monotonic() + self.down_s

    def _up(self) -> list[str]:
        now = time.monotonic()
        up = [u for u in self.urls if self.down_until[u] <= now]
        return up or self.urls

    def _choices(self) -> list[str]:
        return self.urls if len(self.urls) == 1 else self._up()

    def acquire(self) -> str:
        urls = self._choices()
        n = len(urls)
        if self.policy == "round-robin" or n == 1:
            url = urls[self._rr % n]
            self._rr += 1
        else:
            # ties go round robin so equal replicas share the load evenly
            start = self._rr
            self._rr += 1
            best = None
            for k in range(n):
                u = urls[(start + k) % n]
                if best is None or self.outstanding[u] < self.outstanding[best]:
                    best = u
            url = best
        self.outstanding[url] += 1
        return url

    def prefers(self, url: str) -> bool:
        """Whether :meth:`acquire` would pick ``url`` now, counting one of its requests as done
        (a closed loop's chain: the request whose end is being read). A chained request stays on
        its socket only then, so the policy still decides where load goes: a replica back from
        the dead, or a less loaded one, draws streams over as it would without the chain. Ties go
        to ``url``. Round robin advances as if ``url`` had been acquired."""
        urls = self._choices()
        if url not in urls:
            return False
        n = len(urls)
        if n == 1:
            return True
        if self.policy == "round-robin":
            if urls[self._rr % n] != url:
                return False
            self._rr += 1
            return True
        mine = self.outstanding[url] - 1
        return all(mine <= self.outstanding[u] for u in urls if u != url)

    def hold(self, url: str) -> None:
        """Count a request already sent to ``url`` (a closed loop's chained request)."""
        self.outstanding[url] += 1

    def release(self, url: str) -> None:
        self.outstanding[url] -= 1
