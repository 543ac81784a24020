"""benchmarks/loopback_rps.py: the RPS mask the speed benchmarks write for ``--rps``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

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
