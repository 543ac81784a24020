"""The Kubernetes manifests (deploy/k8s/) hold together: kinds, names, ports, commands, secrets.

No cluster here, so the checks are structural, against the real CLI and scenario loader: every
file parses and is listed by the kustomization; each Service selects a workload and targets a
port that workload declares; the workers find the master on its Service's port; the sidecar posts
power to the master's web port and writes to the InfluxDB Service; ``$(VAR)`` in a command is
defined in its container; the sidecar's command parses with ``slm-harness``'s own parser; the
scenario validates; and no secret value is written in any file (only ``secretKeyRef``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|API_?KEY", re.I)


def _docs() -> list[dict]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name != "kustomization.yaml":
            out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


DOCS = _docs()


def _one(kind: str, name: str) -> dict:
    found = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in DOCS])
    return found[0]


def _container(kind: str, name: str) -> dict:
    (c,) = _one(kind, name)["spec"]["template"]["spec"]["containers"]
    return c


def _flag(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def _port(service: str, name: str) -> int:
    (p,) = [p for p in _one("Service", service)["spec"]["ports"] if p["name"] == name]
    return p["port"]


def test_every_file_is_in_the_kustomization_and_the_kinds_are_all_there():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    kinds = {(d["kind"], d["metadata"]["name"]) for d in DOCS}
    assert {("Namespace", "slm-harness"), ("StatefulSet", "influxdb"), ("Service", "influxdb"),
            ("Deployment", "locust-master"), ("Service", "locust-master"), ("Deployment", "locust-worker"),
            ("DaemonSet", "sidecar-nvml"), ("ConfigMap", "slm-harness-scenario")} <= kinds
    assert all(d["kind"] != "Secret" for d in DOCS)       # secrets are created by the user, never here


@pytest.mark.parametrize("doc", [d for d in DOCS if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")],
                         ids=lambda d: d["metadata"]["name"])
def test_workloads_select_their_pods_and_define_what_their_commands_use(doc):
    spec = doc["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for c in spec["template"]["spec"]["containers"]:
        env = {e["name"] for e in c.get("env", [])}
        for ref in re.findall(r"\$\((\w+)\)", " ".join(c.get("command", []) + c.get("args", []))):
            assert ref in env, (c["name"], ref)
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        assert mounts <= volumes | claims, (c["name"], mounts)


@pytest.mark.parametrize("svc", [d for d in DOCS if d["kind"] == "Service"], ids=lambda d: d["metadata"]["name"])
def test_each_service_selects_a_workload_and_targets_its_ports(svc):
    sel = svc["spec"]["selector"]
    targets = [d for d in DOCS if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
               and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert len(targets) == 1, svc["metadata"]["name"]
    (c,) = targets[0]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports, (svc["metadata"]["name"], p)


def test_workers_find_the_master_and_the_master_listens_where_its_service_points():
    master = _container("Deployment", "locust-master")["command"]
    worker = _container("Deployment", "locust-worker")["command"]
    assert worker[:4] == ["locust", "-f", "/app/locustfiles/tgi.py", "--worker"]
    assert _flag(worker, "--master-host") == "locust-master"
    assert int(_flag(worker, "--master-port")) == _port("locust-master", "workers") == int(
        _flag(master, "--master-bind-port"))
    assert int(_flag(master, "--web-port")) == _port("locust-master", "web")
    assert "--master" in master and "--autostart" in master
    assert _flag(master, "-f") == "/app/locustfiles/tgi.py"
    scen_mount = {m["name"]: m["mountPath"] for m in _container("Deployment", "locust-master")["volumeMounts"]}
    assert _flag(master, "--scenario") == scen_mount["scenario"] + "/scenario.yaml"
    assert _flag(master, "--results") == scen_mount["results"]


def test_the_sidecar_command_parses_and_points_at_the_services():
    from harness.cli import build_parser

    c = _container("DaemonSet", "sidecar-nvml")
    cmd = c["command"]
    assert cmd[0] == "slm-harness"
    args = build_parser().parse_args(cmd[1:])
    assert args.source == "nvml"
    power = urlsplit(args.post_power_to)
    assert (power.hostname, power.port, power.path) == ("locust-master", _port("locust-master", "web"), "/llm/power")
    influx = urlsplit(args.influx_url)
    assert (influx.hostname, influx.port) == ("influxdb", _port("influxdb", "http"))
    env = {e["name"]: e for e in c["env"]}
    assert args.token_env in env and "secretKeyRef" in env[args.token_env]["valueFrom"]
    pod = _one("DaemonSet", "sidecar-nvml")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert "resources" not in c or "nvidia.com/gpu" not in str(c["resources"])   # never claims a GPU


def test_the_scenario_validates_and_writes_where_the_master_keeps_results():
    from harness.scenario.loader import parse_scenario

    text = _one("ConfigMap", "slm-harness-scenario")["data"]["scenario.yaml"]
    sc = parse_scenario(text, file="deploy/k8s/scenario.yaml")
    master = _container("Deployment", "locust-master")
    assert sc.store.results_dir == _flag(master["command"], "--results")
    influx = urlsplit(sc.store.influxdb.url)
    assert (influx.hostname, influx.port) == ("influxdb", _port("influxdb", "http"))
    assert sc.store.influxdb.token_env in {e["name"] for e in master["env"]}


def test_no_secret_value_is_written_in_any_manifest():
    refs = set()
    for d in DOCS:
        if d["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if SECRET_NAME.search(e["name"]):
                    assert "value" not in e, (c["name"], e["name"])
                    ref = e["valueFrom"]["secretKeyRef"]
                    refs.add((ref["name"], ref["key"]))
    assert refs and {name for name, _ in refs} == {"slm-harness"}
    # every key the manifests read is one the docs tell the user to create
    doc = (ROOT / "docs" / "distributed.md").read_text()
    for _, key in refs:
        assert f"--from-literal={key}=" in doc, key
    text = "\n".join(f.read_text() for f in K8S.glob("*.yaml"))
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}|\b[0-9a-f]{32,}\b", text)
