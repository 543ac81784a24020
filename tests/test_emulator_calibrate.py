"""``slm-harness emulate --calibrate``: a run made by a known profile gives that profile back, and
the committed GPU run goes through the real CLI to a profile that serves."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.emulator import calibrate as cal
from harness.emulator.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
GPU_RUN = ROOT / "docs/benchmarks/gpu_sweep-2026-11-24/h100-transformers-20261124T162622Z-1135"
CELLS = [(1, 4), (1, 16), (1, 64), (2, 16), (4, 16), (4, 64)]


def _base():
    """The built-in H100 profile's model and GPU with fixed timing and TGI-style scheduling, so the
    synthetic runs below do not move when that profile is refitted."""
    p = load_profile("h100-smollm2-135m")
    p = cal.with_params(p, {"host_step_ms": 2.3, "host_per_seq_ms": 0.345, "host_per_seq2_ms": 2e-4,
                            "host_per_prefill_token_ms": 0.103, "gpu_step_ms": 11.8, "gpu_per_seq_ms": 0.0525,
                            "gpu_per_prefill_token_ms": 0.021, "switch_overhead": 0.051, "admission_ms": 0.0,
                            "frontend_ms": 0.0, "frontend_per_seq": 0.0, "max_batch_prefill_tokens": 251,
                            "active_w": 114.5, "power_exponent": 0.3})
    return p.model_copy(update={
        "limits": p.limits.model_copy(update={"budget_includes_decode": False, "kv_admission": "reserve",
                                              "kv_free_margin": 0.0, "graph_q_interval": 0}),
        "timing": p.timing.model_copy(update={"step_jitter": 0.0, "graph_capture_ms": 0.0, "frontend_fifo": False}),
        "gpu": p.gpu.model_copy(update={"idle_w": 100.0, "attention_w": 0.0})})


def _synthetic_run(tmp: Path, profile) -> Path:
    """A run directory whose every figure is what ``profile`` predicts (prompt/output 64 tokens)."""
    run = tmp / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text(yaml.safe_dump({
        "name": "synthetic", "workload": {"prompt_tokens": {"dist": "fixed", "value": 64},
                                          "output_tokens": {"dist": "fixed", "value": 64}},
        "load": {"mode": "concurrency", "warmup_s": 2, "duration_s": 6}}))
    with (run / "cells.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "replicas", "level", "level_kind", "duration_s", "output_tokens_per_s", "ttft_p50_s",
                    "tpot_p50_s", "mean_power_w"])
        for n, c in CELLS:
            p = cal.predict(profile, cal.Cell(f"r{n}-c{c}", n, c, 64, 64, 2.0, 6.0, {}))
            w.writerow([f"r{n}-c{c}", n, c, "concurrency", 6.0, p["tok_s"], p["ttft_p50_ms"] / 1e3,
                        p["tpot_p50_ms"] / 1e3, p["power_w"]])
    return run


def test_fit_recovers_the_profile_that_made_the_run(tmp_path):
    base = _base()
    truth = cal.with_params(base, {"host_per_seq_ms": 0.4, "gpu_step_ms": 9.0, "host_step_ms": 3.0,
                                   "active_w": 140.0, "power_exponent": 0.5})
    cells = cal.load_run(_synthetic_run(tmp_path, truth))
    assert [(c.replicas, c.streams, c.prompt) for c in cells] == [(n, c, 64) for n, c in CELLS]
    start = cal.with_params(base, {"host_per_seq_ms": 0.15, "gpu_step_ms": 20.0, "host_step_ms": 1.0,
                                   "active_w": 40.0, "power_exponent": 1.5})
    fitted, preds = cal.fit(start, cells, iters=150, names=("host_step_ms", "host_per_seq_ms", "gpu_step_ms"))
    t = fitted.timing
    assert abs(t.host_per_seq_ms - 0.4) / 0.4 < 0.1, t
    assert abs(t.gpu_step_ms - 9.0) / 9.0 < 0.1, t
    # a fixed per-step host cost trades off against the GPU's at these batch sizes: loosely
    assert abs(t.host_step_ms - 3.0) / 3.0 < 0.6, t
    _, worst = cal.error_table(cells, preds)
    assert max(worst.values()) < 0.1, worst
    # power: the profile's idle + active * util**exponent through the cells' (utilisation, watts)
    assert worst["power_w"] < 0.03, worst
    assert abs(fitted.gpu.active_w - 140) < 15 and abs(fitted.gpu.power_exponent - 0.5) < 0.15, fitted.gpu


def test_calibrate_cli_on_the_committed_gpu_run(tmp_path):
    out = tmp_path / "mine.yaml"
    r = subprocess.run([sys.executable, "-m", "harness", "emulate", "--calibrate", str(GPU_RUN), "--profile",
                        "h100-smollm2-135m", "-o", str(out), "--iterations", "8"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "| r4-c256 |" in r.stdout and "worst per-cell error:" in r.stdout
    prof = load_profile(str(out))                      # the written profile loads and serves
    assert prof.name == "mine" and prof.model.id == "HuggingFaceTB/SmolLM2-135M"
    assert out.read_text().startswith("# Fitted by `slm-harness emulate --calibrate ")
    check = subprocess.run([sys.executable, "-m", "harness", "emulate", "--calibrate", str(GPU_RUN), "--check",
                            "--profile", "h100-smollm2-135m"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert check.returncode == 0 and "| r2-c64 |" in check.stdout and "worst per-cell error" in check.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", "emulate", "--calibrate", str(tmp_path), "-o",
                          str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "missing cells.csv" in bad.stderr


def test_fit_recovers_front_end_and_paged_cache_parameters(tmp_path):
    """A transformers-like engine (decodes inside the step budget, a paged cache with a safety margin,
    one front-end thread): the fit finds the front end's work per request and the cache's size again."""
    base = _base()
    base = base.model_copy(update={"limits": base.limits.model_copy(update={
        "budget_includes_decode": True, "kv_admission": "paged", "kv_free_margin": 0.2})})
    truth = cal.with_params(base, {"frontend_ms": 6.0, "frontend_per_seq": 0.05, "max_batch_total_tokens": 6000})
    cells = cal.load_run(_synthetic_run(tmp_path, truth))
    by = {c.name: c.measured for c in cells}
    # the cache admits about 37 of r1-c64's 64-token prompts at once: the rest wait, the first token is late;
    # a burst of 16 arrivals queues at the front end
    assert by["r1-c64"]["ttft_p50_ms"] > 3 * by["r1-c16"]["ttft_p50_ms"] > 6 * by["r1-c4"]["ttft_p50_ms"], by
    start = cal.with_params(base, {"frontend_ms": 4.0, "frontend_per_seq": 0.05, "max_batch_total_tokens": 7500})
    fitted, preds = cal.fit(start, cells, iters=60, names=("frontend_ms", "max_batch_total_tokens"), starts=12)
    assert abs(fitted.timing.frontend_ms - 6.0) / 6.0 < 0.1, fitted.timing
    assert abs(fitted.limits.max_batch_total_tokens - 6000) / 6000 < 0.1, fitted.limits
    _, worst = cal.error_table(cells, preds)
    assert max(worst.values()) < 0.05, worst


def test_pooled_repeats_replay_one_repeats_window():
    """A sweep run with ``--repeats 3`` pools three 20 s windows per cell (duration_s 60): the replay
    replays each of them, in the sweep's order."""
    cells = cal.load_run(ROOT / "docs/results/h100-repeats-2026-12-06")
    assert [(c.name, c.duration_s, c.warmup_s, c.repeats) for c in cells][:2] == [
        ("r1-c16", 20.0, 8.0, 3), ("r1-c64", 20.0, 8.0, 3)]
    assert len(cells) == 9 and all(c.measured["tok_s"] > 0 for c in cells)


