#!/usr/bin/env bash
# The emulator and generator speed benchmarks on a many-core host, from the repo root:
#   emulator_throughput (emulator pinned to one core, 8 client processes), generator_fidelity
#   (2 emulator processes on cores 0-1, the generator on core 2) and bare_reader (the floor).
# Tables go to stdout and $OUT. Wheels the machine lacks go in .whl/ (docs/benchmarks/gpu_sweep.md).
#   WHAT="emu gen bare" EMU_STREAMS=512,1024 GEN_STREAMS=64,256,512,1024 bash scripts/device/speed.sh
set -u
. scripts/device/env.sh
WHAT=${WHAT:-emu gen bare}
# RPS=MASK (e.g. fff0): receive packet steering on loopback for this run, restored afterwards.
# On loopback the receiver's TCP work runs on the sending core; RPS moves it to the CPUs in MASK,
# as a real NIC moves it to another host (docs/benchmarks/emulator_throughput.md).
if [ -n "${RPS:-}" ]; then
  rps=/sys/class/net/lo/queues/rx-0/rps_cpus; rps_old=$(cat $rps)
  echo "$RPS" > $rps && trap 'echo "$rps_old" > $rps' EXIT
  echo "# RPS on lo: $(cat $rps)"
fi
echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); python $(python3 -V)"
for w in $WHAT; do
  case $w in
  emu)
    python3 benchmarks/emulator_throughput.py --streams "${EMU_STREAMS:-512,1024,1280}" --seconds 5 --ramp-s 3 \
      --clients "${EMU_CLIENTS:-8}" --episodes ${EMU_ARGS:-} --json "$OUT/emulator_throughput.json" 2>&1 \
      | tee "$OUT/emulator_throughput.txt" ;;
  emu-asyncio)
    SLM_EMULATOR_LOOP=asyncio python3 benchmarks/emulator_throughput.py --streams "${EMU_STREAMS:-512,1024,1280}" \
      --seconds 5 --ramp-s 3 --clients 8 --json "$OUT/emulator_throughput_asyncio.json" 2>&1 \
      | tee "$OUT/emulator_throughput_asyncio.txt" ;;
  gen)
    python3 benchmarks/generator_fidelity.py --streams "${GEN_STREAMS:-64,256,512,1024}" --warmup-s 3 \
      --measure-s "${GEN_MEASURE_S:-8}" --emulator-processes 2 ${GEN_ARGS:-} --json "$OUT/generator_fidelity.json" \
      2>&1 | tee "$OUT/generator_fidelity.txt" ;;
  bare)
    urls=""
    for c in 0 1; do
      taskset -c $c python3 -m harness emulate --replicas 1 --profile fixed-50ms-10ms --port $((18080 + c)) \
        > "$OUT/bare_emu$c.log" 2>&1 &
      urls="$urls${urls:+,}http://127.0.0.1:$((18080 + c))"
    done
    sleep 4
    taskset -c 2 python3 benchmarks/bare_reader.py --url "$urls" --streams "${GEN_STREAMS:-64,256,512,1024}" \
      --measure-s "${GEN_MEASURE_S:-8}" 2>&1 | tee "$OUT/bare_reader.txt"
    pkill -f "harness emulate --replicas 1 --profile fixed-50ms-10ms --port 1808" ;;
  esac
done
