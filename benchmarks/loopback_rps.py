"""Receive packet steering on loopback for the speed benchmarks (``--rps``): the measured
process's core does only its own work, as it would with its peer on another host.

On loopback the kernel runs the receiving socket's TCP work (delivery, ACK processing, the
reader's wake-up) inside the sender's ``send(2)``, on the sender's core. An emulator's token
write is charged the client's receive; a reader's ACK is charged the server's ACK processing
(10-20% of the generator's core at 100k tokens/s, measured on 16-core Xeon VMs). Between two
hosts the receiving host does that work. RPS on ``lo`` hands each loopback packet's receive to a
core of a mask; here the mask is every core but the measured one. It needs root (a write under
/sys); the old masks are put back on exit.
"""

from __future__ import annotations

import glob
import os
import sys
from contextlib import contextmanager
from pathlib import Path

PATTERN = "/sys/class/net/lo/queues/rx-*/rps_cpus"


def mask_without(core: int, ncpu: int | None = None) -> str:
    """The ``rps_cpus`` text for every core but ``core``: hex, in comma-separated 32-bit groups."""
    n = ncpu or os.cpu_count() or 1
    bits = sum(1 << c for c in range(n) if c != core)
    groups = []
    while True:
        groups.append(f"{bits & 0xFFFFFFFF:08x}")
        bits >>= 32
        if not bits:
            break
    return ",".join(reversed(groups))


@contextmanager
def steer_loopback(measured_core: int | None):
    """Within the block, loopback packets are received on every core but ``measured_core``
    (None: nothing changes). Exits with code 2 and the reason when the mask cannot be set."""
    if measured_core is None:
        yield None
        return
    paths = sorted(glob.glob(PATTERN))
    if not paths:
        print(f"--rps: no {PATTERN} on this machine (not Linux, or no RPS in its kernel)", file=sys.stderr)
        raise SystemExit(2)
    mask = mask_without(measured_core)
    old = {p: Path(p).read_text().strip() for p in paths}
    try:
        for p in paths:
            try:
                Path(p).write_text(mask)
            except OSError as e:
                print(f"--rps: cannot write {p} ({e.strerror}); run as root, or leave --rps out", file=sys.stderr)
                raise SystemExit(2) from None
        print(f"# loopback RPS: packets received on cores {mask} (every core but {measured_core})", flush=True)
        yield mask
    finally:
        for p, m in old.items():
            try:
                Path(p).write_text(m)
            except OSError:
                pass
