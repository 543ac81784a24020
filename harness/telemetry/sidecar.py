"""The telemetry sidecar: the sampler as a long-lived service (the compose stack's GPU sidecar).

It samples, writes the run directory and/or the store, and answers a small HTTP API so a load
generator on another host or container can mark energy windows and show live power:

    GET  /health          200 {"status": "ok", "source": "nvml" | "emulated" | "none", "note": ...}
    GET  /latest          {"gpus": {"0": GpuSample as JSON}}
    GET  /stats           sampler summary and store writer counts
    POST /window/begin    {"name": "r2-c64/measure"}            -> {"name", "ts_ns"}
    POST /window/end      {"name": "r2-c64/measure"}            -> WindowEnergy as JSON

Without any GPU source it still runs and answers (windows then have no energy), so a stack on a
machine without a GPU comes up; the one line saying why is in ``/health`` and the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.telemetry.records import WindowEnergy
from harness.telemetry.sampler import Sampler, total_power
from harness.telemetry.select import Selected, open_source
from harness.telemetry.sinks import RunDirSink, StoreSink

log = logging.getLogger("harness.telemetry.sidecar")


@dataclass
class SidecarConfig:
    source: str = "auto"
    gpus: list[int] | None = None
    rate_hz: float = 20.0
    emulator_urls: list[str] = field(default_factory=list)
    run_id: str = ""
    results_dir: str | None = None        # write a run directory here (gpu_samples.parquet, ...)
    influx: Any = None                    # harness.scenario.models.InfluxDB or None
    listen: tuple[str, int] | None = None
    process_interval_s: float = 1.0
    post_power_to: str | None = None      # e.g. http://locust-master:8089/llm/power


def window_json(w) -> dict:
    d = dataclasses.asdict(w)
    d["per_gpu"] = {str(g): {"energy_j": e, "source": s} for g, (e, s) in w.per_gpu.items()}
    d["mean_power_w"] = w.mean_power_w
    return d


class Sidecar:
    def __init__(self, cfg: SidecarConfig, binding: Any = None):
        self.cfg = cfg
        self.binding = binding
        self.selected: Selected | None = None
        self.sampler: Sampler | None = None
        self.run_dir = None
        self.writer = None
        self.http: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._no_gpu_windows: dict[str, int] = {}
        self.poster: PowerPoster | None = None

    @property
    def url(self) -> str | None:
        if not self.http:
            return None
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Sidecar":
        cfg = self.cfg
        self.selected = open_source(cfg.source, gpus=cfg.gpus, emulator_urls=cfg.emulator_urls,
                                    binding=self.binding, warn=False)
        sinks = []
        if cfg.results_dir:
            from harness.records.rundir import RunDir, new_run_id

            run_id = cfg.run_id or new_run_id("sidecar")
            cfg.run_id = run_id
            self.run_dir = RunDir(Path(cfg.results_dir) / run_id, run_id)
            self.run_dir.write_manifest(kind="telemetry-sidecar", telemetry_note=self.selected.note)
            sinks.append(RunDirSink(self.run_dir))
        if cfg.influx is not None:
            from harness.store.writer import writer_from_config

            self.writer = writer_from_config(cfg.influx, self.run_dir.path if self.run_dir else None,
                                             create_db=cfg.influx.api == "v1")
            sinks.append(StoreSink(self.writer, cfg.run_id))
            refresh = (self.selected.source.refresh_period_s
                       if self.selected.source is not None else None)
            self.writer.write_marker(cfg.run_id or "-", "run", "start", note=self.selected.note,
                                     source=self.selected.kind, rate_hz=float(cfg.rate_hz),
                                     power_refresh_period_s=refresh)
        if self.selected.source is not None:
            self.sampler = Sampler(self.selected.source, sinks, rate_hz=cfg.rate_hz,
                                   run_id=cfg.run_id, process_interval_s=cfg.process_interval_s)
            if cfg.post_power_to:
                self.poster = PowerPoster(cfg.post_power_to)
                self.sampler.add_listener(self.poster)
            self.sampler.start()
        if cfg.listen is not None:
            self.http = ThreadingHTTPServer(cfg.listen, _handler(self))
            self.http.daemon_threads = True
            threading.Thread(target=self.http.serve_forever, name="sidecar-http", daemon=True).start()
        print(self.selected.note, flush=True)
        return self

    # -- API used by the HTTP handler (and by embedded callers) -----------------------------
    def health(self) -> dict:
        return {"status": "ok", "source": self.selected.kind if self.selected else "none",
                "note": self.selected.note if self.selected else "", "run_id": self.cfg.run_id,
                "rate_hz": self.cfg.rate_hz}

    def latest(self) -> dict:
        if not self.sampler:
            return {"gpus": {}}
        return {"gpus": {str(g): dataclasses.asdict(s) for g, s in self.sampler.latest().items()}}

    def stats(self) -> dict:
        d = {"sampler": self.sampler.summary() if self.sampler else None}
        if self.writer:
            d["store"] = self.writer.stats()
        return d

    def begin_window(self, name: str, ts_ns: int | None = None) -> dict:
        with self._lock:
            if not self.sampler:
                self._no_gpu_windows[name] = ts_ns or time.time_ns()
                return {"name": name, "ts_ns": self._no_gpu_windows[name]}
            return {"name": name, "ts_ns": self.sampler.begin_window(name, ts_ns)}

    def end_window(self, name: str, ts_ns: int | None = None) -> dict:
        with self._lock:
            if not self.sampler:
                start = self._no_gpu_windows.pop(name)
                return {"name": name, "start_ns": start, "end_ns": ts_ns or time.time_ns(),
                        "energy_j": None, "source": None, "per_gpu": {}, "samples": 0,
                        "mean_power_w": None}
            return window_json(self.sampler.end_window(name, ts_ns))

    def stop(self) -> dict:
        summary: dict = {}
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        if self.sampler:
            summary = self.sampler.stop()
        if self.poster:
            summary["power_posts"] = self.poster.close()
        if self.selected and self.selected.source:
            self.selected.source.close()
        if self.writer:
            self.writer.write_marker(self.cfg.run_id or "-", "run", "end",
                                     samples=summary.get("counts", {}).get("samples", 0))
            summary["store"] = self.writer.close()
        if self.run_dir:
            self.run_dir.close()
        return summary


def _handler(sc: Sidecar):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):   # quiet: the sidecar's log is for problems
            log.debug(fmt, *args)

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                return self._send(200, sc.health())
            if path == "/latest":
                return self._send(200, sc.latest())
            if path == "/stats":
                return self._send(200, sc.stats())
            self._send(404, {"error": f"no route {path}"})

        def do_POST(self):
            path = self.path.split("?")[0]
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
                name = str(body["name"])
                ts = body.get("ts_ns")
                ts = int(ts) if ts is not None else None
            except (ValueError, KeyError, TypeError) as e:
                return self._send(400, {"error": f"body must be JSON with 'name' ({e})"})
            if path == "/window/begin":
                return self._send(200, sc.begin_window(name, ts))
            if path == "/window/end":
                try:
                    return self._send(200, sc.end_window(name, ts))
                except KeyError:
                    return self._send(404, {"error": f"no open window {name!r}"})
            self._send(404, {"error": f"no route {path}"})

    return Handler


class PowerPoster:
    """A listener that POSTs ``{"power_w", "ts_ns", "source"}`` (total over the GPUs) to a URL at
    most once per ``interval_s``, from its own thread: a slow or absent receiver never delays
    sampling. Failures are counted, not raised."""

    def __init__(self, url: str, interval_s: float = 1.0, timeout_s: float = 2.0):
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._latest: tuple | None = None
        self._cv = threading.Condition()
        self._stop = False
        self.counts = {"posted": 0, "failed": 0}
        self._thread = threading.Thread(target=self._loop, name="power-poster", daemon=True)
        self._thread.start()

    def __call__(self, batch) -> None:
        with self._cv:
            self._latest = total_power(batch)
            self._cv.notify()

    def _loop(self) -> None:
        import urllib.request

        while True:
            with self._cv:
                while self._latest is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                (power, ts, source), self._latest = self._latest, None
            body = json.dumps({"power_w": power, "ts_ns": ts, "source": source}).encode()
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    r.read()
                self.counts["posted"] += 1
            except OSError:
                self.counts["failed"] += 1
            with self._cv:
                self._cv.wait_for(lambda: self._stop, timeout=self.interval_s)

    def close(self) -> dict:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(5)
        return dict(self.counts)


class RemoteSampler:
    """The sampler's window API over a sidecar's HTTP API (for a generator in another container)."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
            return json.loads(r.read())

    def begin_window(self, name: str, ts_ns: int | None = None) -> int:
        return int(self._call("POST", "/window/begin", {"name": name, "ts_ns": ts_ns})["ts_ns"])

    def end_window(self, name: str, ts_ns: int | None = None) -> WindowEnergy:
        d = self._call("POST", "/window/end", {"name": name, "ts_ns": ts_ns})
        return WindowEnergy(name=d["name"], start_ns=d["start_ns"], end_ns=d["end_ns"],
                            energy_j=d["energy_j"], source=d["source"],
                            per_gpu={int(g): (v["energy_j"], v["source"])
                                     for g, v in d["per_gpu"].items()},
                            samples=d["samples"])

    def latest(self) -> dict:
        return self._call("GET", "/latest")

    def health(self) -> dict:
        return self._call("GET", "/health")
