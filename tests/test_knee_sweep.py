"""``slm-harness sweep`` with ``levels: auto`` end to end against an emulated replica whose knee is
known: the probe picks the start, the search brackets the knee, and the sentence saying why it
stopped reaches summary.json, the console and the report."""

from __future__ import annotations

import json

import pytest

from tests.support.emulator import write_profile
from tests.support.processes import harness
from tests.support.sweeps import resume_sweep, stop_sweep

pytestmark = pytest.mark.slow

# Each decode step costs 5 ms plus 0.5 ms per sequence in the batch: e2e = a + b * streams, so
# output tokens/s = streams * tokens / e2e saturates toward 2,000, and a doubling gains less than
# 5% beyond 0.95 * a / (0.1 * b) = 9.5 * (5 / 0.5) = 95 streams.
KNEE = 95


def test_auto_levels_start_from_the_probe_bracket_the_knee_and_say_why(tmp_path):
    prof = write_profile(tmp_path, "host-bound", timing="""  mode: roofline
  host_step_ms: 5
  host_per_seq_ms: 0.5""", limits="  max_batch_prefill_tokens: 4096\n  max_batch_size: 4096")
    scen = tmp_path / "auto.yaml"
    scen.write_text(f"""
name: auto-knee
target: {{protocol: tgi, launcher: {{kind: emulator, profile: {prof}}}}}
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 8}}, output_tokens: {{dist: fixed, value: 16}}}}
load: {{mode: concurrency, levels: auto, replicas: [1], warmup_s: 0.5, duration_s: 1,
       cooldown_s: 0, auto_max_level: 1024, auto_max_cells: 4, auto_probe_s: 1}}
telemetry: {{source: emulated, rate_hz: 10}}
""")
    p = harness("sweep", str(scen), "--results", str(tmp_path / "res"), timeout=300)
    assert p.returncode in (0, 4), p.stderr[-3000:]      # 4: a starved host may void a cell
    (run,) = [d for d in (tmp_path / "res").iterdir() if d.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    probe = manifest["auto_probe"]["1"]
    assert [pt["streams"] for pt in probe["points"]] == [1, 8]
    # the probe's estimate lands near the known knee, and the explore starts 4x below it
    assert KNEE / 2 < probe["estimate"] < KNEE * 2, probe
    assert probe["start"] == round(probe["estimate"] / 4)
    levels = [x["level"] for x in manifest["auto_results"]["1"]]
    assert levels[0] == probe["start"] > 8 and levels[1] == 2 * levels[0]
    # the probe is no cell: not in the run's cells, the frontier or the tables
    summary = json.loads((run / "summary.json").read_text())
    assert {c["cell"] for c in summary["cells"]} == {f"r1-c{int(lv)}" for lv in levels}
    auto = summary["auto_search"]["1"]
    lo, hi = auto["bracket"]
    assert lo is not None and hi is not None and lo < hi, auto
    assert KNEE / 4 <= lo and hi <= KNEE * 4, auto      # the bracket holds the knee's region
    stopped = auto["stopped"]
    assert stopped.startswith(("throughput stopped growing", "latency grew faster",
                               "the over-saturation test fired")), stopped
    assert f"the knee was bracketed between {lo:g} and {hi:g} streams" in stopped
    note = f"levels: auto, 1 replica(s): {stopped}"
    assert note in summary["notes"]
    assert any(n.startswith("levels: auto, 1 replica(s): a 1 s probe at 1 and 8 streams")
               for n in summary["notes"])
    assert stopped[:60] in " ".join(p.stdout.split())       # the console (wrapped lines joined)
    html = (run / "report.html").read_text()
    assert stopped.split(";")[0] in html.replace("&#x27;", "'")


def test_the_over_saturation_test_fires_on_a_real_overloaded_replica_and_not_below_capacity(tmp_path):
    """Open loop at a fifth of the replica's capacity and at 1.5 times it (batches of at most 64
    sequences at 5 + 0.5 * 64 ms a step: 1,730 tok/s of 16-token answers, 108 req/s): past it the
    router's queue, and so TTFT and the requests in flight, grow through the window."""
    import pandas as pd

    from harness.analysis.saturation import oversaturation

    prof = write_profile(tmp_path, "host-bound", timing="""  mode: roofline
  host_step_ms: 5
  host_per_seq_ms: 0.5""", limits="  max_batch_prefill_tokens: 4096\n  max_batch_size: 64\n"
                                           "  max_concurrent_requests: 100000")
    scen = tmp_path / "rate.yaml"
    scen.write_text(f"""
name: oversat
target: {{protocol: tgi, launcher: {{kind: emulator, profile: {prof}}}}}
workload: {{seed: 1, prompt_tokens: {{dist: fixed, value: 8}}, output_tokens: {{dist: fixed, value: 16}}}}
load: {{mode: rate, arrival: constant, levels: [20, 160], replicas: [1], warmup_s: 0.5, duration_s: 5.5,
       cooldown_s: 0}}
telemetry: {{source: emulated, rate_hz: 10}}
""")
    p = harness("sweep", str(scen), "--results", str(tmp_path / "res"), timeout=300)
    assert p.returncode in (0, 4), p.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "res").iterdir() if d.is_dir()]
    req = pd.read_parquet(run / "requests.parquet")
    calm = oversaturation(req[req["cell"] == "r1-q20"], closed_loop=False)
    over = oversaturation(req[req["cell"] == "r1-q160"], closed_loop=False)
    assert calm.ttft is not None and not calm.fired, calm
    assert over.fired, over
    assert over.ttft.per_s > 0 and over.in_flight.per_s > 0


def test_a_resumed_auto_search_keeps_its_probe_and_levels_and_goes_on(tmp_path):
    scen = tmp_path / "auto.yaml"
    scen.write_text("""
name: auto-resume
target: {protocol: tgi, launcher: {kind: emulator, profile: h100-smollm2-135m}}
workload: {seed: 2, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 16}}
load: {mode: concurrency, levels: auto, replicas: [1], warmup_s: 0.3, duration_s: 1, cooldown_s: 0,
       auto_max_level: 1024, auto_max_cells: 3, auto_probe_s: 1}
telemetry: {source: emulated, rate_hz: 10}
""")
    # SIGTERM once the first cell of the search is done
    stopped = stop_sweep(scen, tmp_path / "res", lambda line: line.startswith("[r1-c") and " done:" in line,
                         guard_s=120)
    assert stopped.returncode == 130
    run = stopped.run
    first = json.loads((run / "manifest.json").read_text())
    kept = [x["level"] for x in first["auto_results"]["1"]]
    assert len(kept) >= 1 and kept[0] == first["auto_probe"]["1"]["start"]
    p = resume_sweep(scen, run, timeout=300)
    assert p.returncode in (0, 4), p.stderr[-3000:]
    assert "probing at" not in p.stdout                     # the probe is not run again
    done = json.loads((run / "manifest.json").read_text())
    assert done["auto_probe"] == first["auto_probe"]
    levels = [x["level"] for x in done["auto_results"]["1"]]
    assert levels[:len(kept)] == kept and len(levels) == 3 and levels[1] == 2 * levels[0]
