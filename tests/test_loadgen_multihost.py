"""A Locust master and two workers on separate network hosts (namespaces joined by veth pairs).

The emulator, the master and each worker run in their own network namespace (tests/support/netns.py):
no process can reach another through a loopback address, so the workers find the master by
``--master-host`` and the replicas by their 198.18.0.x address, as on separate machines. The
replicas are a hosted endpoint's kind: https with a certificate made here and a bearer token,
which each worker reads from its own environment. The master's merged histograms must equal the
union of the records both workers sent it, and the emulator's own ground truth; the token must
appear in no output.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd

from harness.loadgen.hist import HistSet, new_hist, record_array
from tests.support.netns import hosts
from tests.support.processes import harness_env, locust_cluster, start_emulator, stop

MASTER_PORT = 5557

TOKEN = "tok_multihost_0123456789abcdefXYZ"
SCEN = """
name: multihost
target:
  protocol: tgi
  headers: {Authorization: "Bearer ${EMU_TOKEN}"}
  tls: {ca_file: "CA"}
workload: {seed: 3, prompt_tokens: {dist: uniform, min: 8, max: 24}, output_tokens: {dist: uniform, min: 16, max: 48}}
load: {mode: concurrency, levels: [12], warmup_s: 0.5, duration_s: 3, cooldown_s: 0}
slo: {max_error_rate: 0.0}
telemetry: {enabled: false}
"""


def _curl(host, url: str, method: str = "GET") -> str:
    return subprocess.run(host.argv("curl", "-fksS", "-m", "5", "-X", method, url), capture_output=True, text=True,
                          check=True).stdout


def _hist_of(values_us) -> "np.ndarray":
    h = new_hist()
    record_array(h, np.asarray(values_us, dtype=np.int64))
    return h


def test_master_and_workers_on_three_hosts_merge_exactly_their_records(tmp_path):
    env = harness_env(EMU_TOKEN=TOKEN)
    with hosts("emu", "master", "w1", "w2") as h:
        key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(crt), "-days", "2", "-subj", f"/CN={h['emu'].addr}", "-addext",
                        f"subjectAltName=IP:{h['emu'].addr}"], check=True, capture_output=True)
        scen = tmp_path / "s.yaml"
        scen.write_text(SCEN.replace('"CA"', f'"{crt}"'))
        emu, urls = start_emulator(tmp_path, "--replicas", "2", "--host", h["emu"].addr, "--tls-cert", str(crt),
                                   "--tls-key", str(key), "--require-token-env", "EMU_TOKEN", env=env, host=h["emu"])
        try:
            assert all(u.startswith(f"https://{h['emu'].addr}:") for u in urls)
            port = urls[0].rsplit(":", 1)[1]
            # no loopback shortcut: the replicas answer on the bridge, not on the master's loopback
            unauthorized = subprocess.run(h["master"].argv("curl", "-fksS", "-m", "5", urls[0] + "/health"),
                                          capture_output=True, text=True)
            assert unauthorized.returncode != 0 and "401" in unauthorized.stderr   # the token is required
            bad = subprocess.run(h["master"].argv("curl", "-ksS", "-m", "2", f"https://127.0.0.1:{port}/health"),
                                 capture_output=True, text=True)
            assert bad.returncode != 0
            for u in urls:
                _curl(h["master"], u + "/emulator/ground_truth/reset", "POST")
            with locust_cluster(scen, urls, tmp_path, master_host=h["master"].addr, port=MASTER_PORT, env=env,
                                hosts=h) as cluster:
                out = cluster.finish(timeout=150)
            assert cluster.master.returncode == 0, out[-4000:]
            gt = json.loads(_curl(h["master"], urls[0] + "/emulator/ground_truth"))["total"]
        finally:
            stop(emu, timeout=5)
    s = json.loads((tmp_path / "sum.json").read_text())
    (cell,) = s["cells"]
    assert cell["workers"] == 2
    (run_dir,) = list((tmp_path / "res").iterdir())
    req = pd.read_parquet(run_dir / "requests.parquet")
    assert req.error_class.isna().all() and set(req.replica) == set(urls)
    assert req.worker.nunique() == 2                      # both hosts generated load
    # everything the emulator completed is one record, sent to the master by one of the workers
    assert len(req) == gt["requests_completed"] and int(req.output_tokens.sum()) == gt["tokens_sent"]
    m = req[req.phase == "measure"]
    assert cell["requests"] == len(m) == cell["ok"] and cell["output_tokens"] == int(m.output_tokens.sum())
    # the master's merged histograms hold exactly the measured records of both workers
    hs = HistSet.decode(json.loads((run_dir / "histograms" / f"{cell['cell']}.json").read_text()))
    assert hs.count("ttft") == len(m) == hs.count("e2e")
    assert hs.count("itl") == int((m.output_tokens - 1).sum())
    for metric, col in (("ttft", m.ttft_s), ("e2e", m.e2e_s)):
        union = _hist_of(np.rint(col.to_numpy() * 1e6))
        for q in (50, 90, 99, 100):
            mine = hs.h[metric].get_value_at_percentile(q)
            theirs = union.get_value_at_percentile(q)
            assert abs(mine - theirs) <= max(2, 0.002 * theirs), (metric, q, mine, theirs)
    # the longest ITL any record saw is the merged histogram's maximum
    assert abs(hs.h["itl"].get_max_value() - m.itl_max_s.max() * 1e6) <= max(2, 0.002 * m.itl_max_s.max() * 1e6)
    # and the emulator agrees on the schedule the client measured
    assert abs(hs.percentile_s("itl", 50) * 1e6 - gt["itl_us"]["p50"]) < 1000
    # the token went from each host's environment into its requests, and nowhere else
    assert TOKEN not in out
    assert [str(f) for f in tmp_path.rglob("*") if f.is_file() and TOKEN.encode() in f.read_bytes()] == []
