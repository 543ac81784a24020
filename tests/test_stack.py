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


# ------------------------------------------------------------------------------------------------
# the real stack
# ------------------------------------------------------------------------------------------------
import time  # noqa: E402

import pandas as pd  # noqa: E402

from harness.launch.compose import write_override  # noqa: E402
from harness.launch.health import free_port_block, is_healthy  # noqa: E402
from stack_support import Chromium, DockerEngine, build_images, free_ports, http_json  # noqa: E402

REPLICAS = 3
WORKERS = 2
SERVICES = [f"emulator-{i}" for i in range(1, REPLICAS + 1)] + [
    "balancer", "influxdb", "sidecar-emulated", "locust-master", "locust-worker"]
KILLED = REPLICAS                      # replica 3 is killed mid-run
STACK_SCENARIO = """\
name: stacktest
description: the stack test's short run (3 replica containers, 2 Locust worker containers)
target:
  protocol: tgi
  model: smollm2-135m
  launcher: {kind: endpoints, urls: ["http://replica-1:8000"]}
workload:
  seed: 5
  prompt_tokens: {dist: uniform, min: 16, max: 64}
  output_tokens: {dist: fixed, value: 32}
load:
  mode: concurrency
  levels: [12]
  warmup_s: 2
  duration_s: 20
  cooldown_s: 1
slo:
  ttft_s: {p99: 5.0}
  max_error_rate: 0.001
store:
  results_dir: /results
  influxdb: {url: "http://influxdb:8086", api: v1, database: slm, token_env: INFLUXDB_TOKEN}
"""
# InfluxDB 1.x stands in for 2.x (no image of it here): same service, its own data path and check.
TEST_OVERRIDE = """\
services:
  influxdb:
    environment:
      INFLUXDB_DB: slm
    volumes:
      - influxdb-data:/var/lib/influxdb
    healthcheck:
      test: ["CMD", "python3", "/usr/local/bin/influxdb-v1-healthcheck"]
  locust-master:
    volumes:
      - {scenario}:/app/scenarios/stack-test.yaml:ro
"""


@pytest.fixture(scope="module")
def engine_and_images(tmp_path_factory):
    logs = tmp_path_factory.mktemp("stack-engine")
    with DockerEngine(logs):
        t0 = time.monotonic()
        images = build_images(logs / "build-images.log")
        print(f"images ready in {time.monotonic() - t0:.0f} s: {images}")
        yield images


def project_leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    out = {}
    for kind, cmd in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                      ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                      ("volumes", ["docker", "volume", "ls", "-q", "--filter", label])):
        out[kind] = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return out


def influxql(port: int, q: str, db: str = "slm") -> list[dict]:
    from urllib.parse import urlencode

    body = http_json(f"http://127.0.0.1:{port}/query?" + urlencode({"db": db, "q": q, "epoch": "ns"}))
    res = body["results"][0]
    assert "error" not in res, f"{q}: {res['error']}"
    return res.get("series", [])


def substitute(q: str, start_ns: int, end_ns: int, run_id: str) -> str:
    """What Grafana does to a dashboard query before sending it."""
    q = q.replace("$timeFilter", f"time >= {start_ns}ns AND time <= {end_ns}ns")
    q = q.replace("$__interval", "1s").replace("$run_id", re.escape(run_id))
    return q


def container(project: str, service: str, index: int = 1) -> str:
    return f"{project}_{service}_{index}"


