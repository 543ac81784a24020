"""The speed benchmarks' machine helpers: the RPS mask ``--rps`` writes (benchmarks/loopback_rps.py),
``--variants`` environments, per-core ticks and the cores' wake-up latency (benchmarks/host.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from host import core_share, core_ticks, cpu_latency, run_latency, variant_env  # noqa: E402
from loopback_rps import mask_without, steer_loopback  # noqa: E402


def test_mask_leaves_out_the_measured_core_in_32_bit_groups():
    assert mask_without(4, 16) == "0000ffef"
    assert mask_without(0, 2) == "00000002"
    assert mask_without(1, 2) == "00000001"
    # more than 32 cores: comma-separated groups, most significant first, as the kernel reads them
    assert mask_without(1, 40) == "000000ff,fffffffd"
    assert mask_without(35, 40) == "000000f7,ffffffff"


def test_no_core_changes_nothing():
    with steer_loopback(None) as mask:
        assert mask is None


def test_variant_env_and_core_share():
    assert variant_env("") == {}
    assert variant_env("SLM_NATIVE=0  SLM_X=a=b") == {"SLM_NATIVE": "0", "SLM_X": "a=b"}
    t0 = dict(user=100, nice=0, system=50, idle=800, iowait=0, irq=0, softirq=10, steal=40)
    t1 = dict(user=140, nice=0, system=60, idle=820, iowait=0, irq=0, softirq=30, steal=50)
    steal, softirq = core_share(t0, t1)     # of 100 ticks: 10 steal, 20 softirq
    assert (round(steal, 6), round(softirq, 6)) == (10.0, 20.0)
    assert core_share(None, t1) == (0.0, 0.0)
    ticks = core_ticks(0)                   # this machine's first core, from /proc/stat
    assert ticks is not None and ticks["idle"] > 0 and set(ticks) >= {"steal", "softirq"}


def test_run_latency_defaults_to_polling_with_rps_and_a_variant_overrides_it():
    assert run_latency("", True) == 0
    assert run_latency("", False) is None
    assert run_latency("SLM_NATIVE=0 BENCH_CPU_LATENCY_US=none", True) is None
    assert run_latency("BENCH_CPU_LATENCY_US=20", False) == 20


def test_cpu_latency_holds_the_request_only_inside_the_block():
    """The kernel's PM QoS value (what /dev/cpu_dma_latency reads back) is the held one inside
    the block and the machine's own after it (the tests run as root, as the benchmarks do)."""
    import os
    import struct

    def current() -> int:
        fd = os.open("/dev/cpu_dma_latency", os.O_RDONLY)
        try:
            return struct.unpack("i", os.read(fd, 4))[0]
        finally:
            os.close(fd)

    before = current()
    with cpu_latency(None):
        assert current() == before
    with cpu_latency(0):
        assert current() == 0
    assert current() == before
