"""The run directory: everything a report needs, written as the run goes, readable alone.

Layout::

    RUN_DIR/
      manifest.json        run id, versions, host, GPU/driver, scenario (secrets never), status,
                           attempts per cell, cells discarded by a resume
      scenario.yaml        the scenario as given
      requests.parquet     RequestRecord rows      } written at close from the journal; while the
      gpu_samples.parquet  GpuSample rows          } run goes (or after a crash) the rows are in
      windows.parquet      CellWindow rows         } NAME.j<id>.arrows beside them
      histograms/CELL.json merged HDR histograms (ttft/itl/tpot/e2e, microseconds) per cell
      summary.json, report.html, cells.csv   written by analysis/report

Durability. Parquet keeps its index in a footer written at close, so a writer killed before
close leaves nothing readable. Rows therefore go first to an append-only journal, an Arrow IPC
stream (``NAME.j<id>.arrows``) written group by group (``flush_rows`` rows or ``flush_s`` seconds,
whichever comes first; a window at once) with unbuffered writes: a SIGKILL loses only the group
not yet handed to the journal. :meth:`RunDir.flush` (called at every
cell end) also fsyncs the journals and the manifest, so a power loss loses nothing flushed.
``close()`` compacts parquet + journals into a new Parquet file (temporary name, fsync, rename),
naming the absorbed journals in its metadata; a journal left beside it is then skipped, so a
crash at any point of compaction neither loses nor doubles a row.

Reading. :func:`read_table` (and :func:`read_arrow`) return the Parquet rows plus every journal not
yet absorbed, stopping quietly at a torn last group; rows of a superseded attempt of a cell
(``manifest.json: attempts``) are left out.

Attempts. :meth:`RunDir.begin_cell` numbers each attempt of a cell; request and window rows are
stamped with it. :meth:`RunDir.reopen` (``sweep --resume``) drops the rows of cells that never
finished and lists them in ``manifest.json: discarded`` so the store can drop its copies too.

API: ``RunDir(path, run_id)`` / ``RunDir.create(results, name)`` / ``RunDir.reopen(path,
finished=...)``; ``rd.requests|gpu_samples|windows.append(row)``; ``rd.appender(name, schema)``;
``rd.begin_cell(cell)``; ``rd.flush()``; ``rd.close(status)``. ``close`` is idempotent and safe to
call again from a signal handler's path (rows appended after it go to a fresh journal, which the
next close or reader picks up): it never loses a row that was appended.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import socket
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from harness.records.schema import GPU_SCHEMA, REQUEST_SCHEMA, WINDOW_SCHEMA

log = logging.getLogger(__name__)

_META_KEY = b"slm_harness_journals"   # Parquet key-value metadata: journals absorbed, JSON list
_COMPACT_ROWS = 65536                 # rows per Parquet row group when compacting


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading: Parquet + journals not yet absorbed, tolerant of a torn tail
# ---------------------------------------------------------------------------------------------
def journals_of(parquet_path: Path) -> list[Path]:
    """The journal files of one table, oldest first."""
    stem = parquet_path.name[: -len(".parquet")] if parquet_path.name.endswith(".parquet") else parquet_path.name
    out = []
    for p in parquet_path.parent.glob(f"{stem}.j*.arrows"):
        jid = p.name[len(stem) + 2: -len(".arrows")]
        if jid.isdigit():
            out.append((int(jid), p))
    return [p for _, p in sorted(out)]


def _journal_id(p: Path) -> str:
    return p.name.rsplit(".j", 1)[1][: -len(".arrows")]


def _absorbed(parquet_path: Path) -> tuple[pq.ParquetFile | None, set[str]]:
    if not parquet_path.exists():
        return None, set()
    pf = pq.ParquetFile(parquet_path)      # raises for a file without footer (an old writer killed)
    meta = pf.schema_arrow.metadata or {}
    ids = set(json.loads(meta[_META_KEY])) if _META_KEY in meta else set()
    return pf, ids


def _journal_batches(path: Path) -> Iterable[pa.RecordBatch]:
    """The complete groups of one journal; a torn last group (writer killed mid-write) ends it."""
    try:
        f = pa.OSFile(str(path), "rb")
    except OSError:
        return
    with f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError):   # killed before the schema reached the file
            return
        while True:
            try:
                b = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError, ValueError) as e:
                log.warning("%s: stopped at a torn group (%s); the rows before it are kept", path, e)
                return
            yield b


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table in ``schema``'s columns: a column added since the file was written reads null."""
    if t.schema.equals(schema, check_metadata=False):
        return t
    cols = []
    for f in schema:
        if f.name in t.column_names:
            c = t.column(f.name)
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(len(t), f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def recover(parquet_path: str | os.PathLike, schema: pa.Schema | None = None) -> Iterable[pa.Table]:
    """Every row of one table in order, as tables: the Parquet file's row groups, then each journal
    it has not absorbed. ``schema`` (when given) fills columns the files lack."""
    parquet_path = Path(parquet_path)
    pf, absorbed = _absorbed(parquet_path)
    if pf is not None:
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i)
            yield _conform(t, schema) if schema is not None else t
    for j in journals_of(parquet_path):
        if _journal_id(j) in absorbed:
            continue
        for b in _journal_batches(j):
            t = pa.Table.from_batches([b])
            yield _conform(t, schema) if schema is not None else t


