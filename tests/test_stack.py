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
import sys
from pathlib import Path

import pytest
import yaml

from harness.analysis.summary import analyze
from harness.engine.outcome import exit_code as engine_exit_code

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
        elif name.startswith("tgi-"):
            assert s["profiles"] == ["gpu"], name
        elif name.startswith("vllm-"):
            assert s["profiles"] == ["vllm"], name
        elif name == "sidecar-nvml":
            assert s["profiles"] == ["gpu", "vllm"], name
        else:
            assert "profiles" not in s, f"{name} must run in every profile"
    tgi = svcs["tgi-1"]
    assert re.fullmatch(r"ghcr\.io/huggingface/text-generation-inference:\d+\.\d+\.\d+", tgi["image"])
    (dev,) = tgi["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["device_ids"] == ["0"] and "gpu" in dev["capabilities"]
    args = tgi["command"]
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--")}
    assert float(flags["--cuda-memory-fraction"]) == 0.9
    assert int(flags["--max-concurrent-requests"]) > 0
    assert "--max-batch-total-tokens" not in flags   # deprecated: TGI sizes it at warm-up
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


@pytest.mark.parametrize("profile", ["gpu", "vllm", "emulator"])
def test_every_published_port_is_bound_to_loopback_and_health_checked(profile):
    svcs = resolved(profile)["services"]
    for name, s in svcs.items():
        for p in s.get("ports", []):
            assert published(p)[0] == "127.0.0.1", f"{name} publishes {p} beyond loopback"
    for name in ["influxdb"] + [n for n in svcs if re.match(r"(tgi|vllm|emulator)-\d+$", n)]:
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
        if isinstance(env, list):   # KEY=VALUE items, or KEY alone (passed through when set)
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        for k, v in env.items():
            if v is None:
                continue
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
from stack_support import (Chromium, DockerEngine, build_images, free_ports,  # noqa: E402
                           http_json, tokens_per_s)

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
  duration_s: 25
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
           "SCENARIO": "stack-test.yaml", "LOCUST_WORKERS": str(WORKERS), "LOCUST_LINGER_S": "10",
           "REPLICA_BASE_PORT": str(base), "BALANCER_PORT": str(bal),
           "BALANCER_STATS_PORT": str(stats), "LOCUST_WEB_PORT": str(web),
           "INFLUXDB_PORT": str(influx), "GRAFANA_PORT": str(graf)}
    dc = ["-p", project, "--profile", "emulator"]
    urls = [f"http://127.0.0.1:{base + i}" for i in range(REPLICAS)]
    browser = Chromium(tmp_path / "chromium").__enter__()   # warm before the run starts
    try:
        t0 = time.monotonic()
        compose(*dc, "up", "-d", "--scale", f"locust-worker={WORKERS}", *SERVICES, env=env,
                files=files)
        print(f"compose up in {time.monotonic() - t0:.0f} s")
        deadline = time.monotonic() + 120
        while not all(is_healthy(u) for u in urls):
            assert time.monotonic() < deadline, "replica containers never healthy"
            time.sleep(0.5)

        # --- kill one replica early in the run ------------------------------------------------
        deadline = time.monotonic() + 150
        while http_json(urls[KILLED - 1] + "/emulator/ground_truth")["total"][
                "requests_completed"] < 10:
            assert time.monotonic() < deadline, "the run never reached replica 3"
            time.sleep(0.2)
        kill_ns = time.time_ns()
        subprocess.run(["docker", "kill", container(project, f"emulator-{KILLED}")], check=True,
                       capture_output=True)

        # --- the Locust web UI, through its published port, in headless Chromium -------------
        # (reloaded until the LLM tab shows live figures: the run goes on on 2 replicas)
        live = power = None
        deadline = time.monotonic() + 60
        while live is None or power is None:
            try:
                browser.get(f"http://127.0.0.1:{web}/?tab=llm")
                for _ in range(4):
                    time.sleep(1.0)
                    browser.script("""
                        const tab = [...document.querySelectorAll('button, [role=tab], a')]
                            .find(e => e.innerText && e.innerText.trim().toUpperCase() === 'LLM');
                        if (tab && tab.getAttribute('aria-selected') !== 'true') tab.click();""")
                    text = browser.text()
                    m = re.search(r"Output tokens/s \(last 10 s\)\s+([\d.]+)", text)
                    if m and float(m.group(1)) > 0:
                        live = float(m.group(1))
                    # the sidecar posts the (emulated) power: W and J/token appear live
                    p = re.search(r"GPU power \(W\)\s+([\d.]+)", text)
                    if p:
                        power = float(p.group(1))
                    if live is not None and power is not None:
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", container(project, "locust-master")],
                                      capture_output=True, text=True)
                pytest.fail(f"no live token figures in the LLM tab:\n{browser.text()[:1500]}"
                            f"\nmaster log:\n{(logs.stdout + logs.stderr)[-3000:]}")
        jt = re.search(r"Energy per output token \(J/token\)\s+([\d.]+)", browser.text())
        print(f"web UI LLM tab: {live} output tokens/s, {power} W, J/token {jt and jt[1]}")
        assert power > 0
        browser.__exit__(None, None, None)

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
        windows = pd.read_parquet(run / "windows.parquet")
        measure = windows[windows.phase == "measure"]
        assert measure.start_ns.min() - 3_000_000_000 < kill_ns < measure.end_ns.max(), \
            "the replica was not killed during the run"

        # master saw both worker containers; the records carry both worker ids
        assert f"{WORKERS} workers connected" in master_log
        # the workers read streams with the C pass built by scripts/build-images.sh
        for w in range(1, WORKERS + 1):
            wl = subprocess.run(["docker", "logs", container(project, "locust-worker", w)],
                                capture_output=True, text=True)
            assert "C read pass unavailable" not in wl.stdout + wl.stderr, (wl.stdout + wl.stderr)[-2000:]
        probe = subprocess.run(["docker", "run", "--rm", "--network", "none", images["HARNESS_IMAGE"], "python", "-c",
                                "from harness.loadgen.native import load; print('c-pass' if load() else 'python')"],
                               capture_output=True, text=True, timeout=120)
        assert probe.stdout.strip() == "c-pass", probe.stdout + probe.stderr
        records = pd.read_parquet(run / "requests.parquet")
        assert records["worker"].nunique() == WORKERS
        # the SLO (error budget 0.1%) is broken by the kill; the exit code is Locust's own, the
        # engine's rule for this run directory (1 violated, or 4 when a cell's measurement is invalid)
        want = engine_exit_code(json.loads((run / "manifest.json").read_text())["status"],
                                analyze(run), "every")
        assert summary["slo_ok"] is False and want in (1, 4), master_log[-3000:]
        assert exit_code == want, master_log[-3000:]
        assert f"; exit {want}" in master_log
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
        # one GPU (gpu 0) per sampling host, whichever replica each read (the sidecar moved on
        # when replica 3 died): the simulated GPU, whose memory in use drops once the dead
        # replica's heartbeat is stale (its KV cache freed)
        series = influxql(influx, f"SELECT \"mem_used_bytes\" FROM \"gpu\" WHERE \"source\" = "
                                  f"'emulated' AND time >= {start_ns}ns AND time <= {end_ns}ns "
                                  f"GROUP BY \"gpu\", \"host\"")
        assert series and {s_["tags"]["gpu"] for s_ in series} == {"0"}
        assert len(series) == len({s_["tags"]["host"] for s_ in series})
        for s_ in series:
            mem = [(t, v) for t, v in s_["values"] if v is not None]
            before = [v for t, v in mem if t < kill_ns]
            after = [v for t, v in mem if t > kill_ns + 5_000_000_000]
            assert before and after and max(after) < min(before) - 10 * 2**30, (before[-3:],
                                                                                after[:3])

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
        browser.__exit__(None, None, None)
        compose(*dc, "down", "-v", "--remove-orphans", env=env, files=files, check=False)
    assert project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


