"""What the speed benchmarks share about the machine they run on: a ``--variants`` entry's
environment, and one core's CPU ticks from /proc/stat (steal: the host of a virtual machine took
the core; softirq: the kernel's network work ran on it)."""

from __future__ import annotations

from pathlib import Path

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
