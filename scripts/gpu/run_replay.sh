#!/usr/bin/env bash
# The replay-fidelity benchmark (benchmarks/replay_fidelity.py) on a many-core host, from the
# repository root: the generator and the emulator each pinned to a core of their own.
#   GEN_CORE (default 14), EMU_CORE (default 15): the two cores; the script itself runs on
#   MAIN_CORE (default 13). REPLAY_ARGS: more arguments (default "--rates 200 500 1000").
# Writes $OUT/replay.txt: the host's facts, the command and the benchmark's table.
set -u
. scripts/device/env.sh
# the benchmark starts the emulator with PYTHONPATH set to the tree alone: a .pth file keeps the
# carried wheels in /tmp/site importable from any Python process there
[ -d /tmp/site ] && echo /tmp/site > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/zz-slm-site.pth"
gen=${GEN_CORE:-14} emu=${EMU_CORE:-15} main=${MAIN_CORE:-13}
cmd="taskset -c $main python3 benchmarks/replay_fidelity.py --gen-core $gen --emu-core $emu ${REPLAY_ARGS:---rates 200 500 1000}"
{ bash scripts/gpu/host_facts.sh
  echo "command: $cmd"
  echo "started: $(date -u +%FT%TZ)"
  $cmd 2>&1
  echo "exit: $?  finished: $(date -u +%FT%TZ)"; } | tee "$OUT/replay.txt"