def test_emulator_containers_share_one_gpu_sized_like_tgi(engine_and_images, tmp_path):
    """3 replica containers on one simulated GPU (the `emulated-gpu` volume): started one after
    another with staggered fractions their KV budgets are equal; started all at once with 0.9/N
    each they are not; they contend for the GPU and report one power series."""
    images = engine_and_images
    project = f"slmgpu{os.getpid()}"
    base = free_port_block(REPLICAS)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(REPLICAS)]
    replicas = [f"emulator-{i}" for i in range(1, REPLICAS + 1)]
    env = {"HARNESS_IMAGE": images["HARNESS_IMAGE"], "REPLICA_BASE_PORT": str(base),
           "EMULATOR_LOAD_S": "2"}

    files = [ROOT / "docker-compose.yml", tmp_path / "replicas.yml"]

    def up(all_at_once: bool) -> list[int]:
        write_override(ROOT, REPLICAS, base, files[1], all_at_once=all_at_once)
        t0 = time.monotonic()
        compose("-p", project, "--profile", "emulator", "up", "-d", *replicas, env=env,
                files=files, timeout=300)
        deadline = time.monotonic() + 120
        while not all(is_healthy(u) for u in urls):
            assert time.monotonic() < deadline, "replica containers never healthy"
            time.sleep(0.5)
        budgets = [http_json(u + "/info")["max_batch_total_tokens"] for u in urls]
        print(f"{'all at once' if all_at_once else 'one after another'}: healthy in "
              f"{time.monotonic() - t0:.0f} s, KV budgets {budgets}")
        return budgets

    try:
        # --- the new way: depends_on chain, 0.3 / 0.6 / 0.9 -------------------------------------
        budgets = up(all_at_once=False)
        assert (max(budgets) - min(budgets)) / max(budgets) < 0.05, budgets
        started = [subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}",
                                   container(project, r)], capture_output=True, text=True,
                                  check=True).stdout.strip() for r in replicas]
        assert started == sorted(started), started       # one after another, in order
        gpu = [http_json(u + "/emulator/gpu") for u in urls]
        assert {g["replicas"] for g in gpu} == {REPLICAS}
        assert len({g["mem_used_bytes"] for g in gpu}) == 1
        # contention: each replica alone at saturation, then all three at once
        alone = tokens_per_s(urls, busy=urls[:1])
        together = tokens_per_s(urls, busy=urls)
        print(f"tokens/s alone {alone[urls[0]]:.0f}, together "
              f"{[round(together[u]) for u in urls]}")
        assert alone[urls[0]] > 0 and alone[urls[1]] == alone[urls[2]] == 0, alone
        assert all(0 < together[u] < 0.8 * alone[urls[0]] for u in urls), (alone, together)
        # one power series: the same GPU behind every replica (power, one energy counter)
        deadline = time.monotonic() + 10
        while http_json(urls[0] + "/emulator/gpu")["gpu_util_pct"] > 0:
            assert time.monotonic() < deadline, "the GPU never went idle"
            time.sleep(0.2)
        snaps = [http_json(u + "/emulator/gpu") for u in urls + urls[:1]]
        assert len({g["power_w"] for g in snaps}) == 1
        energy = [g["energy_j"] for g in snaps]
        assert energy == sorted(energy) and energy[-1] - energy[0] < snaps[0]["power_w"]
        compose("-p", project, "--profile", "emulator", "rm", "-f", "-s", *replicas, env=env,
                files=files)

        # --- the old way: all at once, 0.9/3 each -----------------------------------------------
        budgets = up(all_at_once=True)
        assert (max(budgets) - min(budgets)) / max(budgets) > 0.5, budgets
        assert sorted(budgets)[0] == sorted(budgets)[1], budgets   # warm-up blocks only
        out = subprocess.run([sys.executable, "-m", "harness", "stack", "status", "--project-dir",
                              str(ROOT), "--replicas", str(REPLICAS)], capture_output=True,
                             text=True, env={**os.environ, **SECRETS, **env,
                                             "PYTHONPATH": str(ROOT), "COMPOSE_PROJECT_NAME": project})
        assert "KV budgets differ by" in out.stdout, out.stdout + out.stderr
    finally:
        compose("-p", project, "--profile", "emulator", "down", "-v", "--remove-orphans", env=env,
                files=files, check=False)
    assert project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


