"""The sampler through a fake NVML binding (this machine has no GPU; the real GPU check is
benchmarks/gpu_energy_check.py on an H100, docs/benchmarks/gpu_energy_check.md), and the real no-NVML path."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from harness.errors import InputError
from harness.records.rundir import RunDir, read_table
from harness.telemetry import RunDirSink, Sampler, Sink, open_source
from harness.telemetry.fakenvml import FakeGpu, FakeNvml, square_wave
from harness.telemetry.nvml import NvmlSource
from tests.support.processes import harness_env


def _fake(**kw) -> FakeNvml:
    return FakeNvml(kw.pop("gpus", None) or [FakeGpu(processes=[(4242, 3 << 30), (4343, 1 << 30)])],
                    **kw)


def test_real_nvml_absent_gives_one_line_and_no_source(caplog):
    """This machine has no NVIDIA driver: the real pynvml cannot start. One warning, no crash."""
    caplog.set_level(logging.WARNING)
    sel = open_source("auto")
    assert sel.source is None and sel.kind == "none"
    assert "NVML" in sel.note and "without GPU data" in sel.note
    lines = [r for r in caplog.records if r.name.startswith("harness.telemetry")]
    assert len(lines) == 1 and lines[0].getMessage() == sel.note


@pytest.mark.parametrize("code,words", [(9, "Driver Not Loaded"), (4, "Insufficient Permissions")])
def test_nvml_init_errors_are_one_clear_line(code, words, caplog):
    caplog.set_level(logging.WARNING)
    sel = open_source("nvml", binding=FakeNvml(init_error=code))
    assert sel.source is None and words in sel.note
    assert len([r for r in caplog.records if r.name.startswith("harness.telemetry")]) == 1


def test_no_gpu_is_unavailable_not_an_error():
    sel = open_source("auto", binding=FakeNvml(gpus=[]))
    assert sel.source is None and "no GPU" in sel.note


def test_selecting_a_missing_gpu_is_bad_input():
    with pytest.raises(InputError) as e:
        open_source("nvml", gpus=[0, 3], binding=_fake(gpus=[FakeGpu(), FakeGpu()]))
    assert e.value.field == "telemetry.gpus" and "GPU 3" in str(e.value)


def test_source_labels_instant_field_or_power_usage():
    fk = _fake(gpus=[FakeGpu(), FakeGpu(instant_field=False, counter=False)])
    src = NvmlSource(binding=fk)
    assert [src.power_source(g) for g in (0, 1)] == ["nvml-instant", "nvml-power"]
    assert [src.counter_source(g) for g in (0, 1)] == ["nvml-counter", None]
    s0, s1 = src.read(0), src.read(1)
    assert s0.source == "nvml-instant" and s1.source == "nvml-power"
    assert s0.power_w in (80.0, 400.0) and s0.sm_clock_mhz == 1980.0 and s0.temperature_c == 41.0
    d = src.describe()
    assert d["refresh_period_s"] == 0.1 and d["gpus"]["1"]["power_source"] == "nvml-power"
    # the slow energy counter was probed once per GPU at open, never by read()
    assert fk.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2
    src.close()


class ListSink(Sink):
    def __init__(self):
        self.got, self.procs, self.gaps, self.closed = [], [], [], None

    def samples(self, batch):
        self.got += batch

    def processes(self, batch):
        self.procs += batch

    def gap(self, gap):
        self.gaps.append(gap)

    def close(self, summary):
        self.closed = summary


def test_sampling_rate_timestamps_processes_and_counter_reads_only_at_edges():
    fk = _fake(counter_cost_s=0.0035)
    src = NvmlSource(binding=fk)
    sink = ListSink()
    s = Sampler(src, [sink], rate_hz=100, run_id="run-a", host="hostA", process_interval_s=0.25)
    s.start()
    started_ns = time.time_ns()          # at or after the t0 of the sampler's deadlines
    time.sleep(1.0)
    summary = s.stop()
    n = len(sink.got)
    ts = [x.ts_ns for x in sink.got]
    # 100 Hz: never more ticks than the sampler's measured running time holds, and every deadline
    # up to a sample either sampled or counted as missed: sample i (tick i + 1, one GPU) comes at
    # deadline i + 1 + (missed before it), a little late. Checked at the last three samples, not at
    # the end of stop(): deadlines passing while a loaded machine is slow to run the stopping
    # thread are never reached, and one late tick is not a lost one. The floor is loose.
    assert 40 <= n <= 100 * summary["wall_s"] + 1, (n, summary)
    behind = [100 * (t - started_ns) / 1e9 - (i + 1) - summary["missed_ticks"]
              for i, t in enumerate(ts)]
    assert min(behind[-3:]) < 2, (n, behind[-3:], summary)
    assert ts == sorted(ts) and len(set(ts)) == n
    assert all(x.run_id == "run-a" and x.host == "hostA" and x.gpu == 0 for x in sink.got)
    assert all(x.power_w is not None for x in sink.got)
    detailed = [x for x in sink.got if x.sm_clock_mhz is not None]   # every 5th tick at 100 Hz
    assert abs(len(detailed) - n / 5) <= 2 and all(x.temperature_c == 41.0 for x in detailed)
    assert abs(ts[0] - time.time_ns()) < 5e9     # wall clock ns, the request records' clock
    assert {p.pid for p in sink.procs} == {4242, 4343} and len(sink.procs) >= 6
    assert {p.used_bytes for p in sink.procs} == {3 << 30, 1 << 30}
    assert fk.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1   # the open probe only
    assert sink.closed["counts"]["samples"] == n and sink.closed["rate_hz"] == 100
    assert summary["lateness_us"]["n"] > 0


def test_window_energy_counter_and_integral_agree_with_the_truth():
    """GPU 0 has the counter, GPU 1 only power: both windows match the fake's exact integral."""
    fk = _fake(gpus=[FakeGpu(power_w=square_wave(80, 400, 0.6)),
                     FakeGpu(power_w=square_wave(100, 300, 0.8), instant_field=False, counter=False)])
    s = Sampler(NvmlSource(binding=fk), rate_hz=20)
    s.start()
    time.sleep(0.3)
    t0 = s.begin_window("r1-c8/measure")
    time.sleep(2.4)
    w = s.end_window("r1-c8/measure")
    s.stop()
    assert w.start_ns == t0
    e0, src0 = w.per_gpu[0]
    e1, src1 = w.per_gpu[1]
    assert src0 == "nvml-counter" and src1 == "integral:nvml-power"
    assert w.source == "integral:nvml-power+nvml-counter"
    assert fk.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2 + 2   # probes + GPU 0's edges
    truth = [fk.energy_j(g, w.end_ns / 1e9 - fk.t0) - fk.energy_j(g, w.start_ns / 1e9 - fk.t0)
             for g in (0, 1)]
    assert e0 == pytest.approx(truth[0], rel=0.02)
    assert e1 == pytest.approx(truth[1], rel=0.05)   # 20 Hz trapezoid over 100 ms steps
    assert w.energy_j == pytest.approx(e0 + e1)
    assert w.mean_power_w == pytest.approx(w.energy_j / ((w.end_ns - w.start_ns) / 1e9))
    from harness.records.schema import CellWindow
    cw = w.fill(CellWindow(run_id="r", cell="r1-c8", replicas=1, level=8, level_kind="concurrency",
                           phase="measure", start_ns=w.start_ns, end_ns=w.end_ns))
    assert cw.energy_j == w.energy_j and cw.energy_source == w.source


