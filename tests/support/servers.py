"""Real database servers for tests: InfluxDB 1.x (``influxd``) and VictoriaMetrics, started as
plain processes on 127.0.0.1 with free ports and temporary directories, stopped by PID.

Each server keeps its port and data directory across ``kill()`` / ``start()`` so a test can take
it down mid-run and bring the same database back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        raise RuntimeError(f"{name} is not installed; run scripts/install-test-deps.sh (make test-deps)")
    return path


class _Server:
    name = "server"

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = root / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> "_Server":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: "
                                   f"{self.log_path.read_text()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout_s} s; log: {self.log_path}")

    def _get(self, path: str, timeout: float = 1.0) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status
        except Exception:  # noqa: BLE001 - not up yet
            return 0

    def pause(self) -> None:
        """SIGSTOP: the server holds connections but answers nothing (a database that is slow)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the server dies mid-write, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a graceful stop (the server flushes what it acknowledged)."""
        self._end(signal.SIGTERM)

    def _end(self, sig) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class InfluxServer(_Server):
    """InfluxDB 1.x: ``/write`` and InfluxQL ``/query`` (Debian's 1.6.7 has no ``/api/v2``)."""

    name = "influxd"

    def __init__(self, root: Path, auth: bool = False):
        super().__init__(root)
        self.auth = auth
        self.rpc_port = free_port()
        self.config = root / "influxdb.conf"
        self.config.write_text(f"""
reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  index-version = "inmem"
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[retention]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
  suppress-logo = true
[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
""")

    def argv(self) -> list[str]:
        return [_binary("influxd"), "-config", str(self.config)]

    def ready(self) -> bool:
        return self._get("/ping") == 204

    def create_admin(self, user: str, password: str) -> None:
        """The first user may be created without credentials even with auth on."""
        self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")

    def query(self, q: str, db: str | None = None) -> dict:
        import json
        import urllib.parse

        data = {"q": q, "epoch": "ns"}
        if db:
            data["db"] = db
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(data).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


class VictoriaMetricsServer(_Server):
    """VictoriaMetrics: ingests influxdb-client's ``/api/v2/write`` (series ``<measurement>_<field>``)."""

    name = "victoria-metrics"

    def argv(self) -> list[str]:
        return [_binary("victoria-metrics"), f"-storageDataPath={self.root}/data",
                f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=ERROR",
                "-search.disableCache", "-retentionPeriod=100y"]

    def ready(self) -> bool:
        return self._get("/health") == 200


@pytest.fixture
def influxdb(tmp_path):
    srv = InfluxServer(tmp_path / "influxdb").start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def influxdb_auth(tmp_path):
    """InfluxDB with authentication on and one admin user ``admin`` / ``s3cret-admin-pw``."""
    srv = InfluxServer(tmp_path / "influxdb-auth", auth=True).start()
    try:
        srv.create_admin("admin", "s3cret-admin-pw")
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def victoria(tmp_path):
    srv = VictoriaMetricsServer(tmp_path / "victoria").start()
    try:
        yield srv
    finally:
        srv.kill()
