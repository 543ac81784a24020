"""The InfluxDB writer: batched, never blocking the run, nothing lost when the database is not.

Path of a point: encoder -> local chunk (``chunk_lines`` or 0.2 s) -> live path -> database.
The live path is influxdb-client's batching ``WriteApi`` for ``api: v2`` (it joins chunks into
batches of about ``batch_size`` points or every ``flush_interval_s``) and a sender thread posting
to ``/write`` for ``api: v1``. A batch the database does not acknowledge (down, slow past the
timeout, 5xx, auth) goes to the disk :class:`~harness.store.spool.Spool`; from then on new
chunks go straight to the spool (no pile-up in memory behind a dead server) until a replay
thread has written every spooled batch back, oldest first, and the live path resumes.
Every point is accounted for in :meth:`InfluxWriter.stats`: acked, spooled, replayed,
rejected (the server refused it as malformed: resending cannot help) or dropped (spool full);
a spooled point later ends replayed or rejected_from_spool, or waits on disk for the next writer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterable

from harness.secrets import redact
from harness.store import lineproto as lp
from harness.store.spool import Spool
from harness.store.target import InfluxTarget
from harness.store.transport import REJECT_STATUSES, HttpWriter, WriteFailed, create_database

log = logging.getLogger("harness.store")

_STOP = object()


class InfluxWriter:
    def __init__(self, target: InfluxTarget, spool_dir: str | os.PathLike, *,
                 batch_size: int = 5000, flush_interval_s: float = 1.0, chunk_lines: int = 1000,
                 replay_interval_s: float = 1.0, spool_max_bytes: int = 1 << 30,
                 max_inflight_points: int | None = None, create_db: bool = False):
        self.target = target
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.chunk_lines = max(1, min(chunk_lines, batch_size))
        self.replay_interval_s = replay_interval_s
        # points handed to the live path and not yet answered; beyond this (a database slower
        # than the run) new chunks go to the spool instead of piling up in memory
        self.max_inflight_points = max_inflight_points or max(200_000, 20 * batch_size)
        self.spool = Spool(spool_dir, spool_max_bytes)
        self._http = HttpWriter(target)
        self._buf: list[str] = []
        self._buf_lock = threading.Lock()
        self._state = threading.Lock()       # degraded flag, counters
        self._cv = threading.Condition(self._state)
        self._unique = lp.UniqueTime()
        # every submitted point ends acked, spooled, rejected or dropped; a spooled one later
        # ends replayed or rejected_from_spool (or stays in the spool for the next writer)
        self.n = {"submitted": 0, "acked": 0, "spooled": 0, "replayed": 0, "rejected": 0,
                  "rejected_from_spool": 0, "dropped": 0, "failed_batches": 0}
        self.last_error: str | None = None
        self._degraded = not self.spool.empty()   # a previous run left batches: replay them first
        self._closing = threading.Event()
        self._closed = False
        if create_db and target.database:
            try:
                create_database(target)
            except WriteFailed as e:
                log.warning("store: could not create database %r (%s); writes will spool",
                            target.database, e)
        self._client = self._write_api = None
        self._v1q: queue.Queue | None = None
        if target.api == "v2":
            self._start_v2()
        else:
            self._v1q = queue.Queue()
            self._sender = threading.Thread(target=self._v1_loop, name="influx-v1-sender", daemon=True)
            self._sender.start()
        self._replayer = threading.Thread(target=self._replay_loop, name="influx-replay", daemon=True)
        self._replayer.start()
        self._ticker = threading.Thread(target=self._chunk_loop, name="influx-chunker", daemon=True)
        self._ticker.start()

    # -- v2 live path: influxdb-client's batching WriteApi -----------------------------------
    def _start_v2(self) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import WriteOptions
        from reactivex.scheduler import ThreadPoolScheduler

        t = self.target
        self._client = InfluxDBClient(url=t.url, token=t.client_token() or "", org=t.org or "-",
                                      timeout=int(t.timeout_s * 1000))
        per_batch = max(1, self.batch_size // self.chunk_lines)
        opts = WriteOptions(batch_size=per_batch, flush_interval=int(self.flush_interval_s * 1000),
                            jitter_interval=0, max_retries=0, max_retry_time=0,
                            max_close_wait=int(max(30.0, 3 * t.timeout_s) * 1000),
                            write_scheduler=ThreadPoolScheduler(max_workers=1))
        self._write_api = self._client.write_api(write_options=opts,
                                                 success_callback=self._v2_ok,
                                                 error_callback=self._v2_failed)

    @staticmethod
    def _points(data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        return data.count(b"\n") + 1 if data else 0

    def _v2_ok(self, conf, data) -> None:
        self._acked(self._points(data))

    def _v2_failed(self, conf, data, exc) -> None:
        body = data if isinstance(data, bytes) else data.encode()
        status = getattr(exc, "status", None)
        msg = f"HTTP {status}: {getattr(exc, 'reason', '')}" if status else f"{type(exc).__name__}: {exc}"
        self._failed(body, self._points(body), WriteFailed(redact(msg, *self.target.secrets()), status))

    # -- v1 live path: a sender thread posting to /write -------------------------------------
    def _v1_loop(self) -> None:
        q = self._v1q
        while True:
            item = q.get()
            if item is _STOP:
                return
            parts, n = [item[0]], item[1]
            stop = False
            while n < self.batch_size:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                parts.append(more[0])
                n += more[1]
            body = b"\n".join(parts)
            if self.degraded:
                self._to_spool(body, n)
            else:
                try:
                    self._http.post(body)
                    self._acked(n)
                except WriteFailed as e:
                    self._failed(body, n, e)
            if stop:
                return

    # -- outcomes ---------------------------------------------------------------------------
    def _acked(self, n: int) -> None:
        with self._cv:
            self.n["acked"] += n
            self._cv.notify_all()

    def _failed(self, body: bytes, n: int, e: WriteFailed) -> None:
        with self._cv:
            self.n["failed_batches"] += 1
            self.last_error = str(e)
        if e.status in REJECT_STATUSES:
            log.error("store: the database rejected a batch of %d points (%s); not retried", n, e)
            with self._cv:
                self.n["rejected"] += n
                self._cv.notify_all()
            return
        with self._cv:
            was = self._degraded
            self._degraded = True
        if not was:
            log.warning("store: write to %s failed (%s); spooling to %s and replaying when it "
                        "answers", self.target.url, e, self.spool.path)
        self._to_spool(body, n)

    def _to_spool(self, body: bytes, n: int) -> None:
        ok = self.spool.put(body, n)
        with self._cv:
            self.n["spooled" if ok else "dropped"] += n
            self._cv.notify_all()
        if not ok:
            log.error("store: spool %s is full; %d points dropped", self.spool.path, n)

    @property
    def degraded(self) -> bool:
        return self._degraded

    # -- replay -----------------------------------------------------------------------------
    def _replay_loop(self) -> None:
        while True:
            progressed = self.replay_once()
            if self._closing.is_set() and not progressed:
                return
            if not progressed:
                self._closing.wait(self.replay_interval_s)

    def replay_once(self) -> bool:
        """Write the oldest spooled batches back (joined up to ``batch_size`` points per request);
        True when something was written (or set aside as rejected)."""
        items = self.spool.oldest_batch(self.batch_size)
        if not items:
            with self._cv:
                if self._degraded and self.spool.empty():
                    self._degraded = False
                    log.warning("store: %s answers again; %d points replayed so far, live writes "
                                "resume", self.target.url, self.n["replayed"])
            return False
        try:
            self._http.post(b"\n".join(body for _, body, _ in items))
        except WriteFailed as e:
            if e.retryable:
                with self._cv:
                    self.last_error = str(e)
                return False
            if len(items) > 1:   # find the malformed one: send them one by one
                return any([self._replay_one(*it) for it in items])
            return self._replay_one(*items[0])
        for f, _, n in items:
            self._replayed(f, n)
        return True

    def _replay_one(self, f: Path, body: bytes, n: int) -> bool:
        try:
            self._http.post(body)
        except WriteFailed as e:
            if e.retryable:
                return False
            bad = f.parent / "rejected"
            bad.mkdir(exist_ok=True)
            f.rename(bad / f.name)
            log.error("store: spooled batch %s rejected by the database (%s); moved to %s",
                      f.name, e, bad)
            with self._cv:
                self.n["rejected_from_spool"] += n
                self._cv.notify_all()
            return True
        self._replayed(f, n)
        return True

    def _replayed(self, f: Path, n: int) -> None:
        self.spool.done(f)
        with self._cv:
            self.n["replayed"] += n
            self._cv.notify_all()

    # -- input ------------------------------------------------------------------------------
    def write_lines(self, lines: Iterable[str]) -> None:
        chunks = []
        with self._buf_lock:
            self._buf.extend(lines)
            while len(self._buf) >= self.chunk_lines:
                chunks.append(self._buf[:self.chunk_lines])
                del self._buf[:self.chunk_lines]
        for c in chunks:
            self._dispatch(c)

    def _dispatch(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        n = len(lines)
        with self._cv:
            inflight = self.n["submitted"] - self._answered()
            self.n["submitted"] += n
            degraded = self._degraded or inflight > self.max_inflight_points
        if degraded or self._closed:
            self._to_spool(body, n)
        elif self._write_api is not None:
            self._write_api.write(bucket=self.target.write_bucket, org=self.target.org or "-",
                                  record=body)
        else:
            self._v1q.put((body, n))

    def flush_async(self) -> None:
        """Hand the partial local chunk to the live path now."""
        with self._buf_lock:
            chunk, self._buf = self._buf, []
        self._dispatch(chunk)

    def _chunk_loop(self) -> None:
        while not self._closing.wait(0.2):
            self.flush_async()

    def write_gpu_samples(self, batch) -> None:
        self.write_lines(lp.lines(lp.gpu_sample, batch))

    def write_gpu_processes(self, batch) -> None:
        self.write_lines(lp.lines(lp.gpu_process, batch))

    def write_gpu_gap(self, gap) -> None:
        self.write_lines(lp.lines(lp.gpu_gap, [gap]))

    def write_requests(self, records) -> None:
        with self._buf_lock:   # UniqueTime is not thread-safe on its own
            ls = [s for s in (lp.request(r, self._unique) for r in records) if s is not None]
        self.write_lines(ls)

    def write_windows(self, windows) -> None:
        self.write_lines(lp.lines(lp.window, windows))

    def write_marker(self, run_id: str, kind: str, event: str, ts_ns: int | None = None,
                     **fields) -> None:
        s = lp.marker(run_id, kind, event, ts_ns or time.time_ns(), **fields)
        if s:
            self.write_lines([s])

    # -- waiting and closing ----------------------------------------------------------------
    def _answered(self) -> int:
        n = self.n
        return n["acked"] + n["spooled"] + n["rejected"] + n["dropped"]

    def _settled(self) -> bool:
        return self.n["submitted"] == self._answered()

    def flush(self, timeout_s: float = 30.0, drain_spool: bool = False) -> bool:
        """Wait until every point given so far is acknowledged, spooled or rejected
        (and, with ``drain_spool``, until the spool is empty). False on timeout."""
        self.flush_async()
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while not self._settled():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        while drain_spool and not self.spool.empty():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stats(self) -> dict:
        with self._cv:
            d = dict(self.n)
        batches, points = self.spool.pending()
        d.update(spool_batches=batches, spool_points=points, degraded=self._degraded,
                 last_error=self.last_error, spool_dir=str(self.spool.path))
        return d

    def close(self, timeout_s: float = 30.0) -> dict:
        """Flush, try to drain the spool for up to ``timeout_s``, stop the threads. What is still
        spooled stays on disk and is replayed by the next writer on the same spool directory."""
        if self._closed:
            return self.stats()
        self.flush_async()
        self._closed = True          # from here on, late chunks go to the spool
        if self._write_api is not None:
            self._write_api.close()
        else:
            self._v1q.put(_STOP)
            self._sender.join(timeout_s)
        self.flush(timeout_s=timeout_s, drain_spool=True)
        self._closing.set()
        self._replayer.join(timeout_s)
        self._ticker.join(1.0)
        if self._client is not None:
            self._client.close()
        self._http.close()
        st = self.stats()
        if st["spool_points"]:
            log.warning("store: %d points were not written to %s: %s. They wait in %s; write them "
                        "with: %s", st["spool_points"], self.target.url,
                        _what_happened(st["last_error"]), st["spool_dir"],
                        replay_command(st["spool_dir"]))
        return st

    def __enter__(self) -> "InfluxWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _what_happened(last_error: str | None) -> str:
    """The reason in words: a refused credential is not an unreachable database."""
    if not last_error:
        return "the database did not answer in time"
    if last_error.startswith(("HTTP 401", "HTTP 403")) or " 401" in last_error or " 403" in last_error:
        return (f"the database refused the credentials ({last_error[:120]}); check the token or "
                "password the scenario's store.influxdb names")
    if last_error.startswith("HTTP 404"):
        return f"the database or bucket was not found ({last_error[:120]})"
    return f"the database was unreachable or failing (last error: {last_error[:160]})"


def replay_command(spool_dir: str | os.PathLike) -> str:
    """The exact command that writes a left-over spool (its run's scenario sits beside it)."""
    import shlex

    spool = Path(spool_dir)
    scenario = spool.parent / "scenario.yaml"
    shown = shlex.quote(str(scenario)) if scenario.is_file() else "SCENARIO.yaml"
    return f"python -m harness.store.replay {shlex.quote(str(spool))} --scenario {shown}"


def writer_from_config(cfg, run_dir: str | os.PathLike | None = None, **kw) -> InfluxWriter:
    """A writer for the scenario's ``store.influxdb`` section; spool in ``spool_dir`` or the run dir."""
    target = InfluxTarget.from_config(cfg)
    spool = cfg.spool_dir or (Path(run_dir) / "influx-spool" if run_dir else Path("influx-spool"))
    return InfluxWriter(target, spool, batch_size=cfg.batch_size,
                        flush_interval_s=cfg.flush_interval_s, **kw)