def test_emulator_stack_end_to_end(engine_and_images, tmp_path):
    images = engine_and_images
    project = f"slmtest{os.getpid()}"
    base = free_port_block(REPLICAS)
    bal, stats, web, influx, graf = free_ports(5)
    scenario = tmp_path / "stack-test.yaml"
    scenario.write_text(STACK_SCENARIO)
    override = tmp_path / "test-override.yml"
    override.write_text(TEST_OVERRIDE.format(scenario=scenario))
    replicas_file = write_override(ROOT, REPLICAS, base, tmp_path / "replicas.yml")
    files = [ROOT / "docker-compose.yml", replicas_file, override]
    env = {"HARNESS_IMAGE": images["HARNESS_IMAGE"], "BALANCER_IMAGE": images["BALANCER_IMAGE"],
           "INFLUXDB_IMAGE": images["INFLUXDB_V1_IMAGE"], "INFLUXDB_API": "v1",
           "SCENARIO": "stack-test.yaml", "LOCUST_WORKERS": str(WORKERS), "LOCUST_LINGER_S": "3",
           "REPLICA_BASE_PORT": str(base), "BALANCER_PORT": str(bal),
           "BALANCER_STATS_PORT": str(stats), "LOCUST_WEB_PORT": str(web),
           "INFLUXDB_PORT": str(influx), "GRAFANA_PORT": str(graf)}
    dc = ["-p", project, "--profile", "emulator"]
    urls = [f"http://127.0.0.1:{base + i}" for i in range(REPLICAS)]
    try:
        t0 = time.monotonic()
        compose(*dc, "up", "-d", "--scale", f"locust-worker={WORKERS}", *SERVICES, env=env,
                files=files)
        print(f"compose up in {time.monotonic() - t0:.0f} s")
        deadline = time.monotonic() + 120
        while not all(is_healthy(u) for u in urls):
            assert time.monotonic() < deadline, "replica containers never healthy"
            time.sleep(0.5)

        # --- the Locust web UI, through its published port, in headless Chromium -------------
        with Chromium(tmp_path / "chromium") as browser:
            deadline = time.monotonic() + 90
            while True:
                try:
                    browser.get(f"http://127.0.0.1:{web}/")
                    if "Locust" in (browser.script("return document.title;") or ""):
                        break
                except (OSError, ValueError):
                    pass
                assert time.monotonic() < deadline, "Locust web UI never answered"
                time.sleep(1)
            live = None
            deadline = time.monotonic() + 150
            while live is None:
                browser.script("""
                    const tab = [...document.querySelectorAll('button, [role=tab], a')]
                        .find(e => e.innerText && e.innerText.trim().toUpperCase() === 'LLM');
                    if (tab) tab.click();""")
                time.sleep(1.0)
                m = re.search(r"Output tokens/s \(last 10 s\)\s+([\d.]+)", browser.text())
                if m and float(m.group(1)) > 0:
                    live = float(m.group(1))
                if time.monotonic() > deadline:
                    logs = subprocess.run(["docker", "logs", container(project, "locust-master")],
                                          capture_output=True, text=True)
                    pytest.fail(f"no live token figures in the LLM tab:\n{browser.text()[:1500]}"
                                f"\nmaster log:\n{(logs.stdout + logs.stderr)[-3000:]}")
            print(f"web UI LLM tab: {live} output tokens/s")

        # --- kill one replica mid-run ---------------------------------------------------------
        gt = http_json(urls[KILLED - 1] + "/emulator/ground_truth")
        while gt["total"]["requests_completed"] < 20:
            time.sleep(0.5)
            gt = http_json(urls[KILLED - 1] + "/emulator/ground_truth")
        kill_ns = time.time_ns()
        subprocess.run(["docker", "kill", container(project, f"emulator-{KILLED}")], check=True,
                       capture_output=True)

        # --- the run completes; its exit code is the SLO verdict ------------------------------
        master = container(project, "locust-master")
        r = subprocess.run(["docker", "wait", master], capture_output=True, text=True,
                           timeout=180)
        exit_code = int(r.stdout.strip())
        logs = subprocess.run(["docker", "logs", master], capture_output=True, text=True)
        master_log = logs.stdout + logs.stderr
        counters = {i: http_json(urls[i - 1] + "/emulator/ground_truth")["total"]
                    for i in range(1, REPLICAS + 1) if i != KILLED}
        results = tmp_path / "results"
        subprocess.run(["docker", "cp", f"{master}:/results", str(results)], check=True)
        run_dirs = [p for p in results.iterdir() if p.is_dir() and p.name.startswith("stacktest-")]
        assert len(run_dirs) == 1, list(results.iterdir())
        run = run_dirs[0]
        summary = json.loads((run / "locust-summary.json").read_text())

        # master saw both worker containers; the records carry both worker ids
        assert f"{WORKERS} workers connected" in master_log
        records = pd.read_parquet(run / "requests.parquet")
        assert records["worker"].nunique() == WORKERS
        # the SLO verdict (error budget 0.1%, broken by the kill) is the exit code
        assert summary["slo_ok"] is False and exit_code == 1, master_log[-3000:]
        assert "SLO violated; exit 1" in master_log
        # the report in the results volume
        assert (run / "report.html").stat().st_size > 10_000
        assert json.loads((run / "summary.json").read_text())
        # per-replica attribution equals the replicas' own counters (the survivors' are intact)
        per_replica = records.groupby("replica").size().to_dict()
        for i, c in counters.items():
            assert per_replica[f"http://replica-{i}:8000"] == c["requests_received"], (i, c)
            ok = records[(records.replica == f"http://replica-{i}:8000") & records.error_class.isna()]
            assert len(ok) == c["requests_completed"]
            assert int(ok.output_tokens.sum()) == c["tokens_sent"]
        # the killed replica: errors of their classes, the rest of the run went on
        dead = records[records.replica == f"http://replica-{KILLED}:8000"]
        err_classes = set(dead.error_class.dropna())
        assert err_classes and err_classes <= {"connect", "reset", "incomplete", "timeout"}, err_classes
        assert (dead[dead.start_ns > kill_ns + 2_000_000_000].error_class == "connect").all()
        after = records[(records.start_ns > kill_ns + 2_000_000_000) & records.error_class.isna()]
        assert set(after.replica) == {f"http://replica-{i}:8000" for i in counters}
        cell = summary["cells"][0]
        print("cell summary:", json.dumps(cell)[:600])

        # --- the balancer routes only to the survivors now (least connections) ----------------
        before = {i: c["requests_received"] for i, c in counters.items()}
        for _ in range(6):
            out = http_json(f"http://127.0.0.1:{bal}/generate", json.dumps(
                {"inputs": "hello there", "parameters": {"max_new_tokens": 4}}).encode())
            assert out["generated_text"]
        got = {i: http_json(urls[i - 1] + "/emulator/ground_truth")["total"]["requests_received"]
               - before[i] for i in counters}
        assert sum(got.values()) == 6 and all(v > 0 for v in got.values()), got

        # --- InfluxDB: request records and power samples through InfluxQL ---------------------
        run_id = str(records.run_id.iloc[0])
        series = influxql(influx, f"SELECT count(\"output_tokens\") FROM \"request\" "
                                  f"WHERE \"run_id\" = '{run_id}'")
        assert len(series) == 1, master_log[-3000:]
        (n_req,) = series
        assert n_req["values"][0][1] == len(records), master_log[-3000:]
        start_ns, end_ns = int(records.start_ns.min()), int(records.end_ns.max())
        (n_gpu,) = influxql(influx, f"SELECT count(\"power_w\") FROM \"gpu\" WHERE "
                                    f"\"source\" = 'emulated' AND time >= {start_ns}ns AND "
                                    f"time <= {end_ns}ns")
        assert n_gpu["values"][0][1] >= 10

        # --- every Grafana dashboard query returns this run's data ----------------------------
        dash = dashboard()
        for where, q in dashboard_queries(dash):
            series = influxql(influx, substitute(q, start_ns - 10**9, end_ns + 10**9, run_id))
            values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
            assert values, f"{where} returned nothing: {q}"
            if "run_id" in where:
                assert [run_id] in [row[1:] for s in series for row in s["values"]]
        err = dict(dashboard_queries(dash))["panel 'Errors by class' A"]
        classes = {s["tags"]["error_class"] for s in
                   influxql(influx, substitute(err, start_ns, end_ns + 10**9, run_id))}
        assert classes == err_classes
    finally:
        for svc in SERVICES:
            subprocess.run(["docker", "logs", container(project, svc)], capture_output=True)
        compose(*dc, "down", "-v", "--remove-orphans", env=env, files=files, check=False)
    assert project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}
