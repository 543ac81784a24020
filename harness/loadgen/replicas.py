"""Client-side choice of replica per request: least outstanding requests, or round robin."""

from __future__ import annotations


class ReplicaPicker:
    """Tracks this process's outstanding requests per replica URL."""

    def __init__(self, urls: list[str], policy: str = "least-outstanding"):
        if not urls:
            raise ValueError("no replica URLs")
        if policy not in ("least-outstanding", "round-robin"):
            raise ValueError(f"unknown balance policy {policy!r}")
        self.urls = [u.rstrip("/") for u in urls]
        self.policy = policy
        self.outstanding = {u: 0 for u in self.urls}
        self._rr = 0

    def acquire(self) -> str:
        n = len(self.urls)
        if self.policy == "round-robin" or n == 1:
            url = self.urls[self._rr % n]
            self._rr += 1
        else:
            # ties go round robin so equal replicas share the load evenly
            start = self._rr
            self._rr += 1
            best = None
            for k in range(n):
                u = self.urls[(start + k) % n]
                if best is None or self.outstanding[u] < self.outstanding[best]:
                    best = u
            url = best
        self.outstanding[url] += 1
        return url

    def release(self, url: str) -> None:
        self.outstanding[url] -= 1
