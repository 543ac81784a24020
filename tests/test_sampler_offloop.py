"""NVML calls block in C; in the load generator's process (gevent) the sampler makes them from
gevent's thread pool, so the event loop (every stream's reads) goes on meanwhile. Checked in a
monkey-patched process with a fake NVML whose reads block the calling thread for 40 ms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()
import sys, time
import gevent
from gevent.monkey import get_original
from harness.telemetry.fakenvml import FakeNvml
from harness.telemetry.nvml import NvmlSource
from harness.telemetry.sampler import Sampler

block = get_original("time", "sleep")

class SlowNvml(FakeNvml):
    def nvmlDeviceGetFieldValues(self, h, ids):
        block(0.04)
        return super().nvmlDeviceGetFieldValues(h, ids)
    def nvmlDeviceGetPowerUsage(self, h):
        block(0.04)
        return super().nvmlDeviceGetPowerUsage(h)

src = NvmlSource(binding=SlowNvml(counter_cost_s=0))
if sys.argv[1] == "inline":
    NvmlSource.blocking_calls = False
s = Sampler(src, [], rate_hz=10).start()
worst = 0.0
end = time.perf_counter() + 1.5
while time.perf_counter() < end:
    t = time.perf_counter()
    gevent.sleep(0.001)
    worst = max(worst, time.perf_counter() - t)
s.stop()
print(f"{worst * 1000:.1f} {s.counts['samples']}")
"""


def _worst(mode: str) -> tuple[float, int]:
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    ms, n = p.stdout.split()
    return float(ms), int(n)


def test_nvml_reads_do_not_hold_the_event_loop():
    inline, n_inline = _worst("inline")
    pooled, n_pooled = _worst("pool")
    assert n_inline > 0 and n_pooled > 0              # the sampler read in both modes
    assert inline >= 38.0                             # a read made on the loop holds it 40 ms
    assert pooled < 30.0 and pooled < inline / 2, (pooled, inline)
