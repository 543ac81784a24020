#!/usr/bin/env bash
# Profile the generator at STREAMS (default 1024) on the device host: 2 emulators on cores 0-1, the
# generator (`slm-harness run`) on core 2; py-spy (carried in .prof/) samples it for 6 s in the
# measured window; prints its user/system CPU split. Diagnosis only, not a benchmark.
set -u
. scripts/device/env.sh
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
bash scripts/device/pyspy_profile.sh "$(pgrep -f '^python3 -m harness run /tmp/s.yaml' | head -1)" gen
wait %3
pkill -f "harness emulate"