def test_host_speed_divides_every_cpu_cost():
    """``timing.host_speed`` stands for a faster CPU: the host part of a step, the admission, the
    front end's work and a graph capture shrink by it; the GPU part does not."""
    from harness.emulator.engine import BatchingReplica, StepModel
    from harness.emulator.gpu import SharedGpu
    base = cal.with_params(_base(), {"admission_ms": 4.0, "frontend_ms": 6.0, "graph_capture_ms": 200.0})
    fast = cal.with_params(base, {"host_speed": 2.0})
    slow, quick = StepModel(base), StepModel(fast)
    assert quick.host_ms(32, 100) == slow.host_ms(32, 100) / 2 > 0
    assert quick.gpu_ms(32, 100, 5000) == slow.gpu_ms(32, 100, 5000)
    reps = [BatchingReplica(0, p, SharedGpu(p, 1), timer=None) for p in (base, fast)]
    assert reps[1].admission_ns * 2 == reps[0].admission_ns == 4_000_000
    assert reps[1].frontend_ms * 2 == reps[0].frontend_ms == 6.0
    assert reps[1].graph_capture_ms * 2 == reps[0].graph_capture_ms == 200.0


def test_fit_host_speed_carries_a_profile_to_a_faster_host(tmp_path):
    """A run made on a host 1.6 times faster: fitting ``host_speed`` alone finds 1.6 again and leaves
    every other term, power included, as the profile has it."""
    base = _base()
    cells = cal.load_run(_synthetic_run(tmp_path, cal.with_params(base, {"host_speed": 1.6})))
    _, worst0 = cal.error_table(cells, cal.predict_run(base, cells))
    assert worst0["tok_s"] > 0.15 and worst0["tpot_p50_ms"] > 0.15, worst0     # the slower host's profile misses
    fitted, preds = cal.fit(base, cells, iters=40, names=("host_speed",), power=False)
    assert abs(fitted.timing.host_speed - 1.6) / 1.6 < 0.05, fitted.timing
    assert fitted.timing.model_copy(update={"host_speed": 1.0}) == base.timing
    assert fitted.gpu == base.gpu and fitted.limits == base.limits
    _, worst = cal.error_table(cells, preds)
    assert max(worst.values()) < 0.05, worst


