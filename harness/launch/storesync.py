"""Make sure a finished run's request records and windows are in the scenario's InfluxDB.

The stack's dashboards and InfluxQL reads need the records in the store. When the load generator
already wrote them live, this does nothing (it counts the run's request points first); otherwise
it writes them from the run directory through the store's writer (spooled and replayed like any
other write), so no run of the stack leaves the database without its records.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def sync_run_to_store(run_dir: str | Path, *, batch_rows: int = 5000) -> dict:
    """Write the request records and windows of ``run_dir`` to its scenario's store.

    The rows are read through the records layer (:func:`harness.records.rundir.read_arrow`):
    ``requests.parquet`` plus every journal it has not absorbed, so a run whose load generator was
    killed before it could compact them is written too; a superseded attempt of a cell is not.

    Returns ``{"status": "absent"|"present"|"written", "requests": n, "windows": n, ...}``.
    """
    import pyarrow.compute as pc

    from harness.records.rundir import read_arrow
    from harness.records.schema import CellWindow, RequestRecord
    from harness.scenario.loader import load_scenario
    from harness.store.reader import InfluxQLReader
    from harness.store.target import InfluxTarget
    from harness.store.writer import writer_from_config

    run_dir = Path(run_dir)
    scenario = load_scenario(run_dir / "scenario.yaml")
    cfg = scenario.store.influxdb
    if cfg is None:
        return {"status": "absent"}
    target = InfluxTarget.from_config(cfg)
    if not target.database and target.bucket:
        target = InfluxTarget(**{**target.__dict__, "database": target.bucket.split("/")[0]})
    table = read_arrow(run_dir, "requests")
    if table.num_rows == 0:
        return {"status": "absent"}
    run_ids = pc.unique(table.column("run_id")).to_pylist()
    reader = InfluxQLReader(target)
    try:
        present = sum(reader.count("request", "output_tokens", f"run_id = '{_quote(r)}'")
                      for r in run_ids if r is not None)
    finally:
        reader.close()
    if present:
        return {"status": "present", "requests": present}
    writer = writer_from_config(cfg, run_dir)
    n_req = n_win = 0
    try:
        for batch in table.to_batches(max_chunksize=batch_rows):
            rows = [RequestRecord(**r) for r in batch.to_pylist()]
            writer.write_requests(rows)
            n_req += len(rows)
        rows = [CellWindow(**r) for r in read_arrow(run_dir, "windows").to_pylist()]
        if rows:
            writer.write_windows(rows)
            n_win = len(rows)
    finally:
        stats = writer.close()
    log.info("store: wrote %d request records and %d windows of %s", n_req, n_win, run_dir.name)
    return {"status": "written", "requests": n_req, "windows": n_win,
            "acked": stats.get("acked"), "spooled": stats.get("spool_points")}
