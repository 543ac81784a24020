"""The compose override for N replicas, checked by the real `docker-compose config`, and .env."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.launch.compose import (SECRET_KEYS, ensure_env_file, read_env_file,
                                    render_override, replica_services, write_override)

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"INFLUXDB_TOKEN": "t0k3n-for-tests", "INFLUXDB_ADMIN_PASSWORD": "pw-for-tests",
           "GRAFANA_ADMIN_PASSWORD": "gpw-for-tests"}


def parse_port(p) -> tuple[str, int, int]:
    """(host_ip, published, target) from compose's long or short port syntax."""
    if isinstance(p, dict):
        return p.get("host_ip", ""), int(p["published"]), int(p["target"])
    spec = str(p).split("/")[0]
    parts = spec.split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2])
    if len(parts) == 2:
        return "", int(parts[0]), int(parts[1])
    return "", 0, int(parts[0])


def compose_config(files: list[Path], profiles=("gpu", "vllm", "emulator"), env=None) -> dict:
    """The fully resolved model from Debian's docker-compose (what `up` would run)."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is installed by scripts/install-test-deps.sh"
    cmd = [exe] + [a for f in files for a in ("-f", str(f))]
    cmd += [a for p in profiles for a in ("--profile", p)] + ["config"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **SECRETS, **(env or {})})
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


PREFIXES = (("gpu", "tgi"), ("vllm", "vllm"), ("emulator", "emulator"))
FRACTION = {"gpu": "--cuda-memory-fraction=", "vllm": "--gpu-memory-utilization=",
            "emulator": "--cuda-memory-fraction="}


def flag(command: list, prefix: str) -> str | None:
    (v,) = [a[len(prefix):] for a in command if a.startswith(prefix)] or [None]
    return v


@pytest.mark.parametrize("n", [1, 3, 5])
def test_rendered_override_gives_n_replicas_per_profile(tmp_path, n):
    out = write_override(ROOT, n, 9100, tmp_path / "override.yml")
    cfg = compose_config([ROOT / "docker-compose.yml", out], profiles=("gpu", "vllm", "emulator"))
    svcs = cfg["services"]
    for profile, prefix in PREFIXES:
        names = replica_services(profile, n)
        assert names == [f"{prefix}-{i}" for i in range(1, n + 1)]
        assert sorted(s for s in svcs if s.startswith(prefix + "-")) == sorted(names)
        ports = []
        for i, name in enumerate(names, start=1):
            s = svcs[name]
            assert s["profiles"] == [profile]
            aliases = s["networks"]["default"]["aliases"]
            assert "replica" in aliases and f"replica-{i}" in aliases
            (p,) = s["ports"]
            host_ip, published, target = parse_port(p)
            assert host_ip == "127.0.0.1" and target == 8000
            ports.append(published)
            # start order: each replica waits for the previous one to be healthy
            if i == 1:
                assert not any(d.startswith(prefix + "-") for d in s.get("depends_on", {}))
            else:
                assert s["depends_on"][names[i - 2]] == {"condition": "service_healthy"}
            assert s["healthcheck"]["test"]
            # memory fractions: staggered for TGI's and the emulator's sizing, even for vLLM
            fraction = float(flag(s["command"], FRACTION[profile]))
            want = 0.9 / n if profile == "vllm" else 0.9 * i / n
            assert want - 1e-4 <= fraction <= want + 1e-9, (name, fraction)
            if profile in ("gpu", "vllm"):
                (dev,) = s["deploy"]["resources"]["reservations"]["devices"]
                assert dev == {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
                assert s["shm_size"]
        assert ports[1:] == list(range(9101, 9100 + n))
        if n == 1:
            assert ports == [8081]  # replica 1 keeps the base file's port variable
    master = " ".join(svcs["locust-master"]["command"])
    want = ",".join(f"http://replica-{i}:8000" for i in range(1, n + 1))
    assert want in master


def test_tgi_and_vllm_replicas_structure():
    """Pinned current images, no deprecated TGI flag, and no empty HF_TOKEN in any container."""
    cfg = compose_config([ROOT / "docker-compose.yml"], profiles=("gpu", "vllm"))
    tgi, vllm = cfg["services"]["tgi-1"], cfg["services"]["vllm-1"]
    assert tgi["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.7"
    assert vllm["image"].startswith("vllm/vllm-openai:v")
    assert not any(a.startswith("--max-batch-total-tokens") for a in tgi["command"])
    assert flag(vllm["command"], "--port=") == "8000" and flag(vllm["command"], "--host=")
    assert vllm["command"][0] == "HuggingFaceTB/SmolLM2-135M-Instruct"   # `vllm serve MODEL`
    assert flag(vllm["command"], "--served-model-name=")
    for svc in (tgi, vllm):
        # passed through only when set: compose leaves it out of the container's environment
        assert svc["environment"]["HF_TOKEN"] is None
        assert "unset HF_TOKEN" in " ".join(svc["entrypoint"])
    # set in the environment: passed on as it is
    cfg = compose_config([ROOT / "docker-compose.yml"], profiles=("gpu", "vllm"),
                         env={"HF_TOKEN": "hf_example"})
    assert cfg["services"]["tgi-1"]["environment"]["HF_TOKEN"] == "hf_example"
    # the power sidecar runs with either GPU profile
    assert cfg["services"]["sidecar-nvml"]["profiles"] == ["gpu", "vllm"]


def test_empty_hf_token_is_unset_inside_the_container(tmp_path):
    """The entrypoint guard, run by a real shell with compose's interpolation applied."""
    cfg = compose_config([ROOT / "docker-compose.yml"], profiles=("gpu",), env={"HF_TOKEN": ""})
    ep = cfg["services"]["tgi-1"]["entrypoint"]
    assert ep[:2] == ["/bin/bash", "-c"]
    launcher = tmp_path / "launcher.sh"       # stands in for TGI's /tgi-entrypoint.sh
    launcher.write_text('#!/bin/sh\nenv\necho "args: $*"\n')
    launcher.chmod(0o755)
    script = ep[2].replace("$$", "$").replace("/tgi-entrypoint.sh", str(launcher))
    for value, seen in (("", False), ("hf_x", True)):
        r = subprocess.run(["/bin/bash", "-c", script, "tgi", "--model-id=x"], capture_output=True,
                           text=True, env={"PATH": os.environ["PATH"], "HF_TOKEN": value})
        assert r.returncode == 0, r.stderr
        assert ("HF_TOKEN=" in r.stdout) is seen, r.stdout
        assert "args: --model-id=x" in r.stdout


