"""The run directory: everything a report needs, written as the run goes, readable alone.

Layout::

    RUN_DIR/
      manifest.json        run id, versions, host, GPU/driver, scenario (secrets never), status
      scenario.yaml        the scenario as given
      requests.parquet     RequestRecord rows (appended in row groups while the run goes)
      gpu_samples.parquet  GpuSample rows
      windows.parquet      CellWindow rows (warmup / measure / cooldown boundaries per cell)
      histograms/CELL.json merged HDR histograms (ttft/itl/tpot/e2e, microseconds) per cell
      summary.json, report.html, cells.csv   written by analysis/report

Parquet files are written in row groups of at most ``flush_rows`` rows so a run never holds all
its records in memory; a crash loses at most one unflushed group, and ``close()`` is idempotent.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import logging
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from harness.records.schema import GPU_SCHEMA, REQUEST_SCHEMA, WINDOW_SCHEMA


log = logging.getLogger(__name__)


def new_run_id(name: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{os.getpid() % 10000:04d}"


def _native():
    """(start_new_thread, allocate_lock, sleep) of the OS, also under gevent's monkey patching:
    the background writer must be a real thread, or its work would run on the event loop."""
    import _thread

    try:
        from gevent.monkey import get_original, is_module_patched
    except ImportError:
        return _thread.start_new_thread, _thread.allocate_lock, time.sleep
    if not is_module_patched("threading"):
        return _thread.start_new_thread, _thread.allocate_lock, time.sleep
    return (get_original("_thread", "start_new_thread"), get_original("_thread", "allocate_lock"),
            get_original("time", "sleep"))


_SLICE = 64


class ParquetAppender:
    """Append dataclass rows to one Parquet file in bounded row groups; thread-safe.

    The writer is opened at once (its first use costs ~0.1-0.5 s: not something to pay in the
    middle of a measured window). With ``background=True`` a full batch is converted and written
    by an OS thread, in order: the load generator appends a record per request from its event
    loop, and a 4096-row conversion there (~10-15 ms) would hold every open stream's next token.
    """

    def __init__(self, path: Path, schema: pa.Schema, flush_rows: int = 4096, background: bool = False):
        self.path = path
        self.schema = schema
        self.flush_rows = flush_rows
        self.background = background
        self._rows: list[dict] = []
        # None once closed; an empty run still leaves a readable, typed file
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._lock = threading.Lock()
        self.count = 0
        self.error: BaseException | None = None
        if background:
            self._start, alloc, self._sleep = _native()
            self._batches: deque = deque()
            self._state = alloc()          # guards ``_running`` against a batch left unwritten
            self._running = False

    def append(self, row: Any) -> None:
        d = row if isinstance(row, dict) else asdict(row)
        with self._lock:
            self._rows.append(d)
            self.count += 1
            if len(self._rows) >= self.flush_rows:
                self._flush_locked()

    def extend(self, rows: Iterable[Any]) -> None:
        for r in rows:
            self.append(r)

    def flush(self) -> None:
        """Write what is buffered; returns once it is written (also in background mode)."""
        with self._lock:
            self._flush_locked()
        if self.background:
            while True:
                with self._state:
                    if not self._running and not self._batches:
                        break
                self._sleep(0.002)

    def _flush_locked(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        if not self.background:
            self._write(rows)
            return
        with self._state:
            self._batches.append(rows)
            if self._running:
                return
            self._running = True
        self._start(self._drain, ())

    def _drain(self) -> None:
        while True:
            with self._state:
                if not self._batches:
                    self._running = False
                    return
                rows = self._batches.popleft()
            self._write(rows)

    def _write(self, rows: list[dict]) -> None:
        try:
            # Converting Python rows holds the GIL; in slices of _SLICE rows the event loop gets it
            # back between slices (after the switch interval), not after the whole batch (~10 ms)
            parts = [pa.Table.from_pylist(rows[i:i + _SLICE], schema=self.schema)
                     for i in range(0, len(rows), _SLICE)] or [self.schema.empty_table()]
            self._writer.write_table(pa.concat_tables(parts), row_group_size=max(len(rows), 1))
        except Exception as e:  # disk full, bad value: reported at close, the run goes on
            log.exception("writing %s", self.path)
            self.error = e

    def close(self) -> None:
        """Write what is left and close the file; a second call does nothing."""
        if self._writer is None:
            return
        self.flush()
        with self._lock:
            self._writer.close()
            self._writer = None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("slm-harness", "locust", "aiohttp", "pydantic", "influxdb-client", "nvidia-ml-py",
                 "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    import harness

    out.setdefault("slm-harness", harness.__version__)
    return out


class RunDir:
    """Writer for one run's directory. Use as a context manager; ``close`` marks it complete."""

    def __init__(self, path: str | os.PathLike, run_id: str, *, flush_rows: int = 4096):
        self.path = Path(path)
        self.run_id = run_id
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "histograms").mkdir(exist_ok=True)
        self.requests = ParquetAppender(self.path / "requests.parquet", REQUEST_SCHEMA, min(flush_rows, 1024),
                                        background=True)
        self.gpu_samples = ParquetAppender(self.path / "gpu_samples.parquet", GPU_SCHEMA, flush_rows)
        self.windows = ParquetAppender(self.path / "windows.parquet", WINDOW_SCHEMA, 256)
        self._flush_rows = flush_rows
        self._extra: dict[str, ParquetAppender] = {}
        self.manifest: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "versions": _versions(),
        }
        self.write_manifest()

    @classmethod
    def create(cls, results_dir: str | os.PathLike, name: str, **kw) -> "RunDir":
        run_id = new_run_id(name)
        return cls(Path(results_dir) / run_id, run_id, **kw)

    def write_manifest(self, **updates: Any) -> None:
        self.manifest.update(updates)
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        tmp.replace(self.path / "manifest.json")

    def write_scenario(self, text: str) -> None:
        (self.path / "scenario.yaml").write_text(text)

    def write_histograms(self, cell: str, encoded: dict[str, str]) -> None:
        (self.path / "histograms" / f"{cell}.json").write_text(json.dumps(encoded))

    def appender(self, name: str, schema) -> ParquetAppender:
        """A further Parquet file of this run (``NAME.parquet``), opened once and shared by every
        writer of the run (e.g. one telemetry sampler per replica count), closed with the run."""
        if name not in self._extra:
            self._extra[name] = ParquetAppender(self.path / f"{name}.parquet", schema, self._flush_rows)
        return self._extra[name]

    def _appenders(self) -> list[ParquetAppender]:
        return [self.requests, self.gpu_samples, self.windows, *self._extra.values()]

    def flush(self) -> None:
        for a in self._appenders():
            a.flush()

    def close(self, status: str = "complete") -> None:
        for a in self._appenders():
            a.close()
        self.write_manifest(status=status,
                            finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                            counts={"requests": self.requests.count,
                                    "gpu_samples": self.gpu_samples.count,
                                    "windows": self.windows.count})

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("complete" if exc_type is None else "interrupted")


def read_table(run_dir: str | os.PathLike, name: str):
    """Read one of the run's Parquet files as a pandas DataFrame (empty, typed, when absent)."""
    import pandas as pd

    p = Path(run_dir) / f"{name}.parquet"
    if not p.exists():
        schema = {"requests": REQUEST_SCHEMA, "gpu_samples": GPU_SCHEMA, "windows": WINDOW_SCHEMA}[name]
        return schema.empty_table().to_pandas()
    return pd.read_parquet(p)