def test_a_gpu_that_errors_mid_run_leaves_a_recorded_gap_and_sampling_resumes(caplog):
    caplog.set_level(logging.WARNING)
    fk = _fake(gpus=[FakeGpu(), FakeGpu(fail_between=(0.5, 1.0))])
    sink = ListSink()
    s = Sampler(NvmlSource(binding=fk), [sink], rate_hz=50)
    s.start()
    time.sleep(1.6)
    summary = s.stop()
    assert len(sink.gaps) == 1
    g = sink.gaps[0]
    assert g.gpu == 1 and g.errors >= 10 and "GpuIsLost" in g.error
    assert 0.3 < g.duration_s < 1.0
    gpu1 = [x.ts_ns for x in sink.got if x.gpu == 1]
    assert any(t < g.start_ns for t in gpu1) and any(t >= g.end_ns for t in gpu1)
    assert not any(g.start_ns <= t < g.end_ns for t in gpu1)
    gpu0 = [x.ts_ns for x in sink.got if x.gpu == 0]
    assert any(g.start_ns <= t < g.end_ns for t in gpu0)      # the healthy GPU was not held up
    assert summary["counts"]["gaps"] == 1 and summary["counts"]["read_errors"] == g.errors


def test_a_failing_sink_or_listener_does_not_stop_sampling():
    class Broken(Sink):
        def samples(self, batch):
            raise OSError("disk full")

    sink = ListSink()
    s = Sampler(NvmlSource(binding=_fake()), [Broken(), sink], rate_hz=50)
    s.add_listener(lambda batch: 1 / 0)
    latest = []
    s.add_listener(lambda batch: latest.append(batch[-1].power_w))
    s.start()
    time.sleep(0.5)
    summary = s.stop()
    assert len(sink.got) >= 10 and len(latest) == len(sink.got)
    # sinks get batches (at the first tick, every 0.25 s and at stop): one failure counted per
    # batch refused; how many 0.25 s periods passed is what the sampler measured, not the sleep
    assert 2 <= summary["counts"]["sink_errors"] <= 2 + summary["wall_s"] / 0.25, summary
    assert summary["counts"]["listener_errors"] == len(sink.got)
    assert s.latest()[0].power_w == latest[-1]