_SCHEMAS = {"requests": "REQUEST_SCHEMA", "gpu_samples": "GPU_SCHEMA", "windows": "WINDOW_SCHEMA"}


def _schema_named(name: str) -> pa.Schema | None:
    from harness.records import schema as s

    return getattr(s, _SCHEMAS[name]) if name in _SCHEMAS else None


def read_arrow(run_dir: str | os.PathLike, name: str, schema: pa.Schema | None = None, *,
               cell: str | None = None) -> pa.Table:
    """One table of a run directory, also one whose writer was killed; superseded attempts of a
    cell are left out (``manifest.json: attempts``). ``cell`` keeps only that cell's rows (each
    part is filtered as it is read, so only those rows are ever held)."""
    run_dir = Path(run_dir)
    schema = schema or _schema_named(name)
    parts = [_only_cell(t, cell) for t in recover(run_dir / f"{name}.parquet", schema)]
    if parts:
        t = pa.concat_tables(parts, promote_options="default") if schema is None else pa.concat_tables(parts)
    elif schema is not None:
        t = schema.empty_table()
    else:
        t = pa.table({})
    return _latest_attempts(run_dir, t)


def _only_cell(t: pa.Table, cell: str | None) -> pa.Table:
    if cell is None or "cell" not in t.column_names:
        return t
    import pyarrow.compute as pc

    return t.filter(pc.fill_null(pc.equal(t.column("cell"), pa.scalar(cell, pa.string())), False))


def _latest_attempts(run_dir: Path, t: pa.Table) -> pa.Table:
    if "attempt" not in t.column_names or "cell" not in t.column_names or t.num_rows == 0:
        return t
    try:
        attempts = json.loads((run_dir / "manifest.json").read_text()).get("attempts") or {}
    except (OSError, json.JSONDecodeError):
        return t
    if not attempts:
        return t
    import pyarrow.compute as pc

    cells = pa.array(list(attempts), pa.string())
    latest = pa.array([int(v) for v in attempts.values()], pa.int64())
    idx = pc.index_in(t.column("cell"), value_set=cells)
    want = pc.take(latest, idx)                       # null where the cell has no attempt list
    att = pc.fill_null(t.column("attempt"), want)     # an unstamped row belongs to the latest
    keep = pc.or_kleene(pc.is_null(want), pc.equal(att, want))
    return t.filter(pc.fill_null(keep, True))


def read_table(run_dir: str | os.PathLike, name: str, *, cell: str | None = None):
    """One of the run's tables as a pandas DataFrame (empty and typed when absent), recovered from
    its journal when the writer never closed; ``cell``: only that cell's rows."""
    return read_arrow(run_dir, name, cell=cell).to_pandas()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
_SLICE = 64


