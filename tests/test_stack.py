"""The compose stack, for real: images built locally, `docker-compose --profile emulator up`, a
distributed Locust run through 3 replica containers, InfluxDB read back, and `down -v`.

Also the static side: the `gpu` profile and the Grafana provisioning, checked for structure (no
GPU and no Grafana image here), with every dashboard query executed against the run's InfluxDB.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"INFLUXDB_TOKEN": "stack-test-token-value", "INFLUXDB_ADMIN_PASSWORD": "stack-test-pw",
           "GRAFANA_ADMIN_PASSWORD": "stack-test-gpw"}
GRAFANA = ROOT / "deploy" / "grafana"


def compose(*args: str, env: dict | None = None, files: list[Path] | None = None,
            check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is installed by scripts/install-test-deps.sh"
    cmd = [exe] + [a for f in (files or [ROOT / "docker-compose.yml"]) for a in ("-f", str(f))]
    r = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **SECRETS, **(env or {})})
    if check:
        assert r.returncode == 0, f"{' '.join(cmd + list(args))}\n{r.stdout}\n{r.stderr}"
    return r


def raw_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolved(profile: str) -> dict:
    return yaml.safe_load(compose("--profile", profile, "config").stdout)


def published(port) -> tuple[str, int, int]:
    if isinstance(port, dict):
        return port.get("host_ip", ""), int(port["published"]), int(port["target"])
    parts = str(port).split("/")[0].split(":")
    return (parts[0], int(parts[1]), int(parts[2])) if len(parts) == 3 else ("", -1, -1)


# ------------------------------------------------------------------------------------------------
# static: the gpu profile, ports, secrets, images
# ------------------------------------------------------------------------------------------------
def test_gpu_profile_structure():
    cfg = resolved("gpu")
    svcs = cfg["services"]
    assert {"tgi-1", "sidecar-nvml", "balancer", "influxdb", "locust-master", "locust-worker",
            "grafana"} <= set(svcs)
    # (compose v1's `config` lists every profile's services; each belongs to its own profile)
    for name, s in svcs.items():
        if name.startswith("emulator-") or name == "sidecar-emulated":
            assert s["profiles"] == ["emulator"], name
        elif name.startswith("tgi-") or name == "sidecar-nvml":
            assert s["profiles"] == ["gpu"], name
        else:
            assert "profiles" not in s, f"{name} must run in every profile"
    tgi = svcs["tgi-1"]
    assert re.fullmatch(r"ghcr\.io/huggingface/text-generation-inference:\d+\.\d+\.\d+", tgi["image"])
    (dev,) = tgi["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["device_ids"] == ["0"] and "gpu" in dev["capabilities"]
    args = tgi["command"]
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--")}
    assert float(flags["--cuda-memory-fraction"]) == 0.9
    assert int(flags["--max-concurrent-requests"]) > 0 and int(flags["--max-batch-total-tokens"]) > 0
    assert flags["--port"] == "8000" and flags["--model-id"]
    assert tgi["shm_size"]
    assert any(str(v).split(":")[:2] == ["model-cache", "/data"] for v in tgi["volumes"])
    assert "model-cache" in cfg["volumes"]
    hc = tgi["healthcheck"]["test"]
    assert "http://127.0.0.1:8000/health" in hc
    side = svcs["sidecar-nvml"]
    assert side["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    (sdev,) = side["deploy"]["resources"]["reservations"]["devices"]
    assert sdev["driver"] == "nvidia" and sdev["device_ids"] == ["0"]
    assert side["labels"]["org.slm-harness.power-source"] == "nvml"
    # the model and the GPU come from .env / the environment
    cfg2 = yaml.safe_load(compose("--profile", "gpu", "config",
                                  env={"MODEL_ID": "org/other", "GPU_DEVICE": "1"}).stdout)
    assert "--model-id=org/other" in cfg2["services"]["tgi-1"]["command"]
    assert cfg2["services"]["tgi-1"]["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"] == ["1"]


@pytest.mark.parametrize("profile", ["gpu", "emulator"])
def test_every_published_port_is_bound_to_loopback_and_health_checked(profile):
    svcs = resolved(profile)["services"]
    for name, s in svcs.items():
        for p in s.get("ports", []):
            assert published(p)[0] == "127.0.0.1", f"{name} publishes {p} beyond loopback"
    for name in ["influxdb"] + [n for n in svcs if re.match(r"(tgi|emulator)-\d+$", n)]:
        assert svcs[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    master = svcs["locust-master"]
    assert [published(p)[:3:2] for p in master["ports"]] == [("127.0.0.1", 8089)]


def test_secrets_only_from_env_and_images_are_variables():
    text = (ROOT / "docker-compose.yml").read_text()
    raw = raw_compose()
    for name, s in raw["services"].items():
        img = s.get("image", "")
        assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-[^}]+\}", img), f"{name}: image {img!r}"
        env = s.get("environment", {}) or {}
        for k, v in env.items():
            if re.search(r"TOKEN|PASSWORD|SECRET", k):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(v)), f"{name}.{k} = {v!r}"
    for value in SECRETS.values():
        assert value not in text
    # the resolved values come from the environment (.env in real use)
    svcs = resolved("emulator")["services"]
    assert svcs["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == SECRETS["INFLUXDB_TOKEN"]
    assert svcs["locust-master"]["environment"]["INFLUXDB_TOKEN"] == SECRETS["INFLUXDB_TOKEN"]
    assert svcs["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    # nothing secret is tracked by git
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    if tracked:  # a git checkout
        assert ".env" not in tracked.split()
    ignored = subprocess.run(["git", "check-ignore", ".env", "docker-compose.override.yml"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == [".env", "docker-compose.override.yml"]


def test_influxdb2_initialised_from_env_with_dbrp_mapping():
    svcs = resolved("emulator")["services"]
    env = svcs["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for k in ("ORG", "BUCKET", "USERNAME", "PASSWORD", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{k}"]
    mounts = [str(v) for v in svcs["influxdb"]["volumes"]]
    assert any("init-dbrp.sh" in m and "/docker-entrypoint-initdb.d/" in m for m in mounts)
    script = (ROOT / "deploy" / "influxdb" / "init-dbrp.sh").read_text()
    assert "influx v1 dbrp create" in script and "DOCKER_INFLUXDB_INIT_BUCKET_ID" in script
    assert "--db" in script and "INFLUXDB_DATABASE" in script
    assert os.access(ROOT / "deploy" / "influxdb" / "init-dbrp.sh", os.X_OK)
    r = subprocess.run(["bash", "-n", str(ROOT / "deploy" / "influxdb" / "init-dbrp.sh")])
    assert r.returncode == 0


# ------------------------------------------------------------------------------------------------
# static: Grafana provisioning
# ------------------------------------------------------------------------------------------------
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "slm-harness.json").read_text())


def dashboard_queries(d: dict) -> list[tuple[str, str]]:
    """(where, InfluxQL) for every query the dashboard runs: panels, annotations, variables."""
    out = []
    for p in d["panels"]:
        for t in p["targets"]:
            out.append((f"panel {p['title']!r} {t['refId']}", t["query"]))
    for a in d["annotations"]["list"]:
        if a.get("query"):
            out.append((f"annotation {a['name']!r}", a["query"]))
    for v in d["templating"]["list"]:
        out.append((f"variable {v['name']!r}", v["query"]))
    return out


def test_grafana_provisioning_structure():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    (src,) = ds["datasources"]
    assert src["type"] == "influxdb" and src["url"] == "http://influxdb:8086"
    assert src["jsonData"]["version"] == "InfluxQL"
    assert src["jsonData"]["dbName"] == "${INFLUXDB_DATABASE}"
    assert src["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"
    assert src["jsonData"]["httpHeaderName1"] == "Authorization"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "slm-harness.yaml").read_text())
    (provider,) = prov["providers"]
    graf = resolved("emulator")["services"]["grafana"]
    mounts = [str(v) if not isinstance(v, dict) else f"{v.get('source')}:{v['target']}"
              for v in graf["volumes"]]
    assert any(m.rstrip(":ro").endswith(":" + provider["options"]["path"])
               or (":" + provider["options"]["path"] + ":") in m for m in mounts)
    assert any("/etc/grafana/provisioning" in m for m in mounts)
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    titles = " | ".join(p["title"] for p in d["panels"]).lower()
    for want in ("tokens/s", "ttft", "itl", "errors", "power", "per output token", "per replica"):
        assert want in titles, want
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24
        for t in p["targets"]:
            assert t["datasource"]["uid"] == src["uid"] and t["rawQuery"] is True
    assert any(a.get("name") == "Level marks" for a in d["annotations"]["list"])
    assert [v["name"] for v in d["templating"]["list"]] == ["run_id"]
    for where, q in dashboard_queries(d):
        assert re.match(r"^(SELECT|SHOW) ", q), where