def test_rundir_sink_writes_samples_processes_and_manifest(tmp_path):
    fk = _fake(gpus=[FakeGpu(processes=[(111, 2 << 30)]), FakeGpu(fail_between=(0.2, 0.5))])
    rd = RunDir(tmp_path / "run", "run-x")
    s = Sampler(NvmlSource(binding=fk), [RunDirSink(rd)], rate_hz=40, run_id="run-x",
                process_interval_s=0.2)
    s.start()
    time.sleep(1.0)
    s.stop()
    rd.close()
    df = read_table(rd.path, "gpu_samples")
    assert len(df) == s.counts["samples"] and set(df["gpu"]) == {0, 1}
    assert set(df["source"]) == {"nvml-instant"} and (df["run_id"] == "run-x").all()
    assert df["ts_ns"].is_monotonic_increasing or df.groupby("gpu")["ts_ns"].apply(
        lambda x: x.is_monotonic_increasing).all()
    import pandas as pd
    procs = pd.read_parquet(rd.path / "gpu_processes.parquet")
    assert set(procs["pid"]) == {111} and (procs["used_bytes"] == 2 << 30).all()
    m = json.loads((rd.path / "manifest.json").read_text())
    tel = m["telemetry"]
    assert tel["rate_hz"] == 40 and tel["source"]["gpus"]["0"]["power_source"] == "nvml-instant"
    assert len(tel["gaps"]) == 1 and tel["gaps"][0]["gpu"] == 1 and tel["gaps"][0]["errors"] > 0
    assert m["counts"]["gpu_samples"] == len(df)


def test_two_samplers_of_one_run_append_processes_and_gaps(tmp_path):
    """A sweep starts one sampler per replica count: the run keeps both samplers' rows and gaps."""
    rd = RunDir(tmp_path / "run", "run-y")
    for pid in (201, 202):
        fk = _fake(gpus=[FakeGpu(processes=[(pid, 1 << 30)], fail_between=(0.1, 0.3))])
        s = Sampler(NvmlSource(binding=fk), [RunDirSink(rd)], rate_hz=40, run_id="run-y",
                    process_interval_s=0.1)
        s.start()
        time.sleep(0.6)
        s.stop()
    rd.close()
    import pandas as pd
    procs = pd.read_parquet(rd.path / "gpu_processes.parquet")
    assert set(procs["pid"]) == {201, 202}
    gaps = json.loads((rd.path / "manifest.json").read_text())["telemetry"]["gaps"]
    assert len(gaps) == 2


GEVENT_SCRIPT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import json, threading, time, gevent
    from harness.telemetry import Sampler, Sink
    from harness.telemetry.fakenvml import FakeGpu, FakeNvml
    from harness.telemetry.nvml import NvmlSource
    native = monkey.get_original("threading", "get_ident")
    main_native = native()
    seen = {"n": 0, "native": set(), "busy": 0}
    def listener(batch):
        seen["n"] += len(batch); seen["native"].add(native())
    def busy():  # a load generator's greenlets: short CPU bursts between cooperative yields
        end = time.time() + 1.6
        while time.time() < end:
            sum(range(2000)); seen["busy"] += 1; gevent.sleep(0)
    fk = FakeNvml([FakeGpu()], counter_cost_s=0.0)
    s = Sampler(NvmlSource(binding=fk), rate_hz=50)
    s.add_listener(listener)
    s.start()
    workers = [gevent.spawn(busy) for _ in range(20)]
    s.begin_window("w"); gevent.sleep(1.5); w = s.end_window("w")
    gevent.joinall(workers)
    summ = s.stop()
    print(json.dumps({"n": seen["n"], "same_native_thread": seen["native"] == {main_native},
                      "busy": seen["busy"], "energy": w.energy_j, "source": w.source,
                      "p99_us": summ["lateness_us"]["p99"], "wall_s": summ["wall_s"],
                      "missed": summ["missed_ticks"]}))
""")


def test_sampler_runs_under_gevent_monkey_patching():
    """Locust patches everything; the sampler then runs as a greenlet beside the load."""
    env = harness_env()
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["same_native_thread"] is True      # a greenlet, not a native thread
    # 50 Hz beside the load: never more ticks than its running time holds, and every deadline
    # either sampled or counted as missed (how many a loaded machine makes it miss varies)
    assert 30 <= r["n"] <= 50 * r["wall_s"] + 1, r
    assert r["n"] + r["missed"] >= 50 * r["wall_s"] - 3, r
    assert r["busy"] > 100 and r["source"] == "nvml-counter" and r["energy"] > 0


def test_a_gap_inside_a_window_is_not_guessed_over():
    """GPU 1 (no counter) fails mid-window: its energy is left unknown (analysis then integrates
    the samples with coverage) instead of silently missing the gap; GPU 0's counter still counts."""
    fk = _fake(gpus=[FakeGpu(), FakeGpu(counter=False, fail_between=(0.5, 0.8))])
    s = Sampler(NvmlSource(binding=fk), rate_hz=50)
    s.start()
    s.begin_window("w")
    time.sleep(1.2)
    w = s.end_window("w")
    s.begin_window("after")
    time.sleep(0.4)
    after = s.end_window("after")
    s.stop()
    assert w.per_gpu[1] == (None, None) and w.per_gpu[0][1] == "nvml-counter"
    assert w.energy_j is None and w.integral_j is None
    assert after.per_gpu[1][1] == "integral:nvml-instant" and after.energy_j is not None
