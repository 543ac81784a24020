#!/usr/bin/env bash
# The host a GPU run measured, as plain text: GPU (name, driver, power limit, clocks, memory),
# CPU model and cores, frequency governor, Python. Printed to stdout.
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm,memory.total --format=csv 2>&1
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket|MHz'
echo "governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 --version
# The CPU's single-thread speed as a Python engine feels it: a CPU-bound serving engine's step time
# follows it, and VMs of one description can differ (compare runs by this line, not by the model name).
python3 - <<'PY'
import time
def work(n):
    d = {}
    for i in range(n):
        d[i & 1023] = d.get(i & 1023, 0) + i
    return d
best = min((lambda t0: (work(300_000), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
print(f"python single-thread: {300_000 / best / 1e6:.2f} M dict updates/s (best of 5)")
PY
