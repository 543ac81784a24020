"""Runs fault cells in one load-generating process for tests/test_faults.py (one start-up for
the whole table): for each case, set the replica-wide fault on the emulator, run one closed-loop
cell against every replica, and print what the records and the emulator's ground truth say.

Usage: python tests/support/fault_driver.py CASES.json OUT_DIR   (prints one JSON line per case)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import locust  # noqa: F401 - monkey-patches the standard library before anything else loads

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.loadgen.run import run_cell  # noqa: E402
from harness.records.rundir import RunDir, read_table  # noqa: E402
from harness.scenario.models import Scenario  # noqa: E402


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    for i, case in enumerate(cases):
        urls, bad = case["urls"], case["urls"][1]
        sc = Scenario.model_validate({
            "name": f"fault{i}",
            "target": {"protocol": "tgi", "request_timeout_s": case.get("timeout_s", 1.0),
                       "connect_timeout_s": 1.0,
                       "breaker": {"enabled": case.get("breaker", True), "open_s": 0.3}},
            "workload": {"seed": i, "prompt_tokens": {"dist": "fixed", "value": 8},
                         "output_tokens": {"dist": "fixed", "value": 8}},
            "load": {"mode": "concurrency", "levels": [case.get("level", 4)], "warmup_s": 0,
                     "duration_s": case.get("duration_s", 2.0), "cooldown_s": 0},
        })
        for u in urls:
            try:
                _post(f"{u}/emulator/ground_truth/reset", {})
            except OSError:
                pass
        if case.get("fault"):
            _post(f"{bad}/emulator/fault", {"fault": case["fault"]})
        if case.get("signal"):
            os.kill(case["pid"], getattr(signal, case["signal"]))
        rd = RunDir(out / f"case{i}", f"case{i}")
        t0 = time.monotonic()
        try:
            res = run_cell(sc, urls, 2, float(case.get("level", 4)), rd)
        finally:
            if case.get("signal") == "SIGSTOP":
                os.kill(case["pid"], signal.SIGCONT)
            rd.close()
            if case.get("fault"):
                _post(f"{bad}/emulator/fault", {"fault": None})
        wall = time.monotonic() - t0
        req = read_table(rd.path, "requests")
        by = {}
        for u in urls:
            r = req[req.replica == u]
            by[u] = {"requests": len(r),
                     "classes": {str(k): int(v) for k, v in r.error_class.value_counts().items()}}
        gt = {}
        if case.get("signal") != "SIGKILL":
            for u in urls:
                g = _get(f"{u}/emulator/ground_truth")
                gt[u] = g["per_replica"][g["replica"]] if "per_replica" in g else g
        print(json.dumps({"case": case["name"], "wall_s": wall, "records": by, "ground_truth": gt,
                          "summary_replicas": res.summary().get("replicas"),
                          "errors": res.summary()["errors"]}), flush=True)


if __name__ == "__main__":
    main()
