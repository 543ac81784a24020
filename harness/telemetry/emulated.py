"""The emulator's modeled GPU as a telemetry source: polls ``GET {replica}/emulator/gpu``.

All replicas of one emulator share one simulated GPU, so any replica answers; when the one in use
stops answering (a cell ends, replicas are relaunched) the next URL is tried. Samples are
labelled ``source="emulated"`` so modeled watts are never mistaken for measured ones.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from harness.records.schema import GpuSample
from harness.telemetry.source import SourceError, SourceUnavailable


class EmulatedSource:
    gpus = [0]
    refresh_period_s = None   # modeled on each request: no hardware refresh period

    def __init__(self, urls: list[str], timeout_s: float = 1.0, probe: bool = True):
        if not urls:
            raise SourceUnavailable("no emulator replica URL to read modeled power from")
        self._urls = list(urls)
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._conn_url: str | None = None
        self._lock = threading.Lock()
        self._last: dict | None = None
        if probe:
            try:
                self._get()
            except SourceError as e:
                raise SourceUnavailable(f"emulator GPU endpoint not reachable: {e}") from e

    def set_urls(self, urls: list[str]) -> None:
        """Follow the replicas of the current cell (the sweep relaunches them)."""
        with self._lock:
            self._urls = list(urls)

    def _connect(self, url: str) -> http.client.HTTPConnection:
        u = urlsplit(url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        return cls(u.hostname or "127.0.0.1", u.port, timeout=self._timeout)

    def _get(self) -> dict:
        """One JSON reading, trying the replica in use first and then the others."""
        with self._lock:
            order = ([self._conn_url] if self._conn_url in self._urls else []) + \
                [u for u in self._urls if u != self._conn_url]
            last_err: Exception | None = None
            for url in order:
                for attempt in (0, 1):  # a kept-alive connection the server closed: retry once
                    try:
                        if self._conn is None or self._conn_url != url:
                            if self._conn is not None:
                                self._conn.close()
                            self._conn, self._conn_url = self._connect(url), url
                        base = urlsplit(url).path.rstrip("/")
                        self._conn.request("GET", base + "/emulator/gpu")
                        resp = self._conn.getresponse()
                        body = resp.read()
                        if resp.status != 200:
                            raise SourceError(f"{url}/emulator/gpu answered HTTP {resp.status}")
                        d = json.loads(body)
                        self._last = d
                        return d
                    except SourceError as e:
                        last_err = e
                        break
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        last_err = e
                        if self._conn is not None:
                            self._conn.close()
                        self._conn = None
                        if attempt == 1 or not isinstance(e, (http.client.RemoteDisconnected,
                                                              ConnectionResetError,
                                                              BrokenPipeError)):
                            break
            raise SourceError(f"no emulator replica answered /emulator/gpu: "
                              f"{type(last_err).__name__}: {last_err}")

    def power_source(self, gpu: int) -> str:
        return "emulated"

    def counter_source(self, gpu: int) -> str | None:
        return "emulated-counter"

    def read(self, gpu: int, detail: bool = True) -> GpuSample:
        ts = time.time_ns()   # this process's clock: the one request records are stamped with
        d = self._get()

        def f(k):
            v = d.get(k)
            return float(v) if v is not None else None

        mem = d.get("mem_used_bytes")
        return GpuSample(ts_ns=ts, gpu=gpu, source="emulated", power_w=f("power_w"),
                         gpu_util_pct=f("gpu_util_pct"), sm_clock_mhz=f("sm_clock_mhz"),
                         mem_used_bytes=int(mem) if mem is not None else None,
                         temperature_c=f("temperature_c"))

    def read_energy_j(self, gpu: int) -> float:
        d = self._get()
        if d.get("energy_j") is None:
            raise SourceError("emulator reading has no energy_j")
        return float(d["energy_j"])

    def processes(self, gpu: int) -> list[tuple[int, int | None]]:
        return []   # the emulator models one GPU, not its processes

    def describe(self) -> dict:
        d = {"kind": "emulated", "refresh_period_s": None, "urls": list(self._urls),
             "gpus": {"0": {"power_source": "emulated", "counter_source": "emulated-counter"}}}
        if self._last:
            d["mem_total_bytes"] = self._last.get("mem_total_bytes")
        return d

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
