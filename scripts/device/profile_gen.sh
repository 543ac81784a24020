#!/usr/bin/env bash
# Profile the generator at STREAMS (default 1024) on the device host: 2 emulators on cores 0-1, the
# generator (`slm-harness run`) on core 2; py-spy (carried in .prof/) samples it for 6 s in the
# measured window; prints its user/system CPU split. Diagnosis only, not a benchmark.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl .prof/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
S=${STREAMS:-1024}
for c in 0 1; do
  taskset -c $c python3 -m harness emulate --replicas 1 --profile fixed-50ms-10ms --port $((18080 + c)) > /dev/null 2>&1 &
done
sleep 4
cat > /tmp/s.yaml <<EOS
name: prof
target: {protocol: tgi, request_timeout_s: 60}
workload: {seed: 1, prompt_tokens: {dist: fixed, value: 16}, output_tokens: {dist: fixed, value: 128}}
load: {mode: concurrency, levels: [$S], warmup_s: 4, duration_s: 10, cooldown_s: 0.5}
EOS
taskset -c 2 python3 -m harness run /tmp/s.yaml --quiet --url http://127.0.0.1:18080,http://127.0.0.1:18081 --results /tmp/res --json /tmp/r.json 2> "$OUT/gen.log" &
sleep 6
pid=$(pgrep -f "harness run /tmp/s.yaml" | head -1)
read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
py-spy record -p $pid -d 6 -r 250 --nonblocking -f raw -o "$OUT/gen.raw" > /dev/null 2>&1
read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
echo "generator CPU over the profile: user $(( (u1 - u0) )) ticks, system $(( (s1 - s0) )) ticks (of $((6 * $(getconf CLK_TCK))))"
wait %3
python3 - "$OUT/gen.raw" <<'EOP'
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
for f, n in own.most_common(30): print(f"own {100*n/tot:5.1f}% {f}")
for f, n in cum.most_common(25): print(f"cum {100*n/tot:5.1f}% {f}")
EOP
pkill -f "harness emulate"
