#!/usr/bin/env bash
# The repeats sweep on an H100 host, from the repository root, in two steps so that each fits a
# command limit of ten minutes:
#   bash scripts/gpu/run_repeats.sh start     # wheels, model, host facts; the sweep detached
#   bash scripts/gpu/run_repeats.sh collect   # wait for the sweep, pack results into $OUT
# (`bash scripts/gpu/run_repeats.sh all` does both in one go.) The sweep runs
# scenarios/h100-transformers-repeats.yaml; LAG_LOG=1 turns the stream reader's lag log on.
set -u
. scripts/device/env.sh
W=/tmp/gpurun
step=${1:-all}
if [ "$step" = start ] || [ "$step" = all ]; then
  rm -rf "$W" /tmp/results; mkdir -p "$W"
  export HF_HUB_OFFLINE=1
  [ "${LAG_LOG:-0}" = 1 ] && export SLM_READER_LAG_LOG=$W/reader_lag.log
  { nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm,memory.total --format=csv
    lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket'
    cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "governor: n/a"
    python3 --version; } > "$W/host.txt" 2>&1
  python3 scripts/gpu/make_random_model.py /tmp/smollm2-135m-random > "$W/model.txt" 2>&1 || exit 1
  setsid bash -c "python3 -m harness sweep ${SCENARIO:-scenarios/h100-transformers-repeats.yaml} \
    --results /tmp/results --plain > $W/sweep.txt 2>&1; echo \$? > $W/rc" < /dev/null &
  echo "sweep started"
fi
if [ "$step" = collect ] || [ "$step" = all ]; then
  for _ in $(seq 1 ${WAIT_S:-560}); do [ -f "$W/rc" ] && break; sleep 1; done
  if [ -f "$W/rc" ]; then echo "sweep exit $(cat "$W/rc")"; else echo "sweep still running"; fi
  tail -40 "$W/sweep.txt"
  cp "$W/sweep.txt" "$W/host.txt" "$OUT/" 2>/dev/null
  tar -C "$W" -czf "$OUT/reader_lag.tgz" $(cd "$W" && ls reader_lag.log* 2>/dev/null) 2>/dev/null
  [ -d /tmp/results ] && tar -C /tmp/results -czf "$OUT/results.tgz" .
  ls -la "$OUT"
fi
