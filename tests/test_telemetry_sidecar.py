"""The sidecar service: in-process with a fake GPU, and as the real CLI process on this GPU-less
machine, over real HTTP and into a real InfluxDB."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from harness.records.rundir import read_table
from harness.scenario.models import InfluxDB
from harness.store import InfluxQLReader, InfluxTarget
from harness.telemetry.fakenvml import FakeGpu, FakeNvml
from harness.telemetry.sidecar import RemoteSampler, Sidecar, SidecarConfig
from tests.support.ports import free_port
from tests.support.processes import harness_env


def test_sidecar_serves_windows_and_latest_and_writes_store_and_run_dir(influxdb, tmp_path):
    cfg = SidecarConfig(rate_hz=50, run_id="sc-1", results_dir=str(tmp_path / "results"),
                        influx=InfluxDB(url=influxdb.url, api="v1", database="tel",
                                        spool_dir=str(tmp_path / "spool"), flush_interval_s=0.2),
                        listen=("127.0.0.1", 0), process_interval_s=0.2)
    fk = FakeNvml([FakeGpu(processes=[(777, 1 << 30)])], counter_cost_s=0.0)
    sc = Sidecar(cfg, binding=fk).start()
    try:
        remote = RemoteSampler(sc.url)
        assert remote.health()["source"] == "nvml"
        t0 = remote.begin_window("r1-c4/measure")
        time.sleep(1.0)
        w = remote.end_window("r1-c4/measure")
        latest = remote.latest()["gpus"]["0"]
        assert latest["source"] == "nvml-instant" and latest["power_w"] in (80.0, 400.0)
        with pytest.raises(urllib.request.HTTPError) as e:
            remote.end_window("never-begun")
        assert e.value.code == 404
    finally:
        summary = sc.stop()
    assert w.start_ns == t0 and w.source == "nvml-counter" and w.samples >= 30
    truth = fk.energy_j(0, w.end_ns / 1e9 - fk.t0) - fk.energy_j(0, w.start_ns / 1e9 - fk.t0)
    assert w.energy_j == pytest.approx(truth, rel=0.02)
    n = summary["counts"]["samples"]
    assert summary["store"]["acked"] == summary["store"]["submitted"]
    r = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="tel"))
    assert r.count("gpu", "power_w", "run_id='sc-1'") == n
    assert r.count("gpu_process", "used_bytes", "run_id='sc-1'") >= 3
    assert set(r.query("SELECT * FROM marker")["event"]) == {"start", "end"}
    assert len(read_table(tmp_path / "results" / "sc-1", "gpu_samples")) == n


def test_sidecar_cli_without_nvml_says_so_once_and_keeps_serving(influxdb, tmp_path):
    port = free_port()
    env = harness_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sidecar", "--listen", f"127.0.0.1:{port}",
         "--run-id", "nogpu", "--results-dir", str(tmp_path / "res"), "--influx-url", influxdb.url,
         "--influx-api", "v1", "--database", "tel", "--spool-dir", str(tmp_path / "spool")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = json.loads(urllib.request.urlopen(url + "/health", timeout=1).read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("sidecar never answered /health")
        assert health["source"] == "none" and "NVML" in health["note"]
        remote = RemoteSampler(url)
        remote.begin_window("w")
        w = remote.end_window("w")
        assert w.energy_j is None and w.source is None and w.end_ns >= w.start_ns
        assert remote.latest() == {"gpus": {}}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    nvml_lines = [ln for ln in (out + err).splitlines() if "NVML" in ln]
    assert len(nvml_lines) == 1 and "without GPU data" in nvml_lines[0]
    m = json.loads((tmp_path / "res" / "nogpu" / "manifest.json").read_text())
    assert m["status"] == "complete" and "NVML" in m["telemetry_note"]
    r = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="tel"))
    assert set(r.query("SELECT * FROM marker WHERE run_id='nogpu'")["event"]) == {"start", "end"}


@pytest.mark.parametrize("argv,field", [(["--rate-hz", "500"], "--rate-hz"),
                                        (["--gpus", "zero"], "--gpus"),
                                        (["--listen", "nowhere"], "--listen")])
def test_sidecar_cli_bad_input_exits_2_naming_the_flag(argv, field):
    env = harness_env()
    out = subprocess.run([sys.executable, "-m", "harness", "sidecar", *argv], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and field in out.stderr and "Traceback" not in out.stderr


LOCUST_UI_SCRIPT = r"""
import json, socket, time, urllib.request
import gevent
from locust.env import Environment
from harness.loadgen.webui import install_llm_tab
from harness.telemetry.fakenvml import FakeGpu, FakeNvml, square_wave
from harness.telemetry.sidecar import Sidecar, SidecarConfig

with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
env = Environment()
env.create_web_ui("127.0.0.1", port)
install_llm_tab(env, None)
gevent.sleep(0.5)
fk = FakeNvml([FakeGpu(power_w=square_wave(250, 250)), FakeGpu(power_w=square_wave(100, 100))],
              counter_cost_s=0)
sc = Sidecar(SidecarConfig(rate_hz=20, post_power_to=f"http://127.0.0.1:{port}/llm/power"),
             binding=fk).start()
for _ in range(60):
    gevent.sleep(0.1)
    if env.slm_ui.power_w is not None:
        break
summary = sc.stop()
env.web_ui.stop()
print(json.dumps({"power_w": env.slm_ui.power_w, "source": env.slm_ui.power_source,
                  "posts": summary["power_posts"]}))
"""


def test_sidecar_posts_live_power_to_the_locust_web_ui_tab():
    """The real Locust web UI with the LLM tab (gevent-patched process) receives total power."""
    env = harness_env()
    out = subprocess.run([sys.executable, "-c", LOCUST_UI_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["power_w"] == 350.0 and r["source"] == "nvml-instant"   # both GPUs summed
    assert r["posts"]["posted"] >= 1 and r["posts"]["failed"] == 0


def test_sidecar_takes_telemetry_and_store_settings_from_a_scenario(influxdb, tmp_path):
    """`--scenario`: rate and InfluxDB section from the file; with an emulator it samples
    modeled power (this machine has no NVML), and the store gets the samples and the markers."""
    from tests.support.emulator import emulator

    sc = tmp_path / "s.yaml"
    sc.write_text(f"""name: sidecar-test
telemetry: {{source: emulated, rate_hz: 10}}
store:
  results_dir: {tmp_path / 'res'}
  influxdb: {{url: "{influxdb.url}", api: v1, database: scen, spool_dir: "{tmp_path / 'spool'}"}}
""")
    env = harness_env()
    with emulator(1) as reps:
        out = subprocess.run([sys.executable, "-m", "harness", "sidecar", "--scenario", str(sc),
                              "--emulator-url", reps.urls[0], "--run-id", "scen-1",
                              "--duration-s", "2"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert out.returncode == 0, out.stderr
    assert "emulator's modeled power" in out.stdout and "stopped;" in out.stdout
    r = InfluxQLReader(InfluxTarget(url=influxdb.url, api="v1", database="scen"))
    n = r.count("gpu", "power_w", "run_id='scen-1' AND source='emulated'")
    assert 12 <= n <= 22                      # 10 Hz for 2 s
    start = r.query("SELECT * FROM marker WHERE event='start'")
    assert start.iloc[0]["rate_hz"] == 10.0 and start.iloc[0]["source"] == "emulated"
    assert len(read_table(tmp_path / "res" / "scen-1", "gpu_samples")) == n
