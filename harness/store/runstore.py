"""Write a run's records to the scenario's InfluxDB as they are made, beside the run directory.

``RunStore`` owns the optional writer (it spools to disk when the database is away, so a failing
database is counted and never stops a run); ``ObservedAppender`` stands in for a RunDir appender
so that every row written to the run directory is also seen by an observer (the store, a live
display) without the load generator knowing about either.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from harness.errors import InputError
from harness.records.rundir import RunDir
from harness.records.schema import CellWindow, RequestRecord
from harness.scenario.models import Scenario

log = logging.getLogger(__name__)


class ObservedAppender:
    """Stands in for a RunDir appender: forwards everything, and shows each row to ``on_row``."""

    def __init__(self, inner, on_row: Callable[[Any], None]):
        self._inner = inner
        self._on_row = on_row

    def append(self, row) -> None:
        self._inner.append(row)     # first: the run directory stamps the row (its attempt)
        try:
            self._on_row(row)
        except Exception:  # noqa: BLE001 - a display problem must never lose a record
            log.exception("row observer failed")

    def extend(self, rows) -> None:
        for r in rows:
            self.append(r)

    def flush(self, sync: bool = False) -> None:
        self._inner.flush(sync=sync)

    def close(self) -> None:
        self._inner.close()

    @property
    def count(self) -> int:
        return self._inner.count

    @property
    def path(self):
        return self._inner.path


class RunStore:
    """The scenario's InfluxDB (optional): requests, windows, cell markers and GPU samples go there
    beside the run directory (``sweep`` and ``run`` alike). The writer spools to disk when the database is away, so a failing
    database is counted (manifest ``store``) and never stops the run."""

    def __init__(self, scenario: Scenario, rundir: RunDir):
        self.writer = None
        self.note = ""
        self.run_id = rundir.run_id
        self.rundir = rundir
        cfg = scenario.store.influxdb
        self._cfg = cfg
        if cfg is None:
            self._mark_discarded("no store")
            return
        self._purge_discarded(before_writer=True)
        try:
            from harness.store.writer import writer_from_config

            self.writer = writer_from_config(cfg, rundir.path, create_db=cfg.api == "v1")
            self.note = f"store: InfluxDB {cfg.url} ({cfg.api})"
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - the run directory still gets everything
            log.warning("store: could not start the InfluxDB writer: %s", e)
            self.note = f"store: not written ({type(e).__name__}: {e})"

    def sink(self):
        if self.writer is None:
            return None
        from harness.telemetry import StoreSink

        return StoreSink(self.writer, run_id=self.run_id)

    def _safe(self, fn, *args, **kw) -> None:
        if self.writer is None:
            return
        try:
            fn(*args, **kw)
        except Exception as e:  # noqa: BLE001
            log.warning("store write failed: %s", e)

    def record(self, rec) -> None:
        """``rec``: a RequestRecord or its dict (the load generator hands the run dir dicts)."""
        self._safe(
            lambda: self.writer.write_requests(
                [RequestRecord(**rec) if isinstance(rec, dict) else rec]
            )
        )

    def window(self, w: CellWindow) -> None:
        self._safe(lambda: self.writer.write_windows([w]))

    def marker(self, cell: str, event: str) -> None:
        self._safe(
            lambda: self.writer.write_marker(self.run_id, "cell", event, time.time_ns(), cell=cell)
        )

    def close(self) -> dict | None:
        if self.writer is None:
            return None
        try:
            out = self.writer.close()
        except Exception as e:  # noqa: BLE001
            log.warning("store close failed: %s", e)
            out = {"error": str(e)}
        self._purge_discarded(before_writer=False)   # a database away at the start: try again
        return out

    # -- an aborted attempt of a cell (sweep --resume) leaves the store too ---------------------
    def _pending(self) -> list[dict]:
        return [d for d in self.rundir.manifest.get("discarded") or []
                if d.get("store") not in ("deleted", "no store")]

    def _mark_discarded(self, outcome: str) -> None:
        todo = self._pending()
        if todo:
            for d in todo:
                d["store"] = outcome
            self.rundir.write_manifest(discarded=self.rundir.manifest["discarded"])

    def _purge_discarded(self, before_writer: bool) -> None:
        """Delete the aborted attempts' request and window points from the spool (before the
        writer replays it) and from the database; the outcome goes to ``manifest: discarded``."""
        todo = self._pending()
        if not todo:
            return
        from pathlib import Path

        from harness.store.purge import delete_cells, purge_spool
        from harness.store.target import InfluxTarget

        cells = sorted({d["cell"] for d in todo})
        if before_writer:
            spool = Path(self._cfg.spool_dir) if self._cfg.spool_dir else self.rundir.path / "influx-spool"
            try:
                n = purge_spool(spool, self.run_id, cells)
                if n:
                    log.info("store: %d spooled points of aborted attempts dropped", n)
            except OSError as e:
                log.warning("store: could not filter the spool: %s", e)
        try:
            delete_cells(InfluxTarget.from_config(self._cfg), self.run_id, cells)
            outcome = "deleted"
        except Exception as e:  # noqa: BLE001 - the points carry their attempt; a query can filter
            outcome = f"not deleted ({e}); its points carry attempt={todo[0].get('attempt')}"
            log.warning("store: the aborted attempt of %s was not deleted: %s", ", ".join(cells), e)
        self._mark_discarded(outcome)
