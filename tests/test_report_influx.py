"""A sweep that also writes to InfluxDB (a real influxd 1.x), and ``slm-harness report`` rebuilding
energy from the store's GPU samples when the run directory has none."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.records.schema import GPU_SCHEMA, WINDOW_SCHEMA
from harness.store.reader import InfluxQLReader
from harness.store.target import InfluxTarget
from tests.support.processes import harness, harness_env
pytestmark = pytest.mark.slow

SCEN = """
name: influx
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: [4, 16], replicas: [1], warmup_s: 0.5, duration_s: 2, cooldown_s: 0.2}
slo: {ttft_s: {p99: 2.0}}
telemetry: {source: emulated, rate_hz: 20}
store:
  influxdb: {url: URL, api: v1, database: harness}
"""


def _cli(*args):
    return harness(*args, timeout=300, env=harness_env(INFLUXDB_TOKEN=None))


def test_sweep_writes_store_and_report_reads_gpu_samples_back(influxdb, tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.replace("URL", influxdb.url))
    p = _cli("sweep", str(scen), "--results", str(tmp_path / "res"), "-q")
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["store"]["acked"] > 0 and manifest["store"]["spool_points"] == 0
    original = json.loads((run / "summary.json").read_text())["cells"]

    reader = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="harness"))
    n_req = len(pd.read_parquet(run / "requests.parquet"))
    assert reader.count("request", "end_ns", f"run_id = '{run.name}'") == n_req
    local_gpu = pd.read_parquet(run / "gpu_samples.parquet")
    assert reader.count("gpu", "power_w", f"run_id = '{run.name}'") == len(local_gpu)
    reader.close()

    # Telemetry only in the store: drop the run dir's samples and the windows' energy
    pq.write_table(GPU_SCHEMA.empty_table(), run / "gpu_samples.parquet")
    w = pd.read_parquet(run / "windows.parquet")
    w["energy_j"], w["energy_source"] = None, None
    pq.write_table(
        pa.Table.from_pandas(w, schema=WINDOW_SCHEMA, preserve_index=False), run / "windows.parquet"
    )

    p = _cli("report", str(run), "--influx", "never", "-q")
    assert p.returncode == 0
    assert all(
        c["energy_j"] is None for c in json.loads((run / "summary.json").read_text())["cells"]
    )

    p = _cli(
        "report", str(run), "-q"
    )  # auto: the run dir has no samples, the scenario names a store
    assert p.returncode == 0, p.stderr[-3000:]
    rebuilt = json.loads((run / "summary.json").read_text())
    assert any("GPU samples read from InfluxDB" in n for n in rebuilt["notes"])
    win = w[w.phase == "measure"].set_index("cell")
    for a, b in zip(original, rebuilt["cells"]):
        assert b["energy_source"] in ("sample-counter", "power-integral")
        # the emulator's counter read at the edges vs the store's samples interpolated: within 3 %,
        # or what linear interpolation can miss at the two edges, (P max - P min) x gap / 4 each,
        # where a loaded machine read the samples around an edge further apart than 50 ms
        edges = (win.loc[a["cell"], "start_ns"], win.loc[a["cell"], "end_ns"])
        slack = 0.0
        for t in edges:
            t1 = local_gpu.ts_ns[local_gpu.ts_ns <= t].max()
            t2 = local_gpu.ts_ns[local_gpu.ts_ns >= t].min()
            span = local_gpu.power_w[(local_gpu.ts_ns >= edges[0] - 10**9) & (local_gpu.ts_ns <= edges[1] + 10**9)]
            slack += (span.max() - span.min()) * (t2 - t1) / 1e9 / 4
        assert abs(b["energy_j"] - a["energy_j"]) <= max(0.03 * a["energy_j"], slack), (a, b, slack)
        assert b["output_tokens_per_s"] == pytest.approx(a["output_tokens_per_s"])
        assert b["gpu_util_pct"] == pytest.approx(a["gpu_util_pct"], rel=1e-6)
    html = (run / "report.html").read_text()
    assert "GPU samples read from InfluxDB" in html

    # a store that cannot answer: with --influx always that is an error naming the database
    influxdb.kill()
    p = _cli("report", str(run), "--influx", "always", "-q")
    assert p.returncode == 2 and "cannot read GPU samples from InfluxDB" in p.stderr


def test_run_writes_records_and_windows_to_the_store(influxdb, tmp_path):
    """``slm-harness run`` (not only the sweep) streams its records and windows to InfluxDB."""
    scen = tmp_path / "s.yaml"
    scen.write_text(SCEN.replace("URL", influxdb.url).replace("levels: [4, 16]", "levels: [4]"))
    p = _cli("run", str(scen), "--results", str(tmp_path / "res"), "-q")
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = list((tmp_path / "res").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["store"]["acked"] > 0 and manifest["store"]["spool_points"] == 0
    reader = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="harness"))
    n_req = len(pd.read_parquet(run / "requests.parquet"))
    assert n_req > 0
    assert reader.count("request", "end_ns", f"run_id = '{run.name}'") == n_req
    n_win = len(pd.read_parquet(run / "windows.parquet"))
    assert n_win >= 2  # warm-up, measure (and cool-down)
    assert reader.count("window", "end_ns", f"run_id = '{run.name}'") == n_win
    reader.close()
