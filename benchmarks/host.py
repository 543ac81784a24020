"""What the speed benchmarks share about the machine they run on: a ``--variants`` entry's
environment, and one core's CPU ticks from /proc/stat (steal: the host of a virtual machine took
the core; softirq: the kernel's network work ran on it)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: /proc/stat's per-core columns, in order
TICKS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def variant_env(variant: str) -> dict[str, str]:
    """``"SLM_NATIVE=0 SLM_READER_WATCHDOG_MS=20"`` -> ``{"SLM_NATIVE": "0", ...}``."""
    return dict(kv.split("=", 1) for kv in variant.split())


def core_ticks(core: int | None) -> dict[str, int] | None:
    """The jiffies /proc/stat counts for ``core`` (None: not pinned, or no /proc/stat)."""
    if core is None:
        return None
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                return dict(zip(TICKS, (int(x) for x in line.split()[1:])))
    except OSError:
        pass
    return None


def core_share(t0: dict[str, int] | None, t1: dict[str, int] | None) -> tuple[float, float]:
    """(steal %, softirq %) of a core between two :func:`core_ticks` samples."""
    if not t0 or not t1:
        return 0.0, 0.0
    d = {k: t1[k] - t0[k] for k in TICKS}
    total = sum(d.values()) or 1
    return 100 * d["steal"] / total, 100 * d["softirq"] / total


#: A ``--variants`` entry's pseudo-variable for the benchmark itself, not the measured process:
#: hold every core's wake-up latency at this many microseconds for the run (see
#: :func:`cpu_latency`). ``BENCH_CPU_LATENCY_US=0`` keeps idle cores polling; ``none`` leaves
#: the machine's setting (``--rps`` holds 0 otherwise).
CPU_LATENCY_VAR = "BENCH_CPU_LATENCY_US"


def run_latency(variant: str, rps: bool) -> int | None:
    """The wake-up latency to hold for one run: the variant's, else 0 with ``--rps`` (the cores
    RPS hands packets to must be awake, as another host's would be), else none."""
    v = variant_env(variant).get(CPU_LATENCY_VAR, "0" if rps else "none")
    return None if v == "none" else int(v)


@contextmanager
def cpu_latency(us: int | None):
    """Within the block, no core enters an idle state slower to leave than ``us`` microseconds
    (PM QoS, ``/dev/cpu_dma_latency``; root). None: nothing changes.

    Why: with ``--rps`` the kernel hands loopback packets to other cores. An idle core has halted;
    on a virtual machine a halted vCPU gives its physical core back, and a packet handed to it
    waits until the host runs it again. With 0, idle cores poll, as on a latency-tuned host."""
    if us is None:
        yield None
        return
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError as e:
        raise SystemExit(f"{CPU_LATENCY_VAR}: cannot open /dev/cpu_dma_latency ({e.strerror}); run as root") from None
    try:
        os.write(fd, struct.pack("i", int(us)))
        yield us
    finally:
        os.close(fd)   # the request lasts while the file is open


def wait_file(path: Path, proc: subprocess.Popen, timeout: float = 30, hint: str = "") -> str:
    """The text of ``path`` once ``proc`` (a server the benchmark started) has written it (its
    port file, its results); exits with a message when ``proc`` ended or ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{path.name} was not written (process exit {proc.poll()}){hint}")
        time.sleep(0.05)
    return path.read_text()


def start_emulator(args: list[str], port_file: Path, *, prefix: list[str] | None = None,
                   env: dict[str, str] | None = None, log: Path | None = None,
                   stderr: int | None = subprocess.DEVNULL, cwd: Path | None = None,
                   ) -> tuple[subprocess.Popen, dict]:
    """``slm-harness emulate ARGS`` from this checkout on a free port, behind ``prefix`` (e.g.
    ``taskset``), with ``env`` added; stderr to ``log`` when given. Returns the process and its
    port file (``urls``, ``ports``) once written; exits when the emulator ended or 30 s passed."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [*(prefix or []), sys.executable, "-m", "harness", "emulate", "--port", "0",
           "--port-file", str(port_file), *args]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb") if log else stderr)
    hint = f": the emulator did not start; see {log}" if log else ": the emulator did not start"
    try:
        return proc, json.loads(wait_file(port_file, proc, hint=hint))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