def test_all_at_once_render_is_the_naive_layout(tmp_path):
    doc = render_override(ROOT, 3, 9100, all_at_once=True)
    for name in ("tgi-2", "tgi-3", "emulator-2", "emulator-3"):
        assert "depends_on" not in doc["services"][name]
    fr = [flag(doc["services"][f"tgi-{i}"]["command"], "--cuda-memory-fraction=")
          for i in (1, 2, 3)]
    assert fr == ["0.3", "0.3", "0.3"]


def test_override_is_what_stack_render_writes(tmp_path):
    # the CLI: REPLICAS from .env, written where asked, exit code 0
    proj = tmp_path / "proj"
    proj.mkdir()
    for f in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / f, proj / f)
    (proj / ".env").write_text("REPLICAS=4\nREPLICA_BASE_PORT=9200\n")
    r = subprocess.run([sys.executable, "-m", "harness", "stack", "render", "--project-dir",
                        str(proj)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "4 replica(s)" in r.stdout
    assert "tgi-1 0.225, tgi-2 0.45, tgi-3 0.675, tgi-4 0.9" in r.stdout
    assert "vllm-1 0.225, vllm-2 0.225" in r.stdout
    doc = yaml.safe_load((proj / "docker-compose.override.yml").read_text())
    assert doc == render_override(proj, 4, 9200)
    assert doc["services"]["emulator-4"]["ports"] == ["127.0.0.1:9203:8000"]
    # bad input: exit 2 naming the setting
    (proj / ".env").write_text("REPLICAS=four\n")
    r = subprocess.run([sys.executable, "-m", "harness", "stack", "render", "--project-dir",
                        str(proj)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "REPLICAS" in r.stderr and "four" in r.stderr
    with pytest.raises(InputError):
        render_override(proj, 0, 8081)


def test_env_file_written_with_fresh_secrets_once(tmp_path):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    assert ensure_env_file(tmp_path) is True
    env = read_env_file(tmp_path / ".env")
    for k in SECRET_KEYS:
        assert len(env[k]) >= 32
    assert len({env[k] for k in SECRET_KEYS}) == len(SECRET_KEYS)
    assert oct((tmp_path / ".env").stat().st_mode & 0o777) == "0o600"
    before = (tmp_path / ".env").read_text()
    assert ensure_env_file(tmp_path) is False
    assert (tmp_path / ".env").read_text() == before
    # the example itself holds no secret values
    example = read_env_file(ROOT / ".env.example")
    assert all(example[k] == "" for k in SECRET_KEYS)


def test_missing_secrets_stop_compose_with_a_clear_message():
    exe = shutil.which("docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd="/",
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "set INFLUXDB_TOKEN in .env" in r.stderr or "set INFLUXDB_ADMIN_PASSWORD" in r.stderr


def test_vllm_profile_runs_the_openai_scenario():
    from harness.launch.cli import _load_for_profile
    from harness.scenario.loader import load_scenario

    assert _load_for_profile("gpu", {}) == {}
    assert _load_for_profile("vllm", {"SCENARIO": "stack.yaml"}) == {
        "SCENARIO": "stack-vllm.yaml", "LOCUSTFILE": "openai.py"}
    assert _load_for_profile("vllm", {"SCENARIO": "mine.yaml", "LOCUSTFILE": "x.py"}) == {}
    sc = load_scenario(ROOT / "scenarios" / "stack-vllm.yaml")
    assert sc.target.protocol == "openai-completions"
    # the model name the requests carry is the name vLLM serves
    cfg = compose_config([ROOT / "docker-compose.yml"], profiles=("vllm",))
    assert flag(cfg["services"]["vllm-1"]["command"], "--served-model-name=") == sc.target.model
    assert (ROOT / "locustfiles" / "openai.py").is_file()