class _Journal:
    """One append-only Arrow IPC stream, written without a user-space buffer (each group reaches
    the kernel at once, so SIGKILL keeps it) and fsynced on :meth:`sync`."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self._f = open(path, "xb", buffering=0)
        # compressed in the writing thread itself: Arrow's thread pool would add two threads to
        # every load-generating process for groups this small
        self._w = pa.ipc.new_stream(self._f, schema, options=pa.ipc.IpcWriteOptions(
            compression="zstd", use_threads=False))

    def write(self, t: pa.Table) -> None:
        self._w.write_table(t)

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        try:
            self._w.close()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()


class ParquetAppender:
    """Append dataclass rows to one table of the run directory in bounded groups; thread-safe.

    Rows go to a journal (see the module docstring) and become ``path`` (Parquet) at close. The
    journal is opened at once (not in the middle of a measured window). With ``background=True``
    a full group is converted and written by an OS thread, in order: the load generator appends a
    record per request from its event loop, and a 4096-row conversion there (~10-15 ms) would
    hold every open stream's next token. ``stamp`` (optional) is applied to each row before it is
    kept (the run directory stamps the cell's attempt). ``journal_only``: close the journal
    without compacting, for a writer in another process than the run's (whose close compacts).
    """

    def __init__(self, path: Path, schema: pa.Schema, flush_rows: int = 4096, background: bool = False,
                 stamp: Callable[[Any], None] | None = None, flush_s: float = 1.0,
                 journal_only: bool = False):
        self.path = Path(path)
        self.journal_only = journal_only
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._first = 0.0                  # monotonic time of the oldest buffered row
        self.background = background
        self.stamp = stamp
        self._rows: list[dict] = []
        self._lock = threading.RLock()     # re-entrant: close() may come from a signal handler
        # one journal write / compaction at a time; an OS lock: the background writer is an OS
        # thread, and a gevent lock (threading's, once monkey-patched) must not be shared with it
        self._io = _native()[1]()
        self.count = 0
        self.error: BaseException | None = None
        self._journal: _Journal | None = None
        self._dirty = True                 # rows (or an empty table) not yet compacted
        self._open_journal()
        if background:
            self._start, alloc, self._sleep = _native()
            self._batches: deque = deque()
            self._state = alloc()          # guards ``_running`` against a batch left unwritten
            self._running = False

    def _open_journal(self) -> None:
        while True:
            p = self.path.with_name(f"{self.path.name[:-len('.parquet')]}.j{time.time_ns()}.arrows")
            try:
                self._journal = _Journal(p, self.schema)
                return
            except FileExistsError:
                continue

    def append(self, row: Any) -> None:
        if self.stamp is not None:
            self.stamp(row)
        d = row if isinstance(row, dict) else asdict(row)
        with self._lock:
            if not self._rows:
                self._first = time.monotonic()
            self._rows.append(d)
            self.count += 1
            if len(self._rows) >= self.flush_rows or time.monotonic() - self._first >= self.flush_s:
                self._flush_locked()

    def extend(self, rows: Iterable[Any]) -> None:
        for r in rows:
            self.append(r)

    def flush(self, sync: bool = False) -> None:
        """Write what is buffered; returns once it is written (also in background mode); with
        ``sync`` also fsync the journal (power loss then loses none of it)."""
        with self._lock:
            self._flush_locked()
        self._wait_background()
        if sync:
            with self._io:
                if self._journal is not None:
                    try:
                        self._journal.sync()
                    except OSError as e:
                        log.warning("fsync %s: %s", self._journal.path, e)
                        self.error = e

    def _wait_background(self) -> None:
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
            parts = []
            for i in range(0, len(rows), _SLICE):
                if i and self.background:
                    # hand the GIL and the CPU over between slices: on a core shared with the
                    # event loop (a pinned generator), a loop thread that woke for a send runs now,
                    # not after the switch interval or, under a real-time policy, the whole batch
                    os.sched_yield()
                parts.append(pa.Table.from_pylist(rows[i:i + _SLICE], schema=self.schema))
            t = pa.concat_tables(parts).combine_chunks()
        except Exception as e:  # a bad value: reported at close, the run goes on
            log.exception("converting rows for %s", self.path)
            self.error = e
            return
        self._write_arrow(t)

    def _write_arrow(self, t: pa.Table) -> None:
        try:
            with self._io:
                if self._journal is None:      # rows after close: a fresh journal keeps them
                    self._open_journal()
                self._journal.write(t)
                self._dirty = True
        except Exception as e:  # disk full: reported at close, the run goes on
            log.exception("writing %s", self.path)
            self.error = e

    def close(self) -> None:
        """Write what is left, close the journal and compact into ``path``; a second call does
        nothing unless rows came after the first."""
        with self._lock:
            self._flush_locked()
        self._wait_background()
        with self._io:
            if self._journal is not None:
                try:
                    self._journal.close()
                except Exception as e:  # noqa: BLE001
                    log.warning("closing %s: %s", self._journal.path, e)
                    self.error = e
                self._journal = None
            if self._dirty and not self.journal_only:
                try:
                    compact(self.path, self.schema)
                    self._dirty = False
                except Exception as e:  # noqa: BLE001 - the journal stays: nothing is lost
                    log.exception("compacting %s (its journal is kept and still read)", self.path)
                    self.error = e


def compact(parquet_path: Path, schema: pa.Schema,
            keep: Callable[[pa.Table], pa.Table] | None = None) -> None:
    """Parquet + its journals -> one Parquet file, atomically; then the journals go.

    ``keep`` (optional) filters each part (a resume dropping unfinished cells)."""
    parquet_path = Path(parquet_path)
    journals = journals_of(parquet_path)
    _, absorbed = _absorbed(parquet_path)
    ids = sorted(absorbed | {_journal_id(j) for j in journals})
    tmp = parquet_path.with_name(parquet_path.name + ".tmp")
    out_schema = schema.with_metadata({**(schema.metadata or {}), _META_KEY: json.dumps(ids).encode()})
    pending: list[pa.Table] = []
    n = 0
    with pq.ParquetWriter(tmp, out_schema, compression="zstd") as w:
        for t in recover(parquet_path, schema):
            if keep is not None:
                t = keep(t)
            if t.num_rows == 0:
                continue
            pending.append(t)
            n += t.num_rows
            if n >= _COMPACT_ROWS:
                w.write_table(pa.concat_tables(pending).replace_schema_metadata(out_schema.metadata))
                pending, n = [], 0
        if pending:
            w.write_table(pa.concat_tables(pending).replace_schema_metadata(out_schema.metadata))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, parquet_path)
    _fsync_dir(parquet_path.parent)
    for j in journals:
        try:
            j.unlink()
        except FileNotFoundError:
            pass
    _fsync_dir(parquet_path.parent)


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


class UnreadableFile(ValueError):
    """A table file that cannot be read at all; ``path`` names it."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path = Path(path)


class RunDir:
    """Writer for one run's directory. Use as a context manager; ``close`` marks it complete."""

    def __init__(self, path: str | os.PathLike, run_id: str, *, flush_rows: int = 4096,
                 manifest: dict | None = None):
        self.path = Path(path)
        self.run_id = run_id
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "histograms").mkdir(exist_ok=True)
        self.attempts: dict[str, int] = dict((manifest or {}).get("attempts") or {})
        self.requests = ParquetAppender(self.path / "requests.parquet", REQUEST_SCHEMA, min(flush_rows, 1024),
                                        background=True, stamp=self._stamp)
        self.gpu_samples = ParquetAppender(self.path / "gpu_samples.parquet", GPU_SCHEMA, flush_rows)
        self.windows = ParquetAppender(self.path / "windows.parquet", WINDOW_SCHEMA, 1,
                                       stamp=self._stamp)
        self._flush_rows = flush_rows
        self._extra: dict[str, ParquetAppender] = {}
        self._closed = False
        self.manifest: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "versions": _versions(),
        }
        if manifest:
            self.manifest.update({k: v for k, v in manifest.items()
                                  if k not in ("status", "finished_at", "counts", "started_at")})
            self.manifest["started_at"] = manifest.get("started_at", self.manifest["started_at"])
        self.write_manifest()

    @classmethod
    def create(cls, results_dir: str | os.PathLike, name: str, **kw) -> "RunDir":
        run_id = new_run_id(name)
        return cls(Path(results_dir) / run_id, run_id, **kw)

    @classmethod
    def reopen(cls, path: str | os.PathLike, finished: Iterable[str], **kw) -> "RunDir":
        """Open a run directory again to go on writing (``sweep --resume``): what a killed or
        interrupted writer left is recovered and compacted; rows of cells not in ``finished`` (an
        aborted attempt) are dropped and listed in ``manifest.json: discarded``.

        Raises :class:`UnreadableFile` for a file that cannot be read at all (a Parquet file
        without footer, left by a writer of an older version that was killed)."""
        path = Path(path)
        old = json.loads((path / "manifest.json").read_text())
        done = set(finished)
        stale: dict[str, dict[str, int]] = {}

        def keep(t: pa.Table, table: str) -> pa.Table:
            if "cell" not in t.column_names:
                return t
            import pyarrow.compute as pc

            ok = pc.is_in(t.column("cell"), value_set=pa.array(sorted(done), pa.string()))
            dropped = t.filter(pc.invert(ok))
            for c in dropped.column("cell").to_pylist():
                stale.setdefault(c, {}).setdefault(table, 0)
                stale[c][table] += 1
            return t.filter(ok)

        for name, schema in (("requests", REQUEST_SCHEMA), ("windows", WINDOW_SCHEMA),
                             ("gpu_samples", GPU_SCHEMA)):
            p = path / f"{name}.parquet"
            try:
                _absorbed(p)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
                raise UnreadableFile(p, f"{type(e).__name__}: {e}") from None
            if p.exists() or journals_of(p):
                compact(p, schema, (lambda t, n=name: keep(t, n)) if name != "gpu_samples" else None)
        for extra in path.glob("*.parquet"):
            if extra.stem not in _SCHEMAS and journals_of(extra):
                first = next(iter(recover(extra)), None)
                if first is not None:
                    compact(extra, first.schema)
        manifest = dict(old)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        discarded = list(manifest.get("discarded") or [])
        for cell, counts in sorted(stale.items()):
            discarded.append({"cell": cell, "attempt": int((old.get("attempts") or {}).get(cell, 1)),
                              "requests": counts.get("requests", 0),
                              "windows": counts.get("windows", 0), "at": now,
                              "store": "pending"})
        manifest["discarded"] = discarded
        manifest.setdefault("resumed_at", []).append(now)
        rd = cls(path, old.get("run_id") or path.name, manifest=manifest, **kw)
        for a in (rd.requests, rd.gpu_samples, rd.windows):
            if a.path.exists():
                a.count = pq.ParquetFile(a.path).metadata.num_rows
        return rd

    def _stamp(self, row: Any) -> None:
        if isinstance(row, dict):
            if row.get("attempt") is None:
                row["attempt"] = self.attempts.get(row.get("cell"), 1)
        elif getattr(row, "attempt", None) is None:
            row.attempt = self.attempts.get(row.cell, 1)

    def begin_cell(self, cell: str) -> int:
        """Number a new attempt of ``cell`` (1 for the first); rows appended for it carry it."""
        n = int(self.attempts.get(cell, 0)) + 1
        self.attempts[cell] = n
        self.write_manifest(attempts=dict(self.attempts))
        return n

    def write_manifest(self, **updates: Any) -> None:
        self.manifest.update(updates)
        tmp = self.path / "manifest.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.manifest, indent=2, default=str))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path / "manifest.json")

    def write_scenario(self, text: str) -> None:
        (self.path / "scenario.yaml").write_text(text)

    def write_histograms(self, cell: str, encoded: dict[str, str]) -> None:
        (self.path / "histograms" / f"{cell}.json").write_text(json.dumps(encoded))

    def appender(self, name: str, schema) -> ParquetAppender:
        """A further table of this run (``NAME.parquet``), opened once and shared by every
        writer of the run (e.g. one telemetry sampler per replica count), closed with the run."""
        if name not in self._extra:
            self._extra[name] = ParquetAppender(self.path / f"{name}.parquet", schema, self._flush_rows)
        return self._extra[name]

    def _appenders(self) -> list:
        return [self.requests, self.gpu_samples, self.windows, *self._extra.values()]

    def flush(self, sync: bool = True) -> None:
        """Hand every buffered row to the journals and (``sync``) fsync them: the checkpoint a
        cell end makes, after which neither SIGKILL nor power loss loses those rows."""
        for a in self._appenders():
            a.flush(sync=sync)
        if sync:
            _fsync_dir(self.path)

    def close(self, status: str = "complete") -> None:
        """Compact every table to Parquet and write the final manifest. Idempotent: a second call
        (e.g. from a signal handler's path after the normal one) only writes rows appended since."""
        for a in self._appenders():
            try:
                a.close()
            except Exception:  # noqa: BLE001 - one table's trouble must not keep the others open
                log.exception("closing %s", getattr(a, "path", a))
        if self._closed and self.manifest.get("status") == status:
            return
        self._closed = True
        self.write_manifest(status=status,
                            finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                            counts={"requests": self.requests.count,
                                    "gpu_samples": self.gpu_samples.count,
                                    "windows": self.windows.count})

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("complete" if exc_type is None else "interrupted")
