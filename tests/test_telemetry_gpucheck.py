"""benchmarks/gpu_energy_check.py must run where only nvidia-ml-py (and torch) exist: its dry
run (fake NVML, no load) with pandas, pyarrow, influxdb-client, urllib3, pydantic and yaml made
unimportable."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT, harness_env

SCRIPT = """
import sys, runpy
for m in ('pyarrow', 'pandas', 'influxdb_client', 'urllib3', 'pydantic', 'yaml', 'numpy'):
    sys.modules[m] = None    # any import of these now fails
sys.argv = ['gpu_energy_check.py', '--fake', '--seconds', '4', '--phase-s', '1', '--rate-hz', '100']
runpy.run_path(%r, run_name='__main__')
"""


def test_gpu_energy_check_runs_without_heavy_packages():
    env = harness_env()
    out = subprocess.run([sys.executable, "-c", SCRIPT % str(ROOT / "benchmarks" / "gpu_energy_check.py")],
                         env=env, capture_output=True, text=True, timeout=120)
    # 0 PASS / 1 FAIL: the verdict depends on this shared machine's scheduling, not the point here
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "[FAKE NVML]" in out.stdout
    assert ("PASS" if out.returncode == 0 else "FAIL") in out.stdout.splitlines()[-1]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith(("00-on", "01-off", "all "))]
    assert len(rows) == 3
