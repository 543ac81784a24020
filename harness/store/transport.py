"""One synchronous HTTP write of a line-protocol body (v1 ``/write`` or v2 ``/api/v2/write``).

Used by the v1 live path and by spool replay. Outcome classes decide what happens to a batch:
2xx written; 400/413/422 rejected (sending it again cannot help: counted and reported); anything
else (refused, timeout, 5xx, 401/403/404) retryable: spooled and replayed later.
"""

from __future__ import annotations

import urllib3

from harness.secrets import redact
from harness.store.target import InfluxTarget

REJECT_STATUSES = (400, 413, 422)


class WriteFailed(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status not in REJECT_STATUSES


class HttpWriter:
    def __init__(self, target: InfluxTarget, pool_size: int = 2):
        self.target = target
        self._pool = urllib3.PoolManager(maxsize=pool_size, retries=False,
                                         timeout=urllib3.Timeout(connect=min(3.0, target.timeout_s),
                                                                 read=target.timeout_s))
        self._url = target.write_url()
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **target.auth_headers()}

    def post(self, body: bytes) -> None:
        """Write one batch; raises :class:`WriteFailed` (message free of secrets)."""
        try:
            r = self._pool.request("POST", self._url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as e:
            raise WriteFailed(redact(f"{type(e).__name__}: {e}", *self.target.secrets())) from None
        if 200 <= r.status < 300:
            return
        text = r.data[:300].decode("utf-8", "replace").strip()
        raise WriteFailed(redact(f"HTTP {r.status}: {text}", *self.target.secrets()), r.status)

    def close(self) -> None:
        self._pool.clear()


def create_database(target: InfluxTarget) -> None:
    """``CREATE DATABASE`` through InfluxQL (1.x); idempotent."""
    pool = urllib3.PoolManager(retries=False, timeout=target.timeout_s)
    try:
        r = pool.request("POST", f"{target.url}/query", fields={"q": f'CREATE DATABASE "{target.database}"'},
                         headers=target.auth_headers(), encode_multipart=False)
    except urllib3.exceptions.HTTPError as e:
        raise WriteFailed(redact(f"{type(e).__name__}: {e}", *target.secrets())) from None
    if r.status >= 300:
        raise WriteFailed(redact(f"CREATE DATABASE: HTTP {r.status}: {r.data[:200]!r}",
                                 *target.secrets()), r.status)
