#!/usr/bin/env bash
# pyspy_profile.sh PID NAME: sample process PID with py-spy for 6 s (250 Hz, non-blocking), print
# its user/system CPU over those seconds and the busiest lines (own) and frames (cumulative).
# The raw samples stay in $OUT/NAME.raw. PYSPY_ARGS=--native adds C frames (syscalls, clock reads). Used by profile_gen.sh and profile_emu.sh.
set -u
pid=$1; name=$2
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
mode=--nonblocking; case "${PYSPY_ARGS:-}" in *--native*) mode= ;; esac   # native frames need pauses
py-spy record -p "$pid" -d 6 -r 250 $mode ${PYSPY_ARGS:-} -f raw -o "$OUT/$name.raw" > "$OUT/$name.pyspy.log" 2>&1 || tail -3 "$OUT/$name.pyspy.log"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
echo "$name CPU over the profile: user $((u1 - u0)) ticks, system $((s1 - s0)) ticks (of $((6 * $(getconf CLK_TCK))))"
python3 - "$OUT/$name.raw" <<'EOP'
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
