"""Emulator replicas in separate processes sharing one simulated GPU: KV budgets sized by TGI's
rule from the shared free memory, contention across processes, one power series, dead replicas'
memory freed. Real `slm-harness emulate` processes, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.emulator.profile import load_profile
from harness.launch.base import launcher_for
from harness.launch.health import free_port_block, is_healthy
from harness.launch.memory import check_budgets, tgi_warmup_tokens
from harness.scenario.models import Target
from tests.support.processes import ROOT, harness_env
from stack_support import tokens_per_s

PY = sys.executable
PROFILE = "h100-smollm2-135m"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def emulate_args(state: Path, port: str, fraction: str, load_s: float = 0.0) -> list[str]:
    return [PY, "-m", "harness", "emulate", "--profile", PROFILE, "--host", "127.0.0.1",
            "--port", port, "--shared-gpu", str(state), "--cuda-memory-fraction", fraction,
            "--load-s", str(load_s)]


def processes_target(state: Path, base: int) -> Target:
    return Target.model_validate({"launcher": {
        "kind": "processes", "command": emulate_args(state, "{port}", "{fraction}"),
        "base_port": base, "startup_timeout_s": 60,
        "env": {"PYTHONPATH": str(ROOT)}}})


def test_one_after_another_equal_budgets_contention_and_one_power_series(tmp_path):
    state = tmp_path / "gpu.state"
    base = free_port_block(3)
    with launcher_for(processes_target(state, base), 3, tmp_path / "logs") as reps:
        budgets = reps.extra["kv_budgets"]
        # replica i got 0.9 * i / 3 of the GPU and the same KV budget as the others
        assert all(b and b > 100_000 for b in budgets), budgets
        assert reps.extra["kv_budget_spread"] < 0.05 and reps.extra["kv_budget_warning"] is None
        for i, r in enumerate(reps.items):
            log = r.log_path.read_text()
            assert f"Setting max batch total tokens to {budgets[i]}" in log
            metrics = urllib.request.urlopen(r.url + "/metrics", timeout=5).read().decode()
            assert f"tgi_batch_max_total_tokens {budgets[i]}" in metrics
        # the GPU's memory: 3 x (weights + overhead + KV) = 0.9 x 0.9 of it
        gpu = [get(u + "/emulator/gpu") for u in reps.urls]
        assert {g["replicas"] for g in gpu} == {3}
        assert len({g["mem_used_bytes"] for g in gpu}) == 1
        assert abs(gpu[0]["mem_used_bytes"] / gpu[0]["mem_total_bytes"] - 0.81) < 0.01

        # contention: a replica alone at saturation, then all three at once
        alone = tokens_per_s(reps.urls, busy=reps.urls[:1])
        assert alone[reps.urls[0]] > 100 and alone[reps.urls[1]] == 0, alone
        together = tokens_per_s(reps.urls, busy=reps.urls)
        for u in reps.urls:
            assert 0 < together[u] < 0.8 * alone[reps.urls[0]], (alone, together)

        # one power series: every replica reports the same GPU (power, energy counter)
        deadline = time.monotonic() + 10
        while get(reps.urls[0] + "/emulator/gpu")["gpu_util_pct"] > 0:
            assert time.monotonic() < deadline, "the GPU never went idle"
            time.sleep(0.2)
        t0 = time.monotonic()
        a, b, c = (get(u + "/emulator/gpu") for u in reps.urls)
        idle = load_profile(PROFILE).gpu.idle_w
        assert a["power_w"] == b["power_w"] == c["power_w"] == idle     # the profile's idle
        a2 = get(reps.urls[0] + "/emulator/gpu")
        took = time.monotonic() - t0
        assert a["energy_j"] <= b["energy_j"] <= c["energy_j"] <= a2["energy_j"]
        # one counter at idle power: no more energy than the reads took, however long that was
        assert a2["energy_j"] - a["energy_j"] <= idle * took + 1e-5, (a, a2, took)
        pids = [r.pid for r in reps.items]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # the replicas left: the GPU is free again for the next cell
    assert state.exists()
    with launcher_for(processes_target(state, base), 1, tmp_path / "logs2") as reps:
        assert get(reps.urls[0] + "/emulator/gpu")["replicas"] == 1
        assert reps.extra["kv_budgets"][0] > 2 * budgets[0]    # 0.9 of the GPU, not 0.3


def test_all_at_once_budgets_differ_and_a_killed_replica_frees_its_memory(tmp_path):
    state = tmp_path / "gpu.state"
    base = free_port_block(3)
    procs = []
    try:
        for i in range(3):
            procs.append(subprocess.Popen(
                emulate_args(state, str(base + i), "0.3", load_s=1.5),
                stdout=open(tmp_path / f"r{i}.log", "wb"), stderr=subprocess.STDOUT,
                env=harness_env()))
        urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
        deadline = time.monotonic() + 60
        while not all(is_healthy(u) for u in urls):
            assert time.monotonic() < deadline, "emulators not healthy"
            assert all(p.poll() is None for p in procs), \
                [(tmp_path / f"r{i}.log").read_text()[-500:] for i, p in enumerate(procs) if p.poll() is not None]
            time.sleep(0.2)
        lines = []
        out = check_budgets(urls, echo=lines.append)
        budgets = out["kv_budgets"]
        # whoever measured first took its 0.27 of the GPU; the others kept their warm-up blocks
        lim = load_profile(PROFILE).limits
        warm = tgi_warmup_tokens(lim.max_batch_prefill_tokens, lim.max_input_tokens, lim.max_total_tokens)
        assert sorted(budgets)[:2] == [warm, warm] and max(budgets) > 10 * warm, budgets
        assert out["kv_budget_spread"] > 0.9
        assert "differ by" in out["kv_budget_warning"] and "differ by" in lines[0]
        # a replica killed without a word: its memory comes back once its heartbeat is stale
        used = get(urls[0] + "/emulator/gpu")["mem_used_bytes"]
        big = budgets.index(max(budgets))
        procs[big].send_signal(signal.SIGKILL)
        procs[big].wait(10)
        other = urls[(big + 1) % 3]
        deadline = time.monotonic() + 15
        while get(other + "/emulator/gpu")["replicas"] != 2:
            assert time.monotonic() < deadline, "a dead replica's slot was never freed"
            time.sleep(0.5)
        assert get(other + "/emulator/gpu")["mem_used_bytes"] < used - 10 * 2**30
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
