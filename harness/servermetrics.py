"""The replicas' own Prometheus ``/metrics``, scraped during the run, so that a knee or a replica
effect can be explained (queue depth, running batch, KV-cache use).

Every replica is scraped at ``rate_hz`` (2 Hz) while its group is up, stamped with
``time.time_ns()`` (the clock of the request records and GPU samples), into the run directory's
``server_metrics.parquet`` (one row per sample: ``ts_ns, replica, name, labels, value``) and the
scenario's InfluxDB (measurement ``server_metric``). Servers the harness knows keep their gauges,
counters and histogram sums and counts (TGI: ``tgi_*``; vLLM: ``vllm:*``); the buckets are left
out. Unknown servers: everything, as is. A replica without ``/metrics`` (404) is asked once and
then left alone; a failed scrape is counted, never fatal.

The fetch is cooperative (gevent) and the parse runs in gevent's thread pool, so neither holds
the load generator's event loop.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields

from harness.engine.hooks import Hook

log = logging.getLogger(__name__)

KNOWN_PREFIXES = ("tgi_", "vllm:", "vllm_")
# the figures a report plots per replica over time, first found wins (TGI, then vLLM)
QUEUE = ("tgi_queue_size", "vllm:num_requests_waiting")
BATCH = ("tgi_batch_current_size", "vllm:num_requests_running")
KV = ("tgi_batch_current_max_tokens", "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")


@dataclass(slots=True)
class ServerMetric:
    ts_ns: int
    run_id: str
    replica: str
    name: str
    labels: str      # JSON object of the sample's labels ("{}" when none)
    value: float


def schema():
    from harness.records.schema import arrow_schema

    return arrow_schema(ServerMetric)


def parse(text: str, known_only: bool | None = None) -> list[tuple[str, str, float]]:
    """(name, labels JSON, value) for each sample of a Prometheus text exposition. Servers with
    known metric names (``known_only`` None: decided from the text) keep everything but
    histogram buckets."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, json.dumps(s.labels, sort_keys=True), float(s.value)))
    if known_only is None:
        known_only = any(n.startswith(KNOWN_PREFIXES) for n, _, _ in out)
    if known_only:
        out = [x for x in out if not x[0].endswith("_bucket")]
    return out


def _parse_off_loop(text: str):
    try:
        from gevent import get_hub
        from gevent.monkey import is_module_patched
    except ImportError:
        return parse(text)
    if not is_module_patched("threading"):
        return parse(text)
    return get_hub().threadpool.apply(parse, (text,))


class ServerMetrics(Hook):
    """Scrapes each group's replicas from ``on_group_start`` to ``on_group_done``."""

    def __init__(self, rundir, store_writer=None, *, rate_hz: float = 2.0, timeout_s: float = 1.0):
        self.rundir = rundir
        self.writer = store_writer
        self.period_s = 1.0 / rate_hz
        self.timeout_s = timeout_s
        self._table = None
        self._glet = None
        self._stop = False
        self.counts = {"scrapes": 0, "samples": 0, "failed": 0, "absent": 0}

    def _append(self, rows: list[ServerMetric]) -> None:
        if self._table is None:
            self._table = self.rundir.appender("server_metrics", schema())
        for r in rows:
            self._table.append(r)
        if self.writer is not None:
            try:
                from harness.store.lineproto import line

                self.writer.write_lines([x for x in (
                    line("server_metric", {"run_id": r.run_id, "replica": r.replica, "name": r.name,
                                           "labels": r.labels}, {"value": r.value}, r.ts_ns)
                    for r in rows) if x])
            except Exception as e:  # noqa: BLE001 - the run directory has the rows
                log.warning("store: server metrics not written: %s", e)

    def scrape_once(self, url: str) -> int | None:
        """One scrape of ``url``'s /metrics into the run (rows written), None when it has none."""
        ts = time.time_ns()
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=self.timeout_s) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            self.counts["failed"] += 1
            return 0
        except Exception:  # noqa: BLE001 - a busy or dead replica: counted, tried again
            self.counts["failed"] += 1
            return 0
        try:
            samples = _parse_off_loop(text)
        except Exception:  # noqa: BLE001 - not the text format
            self.counts["failed"] += 1
            return 0
        rows = [ServerMetric(ts, self.rundir.run_id, url, n, lab, v) for n, lab, v in samples]
        self._append(rows)
        self.counts["scrapes"] += 1
        self.counts["samples"] += len(rows)
        return len(rows)

    def _loop(self, urls: list[str]) -> None:
        import gevent

        live = list(urls)
        next_t = time.monotonic()
        while not self._stop and live:
            for u in list(live):
                if self.scrape_once(u) is None:
                    live.remove(u)
                    self.counts["absent"] += 1
            next_t += self.period_s
            gevent.sleep(max(0.0, next_t - time.monotonic()))

    def on_group_start(self, replicas: int, urls: list[str], telemetry_note: str) -> None:
        try:
            import gevent
        except ImportError:
            return
        self._stop = False
        self._glet = gevent.spawn(self._loop, list(urls))

    def on_group_done(self, replicas: int) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop = True
        if self._glet is not None:
            self._glet.kill(block=True, timeout=2)
            self._glet = None
        if self._table is not None:
            self._table.flush()
