#!/usr/bin/env bash
# Profile the emulator under emulator_throughput at STREAMS (default 1024) on the device host:
# py-spy (carried in .prof/) samples the emulator process for 6 s. Diagnosis only.
set -u
. scripts/device/env.sh
python3 benchmarks/emulator_throughput.py --streams "${STREAMS:-1024}" --seconds 12 --ramp-s 3 --clients "${CLIENTS:-4}" > "$OUT/bench.txt" 2>&1 &
sleep 9
bash scripts/device/pyspy_profile.sh "$(pgrep -f 'harness emulate' | head -1)" emu
wait
tail -1 "$OUT/bench.txt"
