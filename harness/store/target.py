"""Where the store writes and reads: URL, API flavour, database/bucket, and the credentials.

Credentials are :class:`harness.secrets.Secret` objects read from an environment variable or a
file; they travel only in the ``Authorization`` header, never in a URL, log line or error.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import urlencode

from harness.errors import InputError
from harness.secrets import Secret


@dataclass(frozen=True)
class InfluxTarget:
    url: str
    api: str = "v2"                      # "v2": /api/v2/write (1.8+, 2.x, 3.x); "v1": /write
    org: str | None = None
    bucket: str | None = None
    database: str | None = None          # v1 writes, and InfluxQL reads everywhere
    retention_policy: str | None = None
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    timeout_s: float = 10.0

    def __post_init__(self):
        if self.api not in ("v1", "v2"):
            raise InputError(f"unknown api {self.api!r} (v1 or v2)", field="store.influxdb.api")
        if self.api == "v2" and not (self.bucket or self.database):
            raise InputError("the v2 API needs a bucket (or a database, written as bucket "
                             "'database/retention')", field="store.influxdb.bucket")
        if self.api == "v1" and not self.database:
            raise InputError("the v1 API needs a database", field="store.influxdb.database")

    @classmethod
    def from_config(cls, cfg) -> "InfluxTarget":
        """From the scenario's ``store.influxdb`` section (``harness.scenario.models.InfluxDB``)."""
        import os

        token = Secret.from_sources(cfg.token_env, cfg.token_file)
        username = os.environ.get(cfg.username_env) if cfg.username_env else None
        password = Secret.from_sources(cfg.password_env) if cfg.password_env else None
        return cls(url=cfg.url.rstrip("/"), api=cfg.api, org=cfg.org, bucket=cfg.bucket,
                   database=cfg.database, token=token, username=username, password=password)

    @property
    def write_bucket(self) -> str:
        if self.bucket:
            return self.bucket
        return self.database + (f"/{self.retention_policy}" if self.retention_policy else "")

    def auth_headers(self) -> dict[str, str]:
        if self.username and self.password:
            raw = f"{self.username}:{self.password.reveal()}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if self.token:
            return {"Authorization": "Token " + self.token.reveal()}
        return {}

    def client_token(self) -> str | None:
        """The token influxdb-client sends (1.8's v2 API takes ``user:password``)."""
        if self.token:
            return self.token.reveal()
        if self.username and self.password:
            return f"{self.username}:{self.password.reveal()}"
        return None

    def write_url(self) -> str:
        if self.api == "v1":
            q = {"db": self.database, "precision": "ns"}
            if self.retention_policy:
                q["rp"] = self.retention_policy
            return f"{self.url}/write?{urlencode(q)}"
        q = {"bucket": self.write_bucket, "precision": "ns"}
        if self.org:
            q["org"] = self.org
        return f"{self.url}/api/v2/write?{urlencode(q)}"

    def secrets(self) -> tuple:
        return (self.token, self.password)
