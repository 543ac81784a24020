"""Where a report's data comes from: the run directory, plus InfluxDB for GPU samples that went
only there (telemetry written to the store by a sidecar, or a run directory that lost them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.rundata import RunData, load_run
from harness.errors import InputError
from harness.records.schema import GPU_SCHEMA


def load_run_with_telemetry(path: str | Path, *, influx: str = "auto") -> RunData:
    """``influx``: "never" reads only local files; "auto" asks InfluxDB when the run dir holds no
    GPU samples and the scenario names a store; "always" replaces local samples with the store's."""
    run = load_run(path)
    if influx == "never":
        return run
    sc = run.scenario
    db = sc.store.influxdb if sc is not None else None
    if db is None:
        if influx == "always":
            raise InputError(
                "the run's scenario names no store.influxdb to read from",
                file=str(Path(path) / "scenario.yaml"),
                field="store.influxdb",
            )
        return run
    if influx == "auto" and not run.gpu.empty:
        return run
    return with_influx_gpu_samples(run, db, required=influx == "always")


def _span(run: RunData) -> tuple[int, int] | None:
    if not run.windows.empty:
        return int(run.windows["start_ns"].min()), int(run.windows["end_ns"].max())
    if not run.requests.empty:
        return int(run.requests["start_ns"].min()), int(run.requests["end_ns"].max())
    return None


def read_gpu_samples(reader, run_id: str, start_ns: int, end_ns: int) -> pd.DataFrame:
    """The run's ``gpu`` points between two instants (1 s margin), as GpuSample columns."""
    q = (
        f'SELECT * FROM "gpu" WHERE "run_id" = \'{run_id.replace(chr(39), "")}\' '
        f"AND time >= {int(start_ns) - 10**9} AND time <= {int(end_ns) + 10**9}"
    )
    df = reader.query(q)
    out = GPU_SCHEMA.empty_table().to_pandas()
    if df.empty:
        return out
    rows = pd.DataFrame({"ts_ns": df["time"].astype("int64")})
    for f in GPU_SCHEMA:
        if f.name == "ts_ns":
            continue
        col = df[f.name] if f.name in df.columns else None
        if f.name == "gpu":
            rows[f.name] = pd.to_numeric(col, errors="coerce").fillna(0).astype("int64")
        elif f.name in ("source", "host", "run_id"):
            rows[f.name] = col.astype(str) if col is not None else ""
        elif col is not None:
            rows[f.name] = pd.to_numeric(col, errors="coerce")
        else:
            rows[f.name] = None
    return rows[[f.name for f in GPU_SCHEMA]].sort_values("ts_ns", ignore_index=True)


def with_influx_gpu_samples(run: RunData, db, *, required: bool = False) -> RunData:
    """Replace the run's GPU samples by the store's; a database that cannot answer becomes a note
    (or, when ``required``, an error naming the database)."""
    from harness.store.reader import InfluxQLReader, QueryError
    from harness.store.target import InfluxTarget

    span = _span(run)
    if span is None:
        return run
    reader = InfluxQLReader(InfluxTarget.from_config(db))
    try:
        samples = read_gpu_samples(reader, run.run_id, *span)
    except (QueryError, OSError) as e:
        if required:
            raise InputError(
                f"cannot read GPU samples from InfluxDB: {e}", field="store.influxdb"
            ) from None
        run.notes.append(f"GPU samples could not be read from InfluxDB {db.url}: {e}")
        return run
    finally:
        reader.close()
    if samples.empty:
        run.notes.append(f"InfluxDB {db.url} holds no GPU samples for run {run.run_id}")
        return run
    run.gpu = samples
    run.notes.append(f"GPU samples read from InfluxDB {db.url} ({len(samples)} points)")
    return run
