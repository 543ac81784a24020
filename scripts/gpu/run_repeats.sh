#!/usr/bin/env bash
# A GPU sweep on an H100 host, from the repository root, in two steps so that each fits a
# command limit of ten minutes:
#   bash scripts/gpu/run_repeats.sh start     # wheels, model, host facts; the sweep detached
#   bash scripts/gpu/run_repeats.sh collect   # wait for the sweep, pack results into $OUT
# (`bash scripts/gpu/run_repeats.sh all` does both in one go.)
# Settings, all optional:
#   SCENARIO    the scenario (default scenarios/h100-transformers-repeats.yaml)
#   SWEEP_ARGS  more arguments for `slm-harness sweep` (e.g. "--repeats 3")
#   TAG         names this sweep's work folder and its files in $OUT, so that two sweeps can run
#               one after the other in one command (default "sweep")
#   CPUS        a taskset CPU list the sweep and its replicas are pinned to (e.g. 0-12), leaving
#               the other cores to a benchmark running beside it
#   WAIT_S      how long `collect` waits for the sweep (default 560 s)
#   LAG_LOG=1   turns the stream reader's lag log on
set -u
. scripts/device/env.sh
TAG=${TAG:-sweep}
W=/tmp/gpurun-$TAG
R=/tmp/results-$TAG
step=${1:-all}
if [ "$step" = start ] || [ "$step" = all ]; then
  rm -rf "$W" "$R"; mkdir -p "$W"
  export HF_HUB_OFFLINE=1
  [ "${LAG_LOG:-0}" = 1 ] && export SLM_READER_LAG_LOG=$W/reader_lag.log
  bash scripts/gpu/host_facts.sh > "$W/host.txt" 2>&1
  [ -d /tmp/smollm2-135m-random ] || python3 scripts/gpu/make_random_model.py /tmp/smollm2-135m-random > "$W/model.txt" 2>&1 || exit 1
  pin=""; [ -n "${CPUS:-}" ] && pin="taskset -c $CPUS"
  echo "$(date -u +%FT%TZ) $pin slm-harness sweep ${SCENARIO:-scenarios/h100-transformers-repeats.yaml} ${SWEEP_ARGS:-}" > "$W/command.txt"
  setsid bash -c "$pin python3 -m harness sweep ${SCENARIO:-scenarios/h100-transformers-repeats.yaml} \
    ${SWEEP_ARGS:-} --results $R --plain > $W/sweep.txt 2>&1; echo \$? > $W/rc" < /dev/null &
  echo "[$TAG] sweep started: $(cat "$W/command.txt")"
fi
if [ "$step" = collect ] || [ "$step" = all ]; then
  for _ in $(seq 1 "${WAIT_S:-560}"); do [ -f "$W/rc" ] && break; sleep 1; done
  if [ -f "$W/rc" ]; then echo "[$TAG] sweep exit $(cat "$W/rc")"; else echo "[$TAG] sweep still running"; fi
  tail -60 "$W/sweep.txt"
  cat "$W/host.txt" "$W/command.txt" > "$OUT/$TAG-host.txt" 2>/dev/null
  cp "$W/sweep.txt" "$OUT/$TAG-sweep.txt" 2>/dev/null
  [ -f "$W/reader_lag.log" ] && tar -C "$W" -czf "$OUT/$TAG-reader_lag.tgz" $(cd "$W" && ls reader_lag.log*)
  if [ -f "$W/rc" ] && [ -d "$R" ]; then tar -C "$R" -czf "$OUT/$TAG-results.tgz" .; fi
  ls -la "$OUT"
fi
