#!/usr/bin/env bash
# The host a GPU run measured, as plain text: GPU (name, driver, power limit, clocks, memory),
# CPU model and cores, frequency governor, Python. Printed to stdout.
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm,memory.total --format=csv 2>&1
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket|MHz'
echo "governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 --version
