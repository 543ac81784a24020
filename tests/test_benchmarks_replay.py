"""benchmarks/replay_fidelity.py end to end at a low rate: the trace it writes is replayed in full,
every request received by the emulator, and the send-lag row printed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_replay_fidelity_prints_a_row_per_rate_with_every_request_sent_and_received():
    p = subprocess.run([sys.executable, "benchmarks/replay_fidelity.py", "--rates", "50", "--seconds", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    head, row = p.stdout.strip().splitlines()[-2:]
    assert "lag p50 ms" in head and "> 1 ms" in head
    rate, pacer, trace, sent, recv, err = row.split()[:6]
    assert rate == "50" and pacer == "timerfd" and int(trace) > 20 and trace == sent == recv and err == "0"
