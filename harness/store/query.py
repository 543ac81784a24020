"""Analysis-side reads from the store: a run's GPU samples as a ``gpu_samples.parquet``-shaped
DataFrame, for runs whose telemetry went only to InfluxDB (the compose sidecar).

InfluxQL ``/query`` first (InfluxDB 1.x, 2.x with a DBRP mapping, 3.x); a server without InfluxQL
(VictoriaMetrics answers ``/query`` with a stub) is read through ``/api/v1/export`` instead.
Samples written without a run id (a sidecar started before the run) are included when they fall
inside the run's time range.
"""

from __future__ import annotations

import logging

from harness.store.reader import InfluxQLReader, QueryError, VictoriaMetricsReader
from harness.store.target import InfluxTarget

log = logging.getLogger("harness.store")

GPU_FIELDS = ("power_w", "energy_j", "gpu_util_pct", "mem_util_pct", "sm_clock_mhz",
              "mem_clock_mhz", "mem_used_bytes", "temperature_c", "throttle_reasons")


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _shape(df, run_id: str):
    """Columns and types of GPU_SCHEMA (harness.records.schema)."""
    import pandas as pd

    from harness.records.schema import GPU_SCHEMA

    out = pd.DataFrame()
    for f in GPU_SCHEMA:
        name = f.name
        if name in df.columns:
            col = df[name]
        else:
            col = pd.Series([None] * len(df), index=df.index)
        if name in ("ts_ns", "gpu", "mem_used_bytes", "throttle_reasons"):
            col = pd.to_numeric(col, errors="coerce").astype("Int64")
        elif name in ("source", "host", "run_id"):
            col = col.fillna("").astype(str)
        else:
            col = pd.to_numeric(col, errors="coerce").astype("float64")
        out[name] = col.values
    out["run_id"] = out["run_id"].where(out["run_id"] != "", run_id)
    return out.sort_values(["ts_ns", "gpu"], kind="stable").reset_index(drop=True)


def read_gpu_samples(db, *, run_id: str, start_ns: int, end_ns: int):
    """GPU samples of ``run_id`` (or with no run id) in [start_ns, end_ns]; None when the store
    cannot be read (the caller keeps what it has and notes why)."""
    target = db if isinstance(db, InfluxTarget) else InfluxTarget.from_config(db)
    if not target.database and target.bucket:
        target = InfluxTarget(**{**target.__dict__, "database": target.bucket.split("/")[0]})
    where = (f"time >= {int(start_ns)} AND time <= {int(end_ns)} AND "
             f"(run_id = '{_q(run_id)}' OR run_id = '')")
    r = InfluxQLReader(target)
    try:
        df = r.query(f"SELECT * FROM gpu WHERE {where}")
        if not df.empty and df.get("measurement", "gpu").iloc[0] == "gpu" and "power_w" in df.columns:
            df["ts_ns"] = df["time"].astype("int64")
            return _shape(df, run_id)
        if df.empty:
            stub = False
        else:
            stub = True   # an answer that is not our series: no real InfluxQL behind /query
    except QueryError as e:
        log.info("store: InfluxQL read failed (%s); trying VictoriaMetrics export", e)
        stub = True
    finally:
        r.close()
    if not stub:
        import pandas as pd

        return _shape(pd.DataFrame(), run_id)
    return _read_vm(target.url, run_id, start_ns, end_ns)


def _read_vm(url: str, run_id: str, start_ns: int, end_ns: int):
    vm = VictoriaMetricsReader(url)
    try:
        # VictoriaMetrics keeps milliseconds: widen by one so edge samples are not cut off
        raw = vm.export('{__name__=~"gpu_.+"}', start_s=(start_ns // 10**6 - 1) / 1e3,
                        end_s=(end_ns // 10**6 + 1) / 1e3)
    except (QueryError, OSError) as e:
        log.warning("store: could not read GPU samples back (%s)", e)
        return None
    finally:
        vm.close()
    if raw.empty:
        return _shape(raw, run_id)
    if "run_id" not in raw.columns:
        raw["run_id"] = ""
    raw["run_id"] = raw["run_id"].fillna("")
    raw = raw[raw["run_id"].isin([run_id, ""])].copy()
    raw["field"] = raw["__name__"].str.slice(len("gpu_"))
    raw = raw[raw["field"].isin(GPU_FIELDS)]
    keys = [k for k in ("ts_ms", "gpu", "source", "host", "run_id") if k in raw.columns]
    wide = raw.pivot_table(index=keys, columns="field", values="value", aggfunc="last").reset_index()
    wide["ts_ns"] = wide["ts_ms"].astype("int64") * 1_000_000   # VictoriaMetrics keeps ms
    wide = wide[(wide["ts_ms"] >= start_ns // 10**6) & (wide["ts_ms"] <= end_ns // 10**6)]
    return _shape(wide, run_id)
