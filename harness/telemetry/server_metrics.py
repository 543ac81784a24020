"""Each replica's Prometheus ``/metrics``, scraped during the run: what the server itself saw
(queue depth, running batch, KV-cache use) on the same wall clock as requests and GPU samples.

Every sample of every family is kept as it is (name, labels, value), so an unknown server loses
nothing; analysis picks the gauges it knows (:data:`QUEUE`, :data:`RUNNING`, :data:`KV_CACHE`).
A scrape that fails (refused, timeout, HTTP error, unparsable text) is counted per replica and
never stops the run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

#: gauge names per figure, TGI first, then vLLM (older and newer names)
QUEUE = ("tgi_queue_size", "vllm:num_requests_waiting")
RUNNING = ("tgi_batch_current_size", "vllm:num_requests_running")
KV_CACHE = ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")
BATCH_TOKENS = ("tgi_batch_current_max_tokens",)
#: read at every scrape: the gauges above and the request/token counters (a few lines of ~2,000)
EVERY_SCRAPE = QUEUE + RUNNING + KV_CACHE + BATCH_TOKENS + (
    "tgi_request_count", "tgi_request_success", "tgi_request_failure", "tgi_batch_max_total_tokens",
    "vllm:request_success", "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:num_preemptions")
SMALL = 300   # an exposition of at most this many lines is parsed whole at every scrape

_MAX_BODY = 8 << 20


@dataclass(slots=True)
class ServerSample:
    ts_ns: int            # wall clock (time.time_ns()) when the scrape's answer arrived
    replica: str          # the replica's base URL, as in request records
    name: str             # the sample's name (a histogram's ``_bucket``/``_sum``/``_count`` too)
    labels: str           # the sample's labels, canonical: JSON object with sorted keys ("{}" if none)
    value: float
    run_id: str = ""


def server_sample_schema():
    from harness.records.schema import arrow_schema

    return arrow_schema(ServerSample)


def parse(text: str) -> list[tuple[str, dict, float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def _kept(line: str) -> bool:
    """A line of a series read at every scrape, its ``# TYPE``/``# HELP`` lines included (the
    parser names a counter's samples ``..._total`` only when it knows its type)."""
    if line.startswith("#"):
        return line.startswith(("# TYPE ", "# HELP ")) and line[7:].startswith(EVERY_SCRAPE)
    return line.startswith(EVERY_SCRAPE)


def labels_text(labels: dict) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


class Scraper:
    """Scrapes ``urls`` every ``1/rate_hz`` s in a background thread and hands each replica's
    samples to ``sink(list[ServerSample])``: every sample at most every ``full_every_s`` (and
    at the first scrape), the series of :data:`EVERY_SCRAPE` at every scrape; a server with a
    small exposition is parsed whole every time. Parsing a TGI replica's whole exposition costs
    ~30 ms of CPU: a run scrapes from a process of its own
    (:mod:`harness.telemetry.scrape_process`), never the load generator's. ``access``
    (optional, :class:`harness.protocols.access.Access`) carries the target's headers and TLS
    settings."""

    def __init__(self, urls: list[str], sink: Callable[[list[ServerSample]], None], *,
                 rate_hz: float = 2.0, timeout_s: float = 1.0, access=None, run_id: str = "",
                 full_every_s: float = 0.0):
        self.urls = [u.rstrip("/") for u in urls]
        self.sink = sink
        self.period = 1.0 / rate_hz
        self.timeout_s = timeout_s
        self.access = access
        self.run_id = run_id
        self.full_every_ns = int(full_every_s * 1e9)
        self._last_full = {u: 0 for u in self.urls}
        self.scrapes = {u: 0 for u in self.urls}
        self.samples = {u: 0 for u in self.urls}
        self.failures = {u: 0 for u in self.urls}
        self.last_error: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _opener(self):
        handlers = [urllib.request.ProxyHandler({})]
        if self.access is not None and any(u.startswith("https://") for u in self.urls):
            handlers.append(urllib.request.HTTPSHandler(context=self.access.ssl_context))
        return urllib.request.build_opener(*handlers)

    def _redact(self, text: str) -> str:
        return self.access.redact(text) if self.access is not None else text

    def scrape_once(self, opener=None) -> None:
        """One scrape of every replica (failures counted, never raised)."""
        opener = opener or self._opener()
        headers = {"Accept": "text/plain;version=0.0.4"}
        if self.access is not None:
            headers.update(self.access.header_dict())
        for u in self.urls:
            self.scrapes[u] += 1
            try:
                req = urllib.request.Request(u + "/metrics", headers=headers)
                with opener.open(req, timeout=self.timeout_s) as r:
                    body = r.read(_MAX_BODY)
                ts = time.time_ns()
            except urllib.error.HTTPError as e:
                self._failed(u, f"HTTP {e.code}")
                continue
            except Exception as e:  # noqa: BLE001 - refused, timeout, TLS
                self._failed(u, f"{type(e).__name__}: {getattr(e, 'reason', e)}")
                continue
            text = body.decode("utf-8", "replace")
            if ts - self._last_full[u] >= self.full_every_ns or text.count("\n") <= SMALL:
                self._last_full[u] = ts
            else:   # between full scrapes: only the lines of the series read at every scrape
                text = "\n".join(x for x in text.splitlines() if _kept(x)) + "\n"
            try:
                n = self._keep(u, ts, text)
            except Exception as e:  # noqa: BLE001 - text that is not Prometheus's
                self._failed(u, f"unparsable /metrics text ({type(e).__name__}: {e})")
                continue
            self.samples[u] += n

    def _keep(self, u: str, ts: int, text: str) -> int:
        rows = [ServerSample(ts, u, n, labels_text(lab), v, self.run_id)
                for n, lab, v in parse(text)]
        try:
            self.sink(rows)
        except Exception:  # noqa: BLE001 - a sink's trouble must not stop scraping
            log.exception("server metrics sink failed")
        return len(rows)

    def _failed(self, url: str, why: str) -> None:
        self.failures[url] += 1
        if self.failures[url] == 1:
            log.warning("server metrics: %s/metrics: %s (counted; the run goes on)", url,
                        self._redact(why))
        self.last_error[url] = self._redact(why)[:200]

    def _run(self, delay_first: bool) -> None:
        opener = self._opener()
        nxt = time.monotonic()
        if delay_first:
            nxt += self.period
            if self._stop.wait(self.period):
                return
        while not self._stop.is_set():
            self.scrape_once(opener)
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay < 0:                    # a slow scrape: skip ticks, never burst
                nxt = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                break

    def start(self, delay_first: bool = False) -> "Scraper":
        """Scrape in a background thread; ``delay_first``: one period before its first scrape
        (the caller has just scraped)."""
        self._thread = threading.Thread(target=self._run, args=(delay_first,),
                                        name="server-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop scraping; the counts (scrapes, samples, failures per replica)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * len(self.urls) + 2.0)
            self._thread = None
        return self.summary()

    def summary(self) -> dict:
        return {"scrapes": dict(self.scrapes), "samples": dict(self.samples),
                "failures": dict(self.failures), "last_error": dict(self.last_error)}
