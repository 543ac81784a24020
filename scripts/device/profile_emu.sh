#!/usr/bin/env bash
# Profile the emulator under emulator_throughput at STREAMS (default 1024) on the device host:
# py-spy (carried in .prof/) samples the emulator process for 6 s. Diagnosis only.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl .prof/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
python3 benchmarks/emulator_throughput.py --streams "${STREAMS:-1024}" --seconds 12 --ramp-s 3 --clients "${CLIENTS:-4}" > "$OUT/bench.txt" 2>&1 &
sleep 9
pid=$(pgrep -f "harness emulate" | head -1)
read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
py-spy record -p $pid -d 6 -r 250 --nonblocking -f raw -o "$OUT/emu.raw" > /dev/null 2>&1
read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
echo "emulator CPU over the profile: user $((u1 - u0)) ticks, system $((s1 - s0)) ticks (of $((6 * $(getconf CLK_TCK))))"
wait
tail -1 "$OUT/bench.txt"
python3 - "$OUT/emu.raw" <<'EOP'
import sys
from collections import Counter
own, cum, tot = Counter(), Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n); tot += n
    fr = stack.split(";")
    own[fr[-1]] += n
    for f in set(fr): cum[f] += n
print("samples", tot)
for f, n in own.most_common(25): print(f"own {100*n/tot:5.1f}% {f}")
for f, n in cum.most_common(20): print(f"cum {100*n/tot:5.1f}% {f}")
EOP
