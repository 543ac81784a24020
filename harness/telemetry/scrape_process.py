"""The replicas' ``/metrics`` scraped by a process of its own, so the load generator's process
spends no CPU on it (parsing one TGI exposition is ~30 ms of Python).

It writes its rows itself: a journal of the run directory's ``server_metrics`` table, one group
per scrape (the run's writer compacts it into ``server_metrics.parquet`` at close; a reader
during the run, such as the knee search's queue-depth check, sees each scrape at once) and,
with a store, measurement ``server_metric`` through an InfluxDB writer of its own (spool
``<spool>/server_metrics``). Timestamps are ``time.time_ns()``: the clock of request records
and GPU samples. It runs at a lower CPU priority (nice +5): on a busy host the generator goes
first, and a scrape's timestamp is still taken when its answer arrived.

Protocol, one JSON object a line. The first line on stdin is the configuration; then::

    {"op": "start", "urls": [...]} -> {"op": "started", "pid": N}  (after the group's first scrape)
    {"op": "stop"}                 -> {"op": "stopped", "summary": {scrapes, samples, failures,
                                                                    last_error}}
    end of stdin                    -> {"op": "closed", "store": {...} | null, "cpu_s": S}

End of stdin is also what a killed parent leaves: the journal is closed and the process exits.
It is detached from the terminal's process group: Ctrl-C is the run's to handle, not its.
Header values and tokens come from the configuration on stdin and the inherited environment,
never from the command line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("harness.telemetry.scrape_process")


class _Rows:
    """The sink of a :class:`Scraper`: the run directory's journal and the store."""

    def __init__(self, run_dir: Path, influx: dict | None, store_buckets: bool):
        from harness.records.rundir import ParquetAppender
        from harness.telemetry.server_metrics import server_sample_schema

        self.rows = ParquetAppender(run_dir / "server_metrics.parquet", server_sample_schema(),
                                    journal_only=True)
        self.store_buckets = store_buckets
        self.writer = None
        self._synced = time.monotonic()
        if influx is not None:
            try:
                from harness.scenario.models import InfluxDB
                from harness.store.writer import InfluxWriter
                from harness.store.target import InfluxTarget

                cfg = InfluxDB.model_validate(influx)
                spool = Path(cfg.spool_dir) if cfg.spool_dir else run_dir / "influx-spool"
                self.writer = InfluxWriter(InfluxTarget.from_config(cfg), spool / "server_metrics",
                                           batch_size=cfg.batch_size,
                                           flush_interval_s=cfg.flush_interval_s,
                                           create_db=cfg.api == "v1")
            except Exception as e:  # noqa: BLE001 - the run directory still gets every row
                log.warning("server metrics: store not written (%s: %s)", type(e).__name__, e)

    def __call__(self, rows) -> None:
        self.rows.extend(rows)
        self.rows.flush()        # one journal group a scrape: readers during the run see it at once
        if time.monotonic() - self._synced > 5.0:    # what a power loss may take: ~5 s of scrapes
            self.rows.flush(sync=True)
            self._synced = time.monotonic()
        if self.writer is not None:
            from harness.store.lineproto import server_metric

            if not self.store_buckets:
                rows = [r for r in rows if not r.name.endswith("_bucket")]
            try:
                self.writer.write_lines([x for x in map(server_metric, rows) if x is not None])
            except Exception as e:  # noqa: BLE001 - counted by the store's writer
                log.warning("store write failed: %s", e)

    def close(self) -> dict | None:
        self.rows.close()
        return self.writer.close() if self.writer is not None else None


def _reply(d: dict) -> None:
    try:
        sys.stdout.write(json.dumps(d, default=str) + "\n")
        sys.stdout.flush()
    except OSError:          # the run is gone (killed): its journal is closed all the same
        pass


def serve(cfg: dict, commands) -> None:
    """Answer ``commands`` (an iterator of lines) as the module docstring says."""
    from harness.protocols.access import Access
    import prometheus_client.parser  # noqa: F401 - imported before the first scrape waits on it

    from harness.records.rundir import ParquetAppender  # noqa: F401
    from harness.scenario.models import Target
    from harness.telemetry.server_metrics import Scraper

    if cfg.get("influxdb") is not None:
        import harness.store.writer  # noqa: F401

    sm = cfg["server_metrics"]
    try:
        access = Access.from_target(Target.model_validate(cfg["target"]))
    except Exception:  # noqa: BLE001 - the run checked its headers already
        access = None
    sink = scraper = None
    try:
        for line in commands:
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg["op"] == "start" and scraper is None:
                if sink is None:             # a run whose groups never start writes no table
                    sink = _Rows(Path(cfg["run_dir"]), cfg.get("influxdb"),
                                 bool(sm.get("store_buckets")))
                scraper = Scraper(list(msg["urls"]), sink, rate_hz=sm["rate_hz"],
                                  timeout_s=sm["timeout_s"], access=access,
                                  full_every_s=sm["full_every_s"], run_id=cfg["run_id"])
                scraper.scrape_once()        # the group's first scrape precedes its first request
                scraper.start(delay_first=True)
                _reply({"op": "started", "pid": os.getpid()})
            elif msg["op"] == "stop":
                summary = scraper.stop() if scraper is not None else None
                scraper = None
                if sink is not None:
                    sink.rows.flush(sync=True)
                _reply({"op": "stopped", "summary": summary})
    finally:
        if scraper is not None:
            scraper.stop()
        store = sink.close() if sink is not None else None
        t = os.times()
        _reply({"op": "closed", "store": store, "cpu_s": round(t.user + t.system, 3)})


def main() -> None:
    line = sys.stdin.readline()
    if not line.strip():      # the run ended (a Ctrl-C while it was starting) before configuring us
        return
    cfg = json.loads(line)
    logging.basicConfig(level=int(cfg.get("log_level", logging.WARNING)),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        os.nice(5)
    except OSError:
        pass
    serve(cfg, sys.stdin)


if __name__ == "__main__":
    main()
