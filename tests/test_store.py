"""The store against real servers: InfluxDB 1.6.7 (v1 /write, InfluxQL /query) and
VictoriaMetrics (influxdb-client's v2 writes), including spool and replay with exact counts."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from harness.errors import InputError
from harness.records.schema import CellWindow, GpuSample, RequestRecord
from harness.secrets import Secret
from harness.store import InfluxQLReader, InfluxTarget, InfluxWriter, VictoriaMetricsReader
from harness.store.writer import writer_from_config
from harness.telemetry.records import GpuGap, GpuProcessSample
from tests.support.processes import harness_env, wait_for

T0 = time.time_ns() - 3_600 * 10**9   # an hour ago: inside every default query range


def gpu_samples(n, run_id="run-1", gpu=0, start=T0, step_ns=10_000_000):
    return [GpuSample(ts_ns=start + i * step_ns, gpu=gpu, source="nvml-instant",
                      power_w=100.0 + (i % 50), gpu_util_pct=float(i % 100), mem_used_bytes=i,
                      throttle_reasons=0, run_id=run_id, host="node-a") for i in range(n)]


def request(i, **kw):
    d = dict(run_id="run-1", cell="r2-c8", replicas=2, level=8, phase="measure",
             replica="http://127.0.0.1:8081", worker="gen:1", request_id=i, intended_ns=T0 + i,
             start_ns=T0 + i * 1000, end_ns=T0 + i * 1000 + 10**9, first_token_ns=T0 + 5 * 10**7,
             ttft_s=0.05, e2e_s=1.0, tpot_s=0.0075, input_tokens=128, output_tokens=128,
             finish_reason="length", status=200)
    d.update(kw)
    return RequestRecord(**d)


def v1(srv, db="harness", **kw) -> InfluxTarget:
    return InfluxTarget(url=srv.url, api="v1", database=db, **kw)


def test_v1_write_and_query_back_every_record_kind(influxdb, tmp_path):
    t = v1(influxdb)
    w = InfluxWriter(t, tmp_path / "spool", batch_size=500, create_db=True)
    w.write_gpu_samples(gpu_samples(1200))
    reqs = [request(i) for i in range(300)]
    reqs.append(request(300, start_ns=T0, error_class="http_429", status=429, output_tokens=0,
                        ttft_s=None, e2e_s=0.01, finish_reason=None, error='overloaded "429"'))
    reqs.append(request(301, start_ns=T0))   # same series and nanosecond as request 0
    w.write_requests(reqs)
    w.write_windows([CellWindow(run_id="run-1", cell="r2-c8", replicas=2, level=8,
                                level_kind="concurrency", phase="measure", start_ns=T0,
                                end_ns=T0 + 30 * 10**9, energy_j=4500.5, energy_source="nvml-counter")])
    w.write_gpu_processes([GpuProcessSample(ts_ns=T0, gpu=0, pid=p, used_bytes=p << 20,
                                            run_id="run-1", host="node-a") for p in (11, 12)])
    w.write_gpu_gap(GpuGap(gpu=0, start_ns=T0 + 10**9, end_ns=T0 + 2 * 10**9, errors=7,
                           error="NVMLError_GpuIsLost", run_id="run-1", host="node-a"))
    w.write_marker("run-1", "level", "start", T0, cell="r2-c8", level=8.0)
    st = w.close()
    total = 1200 + 302 + 1 + 2 + 1 + 1
    assert st["acked"] == st["submitted"] == total and st["spooled"] == 0

    r = InfluxQLReader(t)
    assert r.count("gpu", "power_w", "run_id='run-1'") == 1200
    assert r.count("request", "request_id") == 302      # the same-nanosecond pair kept apart
    df = r.query("SELECT * FROM request WHERE error_class='http_429'")
    assert len(df) == 1 and df.iloc[0]["status"] == 429 and df.iloc[0]["error"] == 'overloaded "429"'
    assert df.iloc[0]["replica"] == "http://127.0.0.1:8081"
    df = r.query("SELECT mean(power_w), max(mem_used_bytes) FROM gpu GROUP BY gpu, source")
    assert df.iloc[0]["source"] == "nvml-instant" and df.iloc[0]["max"] == 1199
    assert df.iloc[0]["mean"] == pytest.approx(sum(100 + i % 50 for i in range(1200)) / 1200)
    win = r.query("SELECT * FROM window")
    assert win.iloc[0]["energy_j"] == 4500.5 and win.iloc[0]["duration_s"] == 30.0
    assert win.iloc[0]["time"].value == T0
    assert set(r.query("SELECT used_bytes FROM gpu_process GROUP BY pid")["pid"]) == {"11", "12"}
    gap = r.query("SELECT * FROM gpu_gap")
    assert gap.iloc[0]["errors"] == 7 and gap.iloc[0]["duration_s"] == 1.0
    tags = r.query("SHOW TAG KEYS FROM request")
    assert set(tags["tagKey"]) <= {"run_id", "cell", "phase", "replica", "worker", "protocol",
                                   "error_class"}
    r.close()


def test_v2_write_through_influxdb_client_to_victoria_metrics(victoria, tmp_path):
    t = InfluxTarget(url=victoria.url, api="v2", bucket="harness", org="lab",
                     token=Secret("vm-ignores-this-token"))
    w = InfluxWriter(t, tmp_path / "spool", batch_size=2000, flush_interval_s=0.2)
    w.write_gpu_samples(gpu_samples(3000, gpu=0) + gpu_samples(3000, gpu=1))
    w.write_requests([request(i, start_ns=T0 + i * 10**6) for i in range(500)])
    st = w.close()
    assert st["acked"] == 6500 and st["spooled"] == st["rejected"] == 0
    vm = VictoriaMetricsReader(victoria.url)
    vm.force_flush()
    df = vm.export('{__name__="gpu_power_w"}')
    assert len(df) == 6000 and set(df["gpu"]) == {"0", "1"} and set(df["source"]) == {"nvml-instant"}
    assert df["ts_ms"].min() == T0 // 10**6
    ttft = vm.export('{__name__="request_ttft_s", run_id="run-1"}')
    assert len(ttft) == 500 and (ttft["value"] == 0.05).all() and set(ttft["cell"]) == {"r2-c8"}


class Producer(threading.Thread):
    """Writes ``n`` GPU samples in small bursts over ``seconds``, like a sampler during a run."""

    def __init__(self, writer, n, seconds, run_id):
        super().__init__(daemon=True)
        self.writer, self.n, self.seconds, self.run_id = writer, n, seconds, run_id

    def run(self):
        pts = gpu_samples(self.n, run_id=self.run_id, step_ns=1_000_000)
        per = max(1, self.n // int(self.seconds / 0.02))
        for i in range(0, self.n, per):
            self.writer.write_gpu_samples(pts[i:i + per])
            time.sleep(0.02)


def test_v1_spool_and_replay_across_a_server_kill_exactly_once(influxdb, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    t = v1(influxdb, timeout_s=2.0)
    w = InfluxWriter(t, tmp_path / "spool", batch_size=400, chunk_lines=100,
                     flush_interval_s=0.1, replay_interval_s=0.2, create_db=True)
    p = Producer(w, 20_000, 4.0, "kill-v1")
    p.start()
    time.sleep(1.2)
    influxdb.kill()                     # SIGKILL mid-run
    time.sleep(1.2)
    wait_for(lambda: w.degraded, 30, "the writer to notice the dead server")
    influxdb.start()
    p.join()
    st = w.close(timeout_s=60)
    assert st["spool_points"] == 0 and st["dropped"] == st["rejected"] == 0
    assert st["spooled"] > 0 and st["replayed"] == st["spooled"]
    assert st["acked"] + st["spooled"] == st["submitted"] == 20_000
    assert InfluxQLReader(t).count("gpu", "power_w", "run_id='kill-v1'") == 20_000
    assert any("spooling" in r.getMessage() for r in caplog.records)


def test_v2_spool_and_replay_across_a_server_restart_exactly_once(victoria, tmp_path):
    t = InfluxTarget(url=victoria.url, api="v2", bucket="harness", timeout_s=2.0)
    w = InfluxWriter(t, tmp_path / "spool", batch_size=400, chunk_lines=100,
                     flush_interval_s=0.1, replay_interval_s=0.2)
    p = Producer(w, 20_000, 4.0, "restart-v2")
    p.start()
    time.sleep(1.2)
    victoria.stop()                     # VictoriaMetrics acknowledges before it persists: stop it
    time.sleep(1.2)                     # gracefully (a SIGKILL loses its last second by design)
    wait_for(lambda: w.degraded, 30, "the writer to notice the stopped server")
    victoria.start()
    p.join()
    st = w.close(timeout_s=60)
    assert st["spool_points"] == 0 and st["spooled"] > 0 and st["replayed"] == st["spooled"]
    assert st["acked"] + st["spooled"] == st["submitted"] == 20_000
    vm = VictoriaMetricsReader(victoria.url)
    vm.force_flush()
    df = vm.export('{__name__="gpu_power_w", run_id="restart-v2"}')
    assert len(df) == 20_000 and df["ts_ms"].nunique() == 20_000


def test_a_slow_database_spools_and_replays_without_duplicates(influxdb, tmp_path):
    """SIGSTOP: connections hang, writes time out (some may still land when it resumes: the
    replayed copies overwrite the same points, so the count stays exact)."""
    t = v1(influxdb, timeout_s=0.5)
    w = InfluxWriter(t, tmp_path / "spool", batch_size=300, chunk_lines=100,
                     flush_interval_s=0.1, replay_interval_s=0.2, create_db=True)
    p = Producer(w, 6_000, 3.0, "slow")
    p.start()
    time.sleep(0.8)
    influxdb.pause()
    time.sleep(1.5)
    # resumed once a write has timed out into the spool, however late a loaded machine ran it
    wait_for(lambda: w.stats()["spooled"] > 0, 30, "a write to the stopped server to time out")
    influxdb.resume()
    p.join()
    st = w.close(timeout_s=60)
    assert st["spooled"] > 0 and st["spool_points"] == 0
    assert InfluxQLReader(t).count("gpu", "power_w", "run_id='slow'") == 6_000


def test_spool_left_by_one_writer_is_replayed_by_the_next(influxdb, tmp_path):
    spool = tmp_path / "spool"
    influxdb.kill()
    t = v1(influxdb, timeout_s=1.0)
    w = InfluxWriter(t, spool, batch_size=500, replay_interval_s=0.2)
    w.write_gpu_samples(gpu_samples(1500, run_id="later"))
    st = w.close(timeout_s=2)
    assert st["spool_points"] == 1500 and st["acked"] == 0
    influxdb.start()
    w2 = InfluxWriter(t, spool, replay_interval_s=0.2, create_db=True)
    assert w2.degraded                 # it found the spool and replays before live writes
    w2.write_gpu_samples(gpu_samples(10, run_id="later", start=T0 + 10**12))
    st2 = w2.close(timeout_s=30)
    assert st2["spool_points"] == 0 and st2["replayed"] - 1500 + st2["acked"] == 10
    assert InfluxQLReader(t).count("gpu", "power_w", "run_id='later'") == 1510


def test_a_malformed_batch_is_rejected_and_counted_not_retried(influxdb, tmp_path, caplog):
    t = v1(influxdb)
    w = InfluxWriter(t, tmp_path / "spool", chunk_lines=1, batch_size=1, create_db=True)
    w.write_lines([f"x v=1.5 {T0}"])
    w.flush()
    w.write_lines([f"x v=\"text\" {T0 + 1}"])   # field type conflict: InfluxDB answers 400
    st = w.close()
    assert st["acked"] == 1 and st["rejected"] == 1 and st["spool_points"] == 0
    assert InfluxQLReader(t).count("x", "v") == 1


def test_credentials_from_env_never_reach_logs_errors_or_repr(influxdb_auth, tmp_path, caplog,
                                                              monkeypatch):
    from harness.scenario.models import InfluxDB

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HARNESS_TEST_USER", "admin")
    monkeypatch.setenv("HARNESS_TEST_PW", "wrong-pw-9f8e7d")
    cfg = InfluxDB(url=influxdb_auth.url, api="v1", database="harness",
                   username_env="HARNESS_TEST_USER", password_env="HARNESS_TEST_PW",
                   spool_dir=str(tmp_path / "spool"), batch_size=100)
    w = writer_from_config(cfg)
    assert "wrong-pw" not in repr(w.target)
    w.write_gpu_samples(gpu_samples(250, run_id="auth"))
    st = w.close(timeout_s=1.5)
    assert st["spool_points"] == 250 and "401" in st["last_error"]   # kept, not lost
    everything = caplog.text + repr(st) + str(w.target)
    assert "wrong-pw-9f8e7d" not in everything

    monkeypatch.setenv("HARNESS_TEST_PW", "s3cret-admin-pw")
    (tmp_path / "token").write_text("unused-token\n")
    w2 = writer_from_config(cfg.model_copy(update={"token_file": str(tmp_path / "token")}),
                            create_db=True)
    st2 = w2.close(timeout_s=30)
    assert st2["replayed"] == 250
    r = InfluxQLReader(w2.target)
    assert r.count("gpu", "power_w", "run_id='auth'") == 250
    assert "s3cret-admin-pw" not in caplog.text + repr(st2)


def test_target_needs_a_database_or_bucket():
    with pytest.raises(InputError) as e:
        InfluxTarget(url="http://127.0.0.1:1", api="v1")
    assert e.value.field == "store.influxdb.database"
    with pytest.raises(InputError):
        InfluxTarget(url="http://127.0.0.1:1", api="v2")


def test_escaping_round_trips_tags_and_string_fields(influxdb, tmp_path):
    t = v1(influxdb)
    w = InfluxWriter(t, tmp_path / "spool", create_db=True)
    odd_replica = "http://h:1/a b,c=d"
    odd_error = 'line1\nline2 "quoted" back\\slash'
    w.write_requests([request(0, replica=odd_replica, error_class="sse_error", error=odd_error)])
    assert w.close()["acked"] == 1
    df = InfluxQLReader(t).query("SELECT * FROM request")
    assert df.iloc[0]["replica"] == odd_replica
    assert df.iloc[0]["error"] == odd_error.replace("\n", " ")   # no newline in line protocol


def _write_run(target, spool):
    w = InfluxWriter(target, spool, create_db=target.api == "v1")
    w.write_gpu_samples(gpu_samples(200, run_id="run-q", gpu=0) + gpu_samples(200, run_id="run-q", gpu=1))
    w.write_gpu_samples(gpu_samples(50, run_id="", gpu=0, start=T0 + 10**10))   # sidecar, no run id
    w.write_gpu_samples(gpu_samples(70, run_id="other", gpu=0, start=T0 + 10**6))
    w.write_gpu_samples(gpu_samples(30, run_id="run-q", gpu=0, start=T0 + 10**12))  # outside window
    assert w.close()["acked"] == 550


def _check_frame(df, resolution_ns=1):
    from harness.records.schema import GPU_SCHEMA

    assert list(df.columns) == GPU_SCHEMA.names
    assert len(df) == 450 and (df["run_id"] == "run-q").all()
    assert df["ts_ns"].min() == T0 // resolution_ns * resolution_ns and set(df["gpu"]) == {0, 1}
    first = df[(df["gpu"] == 1)].iloc[0]
    assert first["power_w"] == 100.0 and first["source"] == "nvml-instant" and first["host"] == "node-a"


def test_read_gpu_samples_from_influxdb(influxdb, tmp_path):
    from harness.store import read_gpu_samples

    t = v1(influxdb)
    _write_run(t, tmp_path / "spool")
    _check_frame(read_gpu_samples(t, run_id="run-q", start_ns=T0, end_ns=T0 + 10**11))


def test_read_gpu_samples_from_victoria_metrics(victoria, tmp_path):
    from harness.store import read_gpu_samples

    t = InfluxTarget(url=victoria.url, api="v2", bucket="harness")
    _write_run(t, tmp_path / "spool")
    VictoriaMetricsReader(victoria.url).force_flush()
    _check_frame(read_gpu_samples(t, run_id="run-q", start_ns=T0, end_ns=T0 + 10**11), 10**6)


GEVENT_WRITER = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, time
from harness.records.schema import GpuSample
from harness.store import InfluxTarget, InfluxWriter
api, url, spool = sys.argv[1], sys.argv[2], sys.argv[3]
t = (InfluxTarget(url=url, api="v1", database="harness") if api == "v1"
     else InfluxTarget(url=url, api="v2", bucket="harness"))
w = InfluxWriter(t, spool, batch_size=1000, flush_interval_s=0.2, create_db=api == "v1")
t0 = time.time_ns() - 10**12
for k in range(50):
    w.write_gpu_samples([GpuSample(ts_ns=t0 + (k * 100 + i) * 10**6, gpu=0, source="emulated",
                                   power_w=float(i), run_id="gevent", host="h") for i in range(100)])
    time.sleep(0.01)
print(json.dumps(w.close(timeout_s=60)))
"""


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_writer_works_under_gevent_monkey_patching(api, influxdb, victoria, tmp_path):
    """Locust's process is gevent-patched: the writer's threads (and WriteApi's) are greenlets."""
    import json
    import subprocess
    import sys

    srv = influxdb if api == "v1" else victoria
    env = harness_env()
    out = subprocess.run([sys.executable, "-c", GEVENT_WRITER, api, srv.url, str(tmp_path / "sp")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    st = json.loads(out.stdout.strip().splitlines()[-1])
    assert st["acked"] == st["submitted"] == 5000
    if api == "v1":
        assert InfluxQLReader(v1(influxdb)).count("gpu", "power_w", "run_id='gevent'") == 5000
    else:
        vm = VictoriaMetricsReader(victoria.url)
        vm.force_flush()
        assert len(vm.export('{__name__="gpu_power_w",run_id="gevent"}')) == 5000


def test_records_given_as_dicts_are_written_like_objects(influxdb, tmp_path):
    """The sweep hands rows as dicts (as read from Parquet): same points as the dataclasses."""
    from dataclasses import asdict

    t = v1(influxdb)
    w = InfluxWriter(t, tmp_path / "spool", create_db=True)
    w.write_requests([asdict(request(i, run_id="dicts")) for i in range(20)])
    w.write_windows([asdict(CellWindow(run_id="dicts", cell="r1-c4", replicas=1, level=4.0,
                                       level_kind="concurrency", phase="measure", start_ns=T0,
                                       end_ns=T0 + 2 * 10**9))])
    assert w.close()["acked"] == 21
    r = InfluxQLReader(t)
    assert r.count("request", "end_ns", "run_id='dicts'") == 20
    assert r.query("SELECT duration_s FROM window WHERE run_id='dicts'").iloc[0]["duration_s"] == 2.0


def test_replay_command_empties_a_spool_left_by_a_run(influxdb, tmp_path):
    import subprocess
    import sys

    spool = tmp_path / "run" / "influx-spool"
    influxdb.kill()
    w = InfluxWriter(v1(influxdb, timeout_s=1.0), spool)
    w.write_gpu_samples(gpu_samples(700, run_id="left"))
    assert w.close(timeout_s=1)["spool_points"] == 700
    influxdb.start()
    sc = tmp_path / "run" / "scenario.yaml"
    sc.write_text(f'name: left\nstore:\n  influxdb: {{url: "{influxdb.url}", api: v1, database: harness}}\n')
    env = harness_env()
    out = subprocess.run([sys.executable, "-m", "harness.store.replay", str(spool), "--scenario",
                          str(sc)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "700 points replayed, 0 still spooled" in out.stdout
    assert InfluxQLReader(v1(influxdb)).count("gpu", "power_w", "run_id='left'") == 700
