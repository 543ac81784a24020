"""Where a report's data comes from: the run directory, plus InfluxDB for GPU samples that went
only there (a run whose telemetry was sent to the store instead of the run directory)."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.rundata import RunData, load_run


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
            from harness.errors import InputError
            raise InputError("the run's scenario names no store.influxdb to read from",
                             file=str(Path(path) / "scenario.yaml"), field="store.influxdb")
        return run
    if influx == "auto" and not run.gpu.empty:
        return run
    return _with_influx_samples(run, db)


def _with_influx_samples(run: RunData, db) -> RunData:
    try:
        from harness.store.query import read_gpu_samples  # built on the telemetry branch
    except ImportError:
        run.notes.append("GPU samples were not read from InfluxDB: this build has no InfluxQL reader")
        return run
    if run.windows.empty:
        return run
    start = int(run.windows["start_ns"].min())
    end = int(run.windows["end_ns"].max())
    samples = read_gpu_samples(db, run_id=run.run_id, start_ns=start, end_ns=end)
    if samples is not None and len(samples):
        run.gpu = samples
        run.notes.append(f"GPU samples read from InfluxDB ({len(samples)} rows)")
    return run