def compose_project(tmp_path: Path, images: dict, base_port: int, **extra) -> Path:
    """A copy of the compose project with a .env that points at the local images."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", proj)
    shutil.copytree(ROOT / "deploy", proj / "deploy")
    env = {**SECRETS, "HARNESS_IMAGE": images["HARNESS_IMAGE"], "REPLICA_BASE_PORT": base_port,
           "EMULATOR_PROFILE": "fixed-50ms-10ms", **extra}
    (proj / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return proj


def test_compose_launcher_brings_replicas_up_and_removes_them(engine_and_images, tmp_path,
                                                              monkeypatch):
    from harness.launch.base import launcher_for
    from harness.scenario.models import Target

    base = free_port_block(2)
    proj = compose_project(tmp_path, engine_and_images, base)
    project = f"slmlaunch{os.getpid()}"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", project)
    target = Target.model_validate({"launcher": {
        "kind": "compose", "project_dir": str(proj), "profile": "emulator", "base_port": base,
        "startup_timeout_s": 120}})
    try:
        with launcher_for(target, 2, tmp_path / "logs") as reps:
            assert reps.kind == "compose" and reps.emulated and len(reps) == 2
            assert reps.urls == [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
            for u in reps.urls:
                out = http_json(u + "/generate", json.dumps(
                    {"inputs": "hi", "parameters": {"max_new_tokens": 3}}).encode())
                assert out["generated_text"]
            names = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter",
                                    f"label=com.docker.compose.project={project}"],
                                   capture_output=True, text=True).stdout.split()
            assert sorted(names) == [f"{project}_emulator-1_1", f"{project}_emulator-2_1"]
            # `slm-harness stack status` sees both replicas healthy
            r = subprocess.run([sys.executable, "-m", "harness", "stack", "status", "--project-dir",
                                str(proj), "--replicas", "2"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert r.returncode == 0, r.stdout + r.stderr
            assert re.findall(r"replica \d: (\S+) healthy", r.stdout) == reps.urls
        assert (tmp_path / "logs" / "replica-1.log").read_text().strip()
        # containers and network gone; named volumes (the model cache) are kept for the next cell
        left = project_leftovers(project)
        assert left["containers"] == [] and left["networks"] == []
        assert set(left["volumes"]) <= {f"{project}_{v}" for v in raw_compose()["volumes"]}
        # a replica container that exits at once: LaunchError naming it, nothing left behind
        (proj / ".env").write_text((proj / ".env").read_text() + "EMULATOR_PROFILE=no-such-profile\n")
        from harness.errors import LaunchError
        with pytest.raises(LaunchError, match=r"replica 0 \(emulator-1\) exited with code 2"):
            with launcher_for(target, 1, tmp_path / "logs2"):
                pass
        assert "no-such-profile" in (tmp_path / "logs2" / "replica-0.log").read_text()
        left = project_leftovers(project)
        assert left["containers"] == [] and left["networks"] == []
    finally:
        compose("-p", project, "--profile", "emulator", "down", "-v",
                files=[proj / "docker-compose.yml"], check=False)
    assert project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


def test_stack_cli_up_status_down(engine_and_images, tmp_path):
    """`slm-harness stack up` writes .env with fresh secrets, renders, starts; `status`; `down -v`."""
    images = engine_and_images
    base = free_port_block(2)
    (bal,) = free_ports(1)
    proj = tmp_path / "proj"
    proj.mkdir()
    for f in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / f, proj / f)
    shutil.copytree(ROOT / "deploy", proj / "deploy")
    project = f"slmcli{os.getpid()}"
    env = {**{k: v for k, v in os.environ.items() if k not in SECRETS},
           "PYTHONPATH": str(ROOT), "COMPOSE_PROJECT_NAME": project,
           "HARNESS_IMAGE": images["HARNESS_IMAGE"], "BALANCER_IMAGE": images["BALANCER_IMAGE"],
           "REPLICA_BASE_PORT": str(base), "BALANCER_PORT": str(bal),
           "BALANCER_STATS_PORT": str(free_ports(1)[0]), "EMULATOR_PROFILE": "fixed-50ms-10ms"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harness", "stack", *args, "--project-dir",
                               str(proj)], capture_output=True, text=True, env=env, timeout=300)

    try:
        r = cli("up", "--profile", "emulator", "--replicas", "2", "--workers", "1",
                "emulator-1", "emulator-2", "balancer")
        assert r.returncode == 0, r.stdout + r.stderr
        dotenv = (proj / ".env").read_text()
        secrets = {k: v for k, v in (line.split("=", 1) for line in dotenv.splitlines()
                                     if "=" in line and not line.startswith("#"))
                   if k in ("INFLUXDB_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD")}
        assert all(len(v) >= 32 for v in secrets.values()) and len(secrets) == 3
        assert not any(v in r.stdout + r.stderr for v in secrets.values())
        assert (proj / "docker-compose.override.yml").exists()
        deadline = time.monotonic() + 90
        while (st := cli("status", "--replicas", "2")).returncode != 0:
            assert time.monotonic() < deadline, st.stdout + st.stderr
            time.sleep(1)
        assert len(re.findall(r"replica \d: \S+ healthy", st.stdout)) == 2
        # the balancer finds both replicas through DNS and spreads requests over them
        deadline = time.monotonic() + 30
        while True:
            try:
                out = http_json(f"http://127.0.0.1:{bal}/generate", json.dumps(
                    {"inputs": "x", "parameters": {"max_new_tokens": 2}}).encode())
                break
            except OSError:
                assert time.monotonic() < deadline, "balancer never served a request"
                time.sleep(1)
        assert out["generated_text"]
        # HAProxy learns the second replica through DNS and a health check a few seconds after
        # the first: keep sending (each request through the balancer) until both have served two
        sent, deadline = 1, time.monotonic() + 45
        while True:
            served = [http_json(f"http://127.0.0.1:{base + i}/emulator/ground_truth")["total"]
                      ["requests_received"] for i in range(2)]
            assert sum(served) == sent, (served, sent)     # every request reached exactly one replica
            if min(served) >= 2:
                break
            assert time.monotonic() < deadline, f"the balancer never spread requests: {served}"
            http_json(f"http://127.0.0.1:{bal}/generate", json.dumps(
                {"inputs": "x", "parameters": {"max_new_tokens": 2}}).encode())
            sent += 1
            time.sleep(0.2)
    finally:
        r = cli("down", "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}
