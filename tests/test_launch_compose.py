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


def compose_config(files: list[Path], profiles=("gpu", "emulator"), env=None) -> dict:
    """The fully resolved model from Debian's docker-compose (what `up` would run)."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is installed by scripts/install-test-deps.sh"
    cmd = [exe] + [a for f in files for a in ("-f", str(f))]
    cmd += [a for p in profiles for a in ("--profile", p)] + ["config"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **SECRETS, **(env or {})})
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_rendered_override_gives_n_replicas_per_profile(tmp_path, n):
    out = write_override(ROOT, n, 9100, tmp_path / "override.yml")
    cfg = compose_config([ROOT / "docker-compose.yml", out])
    svcs = cfg["services"]
    for profile, prefix in (("gpu", "tgi"), ("emulator", "emulator")):
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
            if profile == "gpu":
                fr = [a for a in s["command"] if a.startswith("--cuda-memory-fraction=")]
                assert fr == [f"--cuda-memory-fraction={int(0.9 / n * 1e4) / 1e4:g}"]
                assert "healthcheck" in s and s["shm_size"]
        base = 8081 if n == 1 else None  # replica 1 keeps the base file's port variable
        assert ports[1:] == list(range(9101, 9100 + n))
        if base:
            assert ports == [base]
    master = " ".join(svcs["locust-master"]["command"])
    want = ",".join(f"http://replica-{i}:8000" for i in range(1, n + 1))
    assert want in master


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
    assert "4 replica(s)" in r.stdout and "0.225" in r.stdout
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
