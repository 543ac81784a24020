"""benchmarks/tls_cost.py: both readers' inputs parse to every token, and the table prints."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tls_cost  # noqa: E402


def test_tls_cost_reads_every_token_both_ways(tmp_path, capsys):
    for proto in tls_cost.EVENTS:
        for tls in (False, True):
            assert tls_cost.measure(proto, 500, tls, tmp_path) > 0   # asserts all 500 tokens were read
    assert tls_cost.main(["--tokens", "300", "--repeat", "1"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and "us/token" not in ln]
    assert [r.split(" | ")[0] for r in rows] == ["| tgi", "| openai-chat"]
