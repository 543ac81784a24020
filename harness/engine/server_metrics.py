"""The replicas' own ``/metrics`` during a run, used defensively like GPU telemetry.

The scraping and parsing run in a process of their own
(:mod:`harness.telemetry.scrape_process`), started when the run opens and told each replica
group's URLs: the load generator's process spends no CPU on it. That process writes the rows
itself, to the run directory's journal (compacted into ``server_metrics.parquet`` when the run
closes) and to the store (measurement ``server_metric``; histograms' buckets only with
``store_buckets``); its counts, failures included, go into ``manifest.json: server_metrics``. A
scraper process that cannot start, or stops answering, is logged and the run goes on."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from harness.engine.hooks import Hook

log = logging.getLogger(__name__)

_START_WAIT_S = 30.0     # interpreter start and imports on a loaded host, then the first scrape


class ServerMetrics(Hook):
    def __init__(self, scenario, rundir):
        self.cfg = scenario.telemetry.server_metrics
        self.scenario = scenario
        self.rundir = rundir
        self.proc: subprocess.Popen | None = None
        self.running = False
        self._buf = b""
        self._closed = False
        self.spawn()      # it imports while the run opens its store and brings replicas up

    # -- hooks ---------------------------------------------------------------------------------
    def on_group_start(self, replicas: int, urls: list[str], telemetry_note: str) -> None:
        self.start(urls)

    def on_group_done(self, replicas: int) -> None:
        self.stop()

    # -- the scraper process -------------------------------------------------------------------
    def spawn(self) -> None:
        """Start the scraper process (idle until :meth:`start`); once per run."""
        if not self.cfg.enabled or self.proc is not None or self._closed:
            return
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            x for x in (root, os.environ.get("PYTHONPATH")) if x))
        influx = self.scenario.store.influxdb
        cfg = {"run_dir": str(self.rundir.path), "run_id": self.rundir.run_id,
               "server_metrics": self.cfg.model_dump(mode="json"),
               "target": self.scenario.target.model_dump(mode="json"),
               "influxdb": influx.model_dump(mode="json") if influx is not None else None,
               "log_level": logging.getLogger().getEffectiveLevel()}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.telemetry.scrape_process"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                         start_new_session=True)   # Ctrl-C is the run's to handle
            self._send(cfg)
        except Exception as e:  # noqa: BLE001 - the load test goes on without server metrics
            log.warning("server metrics: the scraper process could not start: %s", e)
            self._kill()

    def start(self, urls: list[str]) -> None:
        """Scrape ``urls`` until :meth:`stop`; returns after their first scrape (or
        ``_START_WAIT_S``), so scrapes precede the group's first request."""
        if not self.cfg.enabled or not urls or self.running:
            return
        self.spawn()
        if self.proc is None:
            return
        self.rundir.appender("server_metrics", _schema())   # compacts the process's journals
        try:
            self._send({"op": "start", "urls": list(urls)})
            self.running = True
            got = self._receive("started", _START_WAIT_S)
            if got is None:
                log.warning("server metrics: no first scrape within %.0f s; the run goes on",
                            _START_WAIT_S)
            else:
                self.rundir.write_manifest(server_metrics={
                    **(self.rundir.manifest.get("server_metrics") or {}), "pid": got["pid"]})
        except Exception as e:  # noqa: BLE001
            log.warning("server metrics: the scraper process failed: %s", e)
            self._kill()

    def stop(self) -> None:
        """End the group's scraping; its counts are added to the manifest's."""
        if not self.running or self.proc is None:
            return
        self.running = False
        try:
            self._send({"op": "stop"})
            got = self._receive("stopped", self.cfg.timeout_s * 8 + 10.0)
            if got is None:
                log.warning("server metrics: the scraper process did not answer; stopped")
                self._kill()
                return
            self._merge(got.get("summary") or {})
        except Exception as e:  # noqa: BLE001
            log.warning("server metrics stop failed: %s", e)
            self._kill()

    def close(self) -> None:
        """End the scraper process: :meth:`end`, then :meth:`wait_closed`."""
        self.end()
        self.wait_closed()

    def end(self) -> None:
        """Tell the scraper process to finish (its journal closed, its store writer flushed);
        :meth:`wait_closed` waits for it, so the run's own store can flush meanwhile."""
        self.stop()
        self._closed = True
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except Exception as e:  # noqa: BLE001
                log.warning("server metrics: %s", e)

    def wait_closed(self, timeout_s: float = 60.0) -> None:
        """The scraper process's last counts (its CPU time, its store's) into the manifest; then
        the run's close compacts its journal into ``server_metrics.parquet``."""
        p = self.proc
        if p is None:
            return
        try:
            got = self._receive("closed", timeout_s)
            if got is not None:
                self._merge({"cpu_s": got.get("cpu_s"), "store": got.get("store")})
            p.wait(timeout=10)
        except Exception as e:  # noqa: BLE001
            log.warning("server metrics: the scraper process did not end cleanly: %s", e)
        finally:
            self._kill()

    def _merge(self, got: dict) -> None:
        old = self.rundir.manifest.get("server_metrics") or {}
        merged = {**old, "rate_hz": self.cfg.rate_hz}
        for k in ("scrapes", "samples", "failures", "last_error"):
            if k in got:
                merged[k] = {**(old.get(k) or {}), **got[k]}
        for k in ("cpu_s", "store"):
            if got.get(k) is not None:
                merged[k] = got[k]
        self.rundir.write_manifest(server_metrics=merged)

    def _kill(self) -> None:
        p, self.proc = self.proc, None
        self.running = False
        if p is None:
            return
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass

    def _send(self, msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        fd = self.proc.stdin.fileno()
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)

    def _receive(self, op: str, timeout_s: float) -> dict | None:
        """The next reply ``op``, read straight from the pipe (a buffered reader would hide a
        line from ``select``); None after ``timeout_s`` or when the process is gone."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("op") == op:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            self._buf += chunk


def _schema():
    from harness.telemetry.server_metrics import server_sample_schema

    return server_sample_schema()