def test_calibrate_cli_fit_only_names_the_parameters_it_moves(tmp_path):
    run = ROOT / "docs/results/h100-oos-repeats-2026-12-06"
    out = tmp_path / "carried.yaml"
    r = subprocess.run([sys.executable, "-m", "harness", "emulate", "--calibrate", str(run), "--profile",
                        "h100-smollm2-135m", "--fit", "host_speed", "--cells", "r1-c32", "--iterations", "6",
                        "-o", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "| r1-c32 |" in r.stdout and "| r1-c128 |" not in r.stdout      # fitted on the one cell named
    assert "idle power" not in r.stdout          # the power model is the profile's, untouched
    carried, builtin = load_profile(str(out)), load_profile("h100-smollm2-135m")
    assert carried.timing.host_speed > 1.2       # that host ran the CPU-bound cells faster
    assert carried.gpu == builtin.gpu and carried.limits == builtin.limits
    moved = {k for k, v in carried.timing.model_dump().items()
             if (v != pytest.approx(getattr(builtin.timing, k), rel=1e-3) if isinstance(v, float)
                 else v != getattr(builtin.timing, k))}      # the YAML keeps 4 digits
    assert moved == {"host_speed"}, moved
    for args, field in ((["--fit", "hosts_speed"], "--fit"), (["--fit", "host_speed", "--keep", "admission_ms"],
                                                             "--fit"), (["--cells", "r2-c32"], "--cells")):
        bad = subprocess.run([sys.executable, "-m", "harness", "emulate", "--calibrate", str(run), "--profile",
                              "h100-smollm2-135m", "-o", str(out), *args], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
        assert bad.returncode == 2 and field in bad.stderr, bad.stderr
