#!/usr/bin/env bash
# The real-GPU run on an H100 host, from the repository root:
#   1. the NVML energy check (100 Hz power integral vs the hardware energy counter, 60 s load);
#   2. `slm-harness sweep scenarios/h100-transformers.yaml`: transformers-serve replicas 1/2/4 of a
#      random-weight SmolLM2-135M-shaped model x closed-loop concurrency, NVML telemetry at 20 Hz.
# Results are packed into $OUT (default /tmp/out). Python packages the machine lacks are
# installed from wheels in .whl/ (docs/benchmarks/gpu_sweep.md says which).
set -u
. scripts/device/env.sh
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 scripts/gpu/make_random_model.py /tmp/smollm2-135m-random || exit 1
if [ "${SKIP_ENERGY:-0}" != 1 ]; then
  python3 benchmarks/gpu_energy_check.py ${ENERGY_ARGS:-} 2>&1 | tee "$OUT/energy_check.txt"
fi
python3 -m harness sweep "${SCENARIO:-scenarios/h100-transformers.yaml}" --results /tmp/results 2>&1 | tee "$OUT/sweep.txt"
rc=${PIPESTATUS[0]}
# stop anything left (replicas are stopped by the launcher; this is a guard)
pkill -f "transformers serve" 2>/dev/null
tar -C /tmp/results -czf "$OUT/results.tgz" . && ls -la "$OUT"
exit $rc
