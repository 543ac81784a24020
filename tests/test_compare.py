"""``compare A B`` on two synthetic runs with differences known in advance: what differs in their
setup (workload, SLO, target, harness version, host hardware), and per cell whether a change is
beyond the two runs' 95% intervals or within them (console, JSON, HTML)."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.compare import compare, verdict
from harness.analysis.comparable import differences
from harness.analysis.rundata import load_run
from harness.analysis.summary import analyze
from harness.analysis.synthetic import SCENARIO_YAML, request, window, write_run
from tests.support.processes import ROOT, harness_env


HW_A = {"host": "box-a", "os": "Linux 6.1", "python": "3.11.7",
        "cpu": {"machine": "x86_64", "model": "AMD EPYC 9654", "usable_cores": 16,
                "logical_cores": 16, "governor": "performance"},
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "driver": "550.54",
                  "power_limit_w": 700.0}]}
# another host name and OS build: the same hardware
HW_A2 = {**HW_A, "host": "box-b", "os": "Linux 6.8"}
# same CPU model, fewer cores usable; another GPU power limit
HW_B = {**HW_A, "cpu": {**HW_A["cpu"], "usable_cores": 8},
        "gpus": [{**HW_A["gpus"][0], "power_limit_w": 500.0}]}

N = 40   # requests per cell, one every 0.4 s inside a 20 s measured window


def _cell(cell: str, level: int, ttft, run_id: str):
    reqs = [request(cell, 1, level, start_s=i * 0.4, ttft_s=ttft(i), e2e_s=1.0, tokens=11,
                    request_id=i, run_id=run_id) for i in range(N)]
    return reqs, [window(cell, 1, level, 0.0, 20.0, run_id=run_id)]


def _run(path: Path, run_id: str, *, shift: float, constant_ttft: float, scenario: str,
         hardware: dict, version: str) -> Path:
    # r1-c4: every request's TTFT is ``constant_ttft`` (a point interval);
    # r1-c16: TTFTs spread evenly over 0.05-0.44 s, shifted by ``shift``
    r4, w4 = _cell("r1-c4", 4, lambda i: constant_ttft, run_id)
    r16, w16 = _cell("r1-c16", 16, lambda i: 0.05 + 0.01 * i + shift, run_id)
    p = write_run(path, requests=r4 + r16, windows=w4 + w16, scenario_yaml=scenario, run_id=run_id)
    m = json.loads((p / "manifest.json").read_text())
    m["hardware"] = hardware
    m["versions"]["slm-harness"] = version
    (p / "manifest.json").write_text(json.dumps(m))
    return p


SCEN_B = SCENARIO_YAML.replace("ttft_s: {p99: 0.5}", "ttft_s: {p99: 1.0}") + \
    "workload: {output_tokens: {dist: fixed, value: 32}}\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    a = _run(d / "a", "run-a", shift=0.0, constant_ttft=0.10, scenario=SCENARIO_YAML,
             hardware=HW_A, version="0.1.0")
    a2 = _run(d / "a2", "run-a2", shift=0.02, constant_ttft=0.20, scenario=SCENARIO_YAML,
              hardware=HW_A2, version="0.1.0")
    b = _run(d / "b", "run-b", shift=0.02, constant_ttft=0.20, scenario=SCEN_B,
             hardware=HW_B, version="0.2.0")
    return a, a2, b


def test_setup_differences_are_listed_by_aspect(runs):
    a, a2, b = runs
    assert differences(load_run(a), load_run(a2)) == []   # host name and OS build are not hardware
    got = {(d.aspect, d.field, d.a, d.b) for d in differences(load_run(a), load_run(b))}
    assert got == {
        ("workload", "workload.output_tokens.value", 128, 32),
        ("slo", "slo.ttft_s.p99", 0.5, 1.0),
        ("harness version", "versions.slm-harness", "0.1.0", "0.2.0"),
        ("host hardware", "hardware.cpu.usable_cores", 16, 8),
        ("host hardware", "hardware.gpus[0].power_limit_w", 700.0, 500.0),
    }
    cmp = compare(analyze(a), analyze(b))
    assert not cmp.comparable
    assert cmp.differing_aspects() == ["workload", "slo", "harness version", "host hardware"]
    assert "the runs differ in workload, slo, harness version, host hardware" in cmp.notes[0]


def test_target_differences_come_from_the_scenario_and_the_servers(runs, tmp_path):
    a, _, _ = runs
    other = SCENARIO_YAML.replace("target: {launcher: {kind: emulator}}",
                                  "target: {protocol: openai-chat, launcher: {kind: emulator}}")
    c = _run(tmp_path / "c", "run-c", shift=0.0, constant_ttft=0.1, scenario=other,
             hardware=HW_A, version="0.1.0")
    m = json.loads((c / "manifest.json").read_text())
    m["servers"] = {"http://127.0.0.1:9000": {"model_id": "m", "version": "3.3.6"}}
    (c / "manifest.json").write_text(json.dumps(m))
    got = {(d.aspect, d.field, d.a, d.b) for d in differences(load_run(a), load_run(c))}
    assert got == {("target", "target.protocol", "tgi", "openai-chat"),
                   ("target", "target.servers[0].model_id", None, "m"),
                   ("target", "target.servers[0].version", None, "3.3.6")}


def test_each_change_is_within_or_beyond_the_intervals(runs):
    a, a2, _ = runs
    A, B = analyze(a), analyze(a2)
    cmp = compare(A, B)
    assert cmp.comparable and cmp.differences == []
    d4 = next(d for d in cmp.cells if d.cell == "r1-c4")
    d16 = next(d for d in cmp.cells if d.cell == "r1-c16")
    # r1-c4: TTFT 100 ms in every request of A, 200 ms in B: point intervals, far apart
    va, vb, ch = d4.values["ttft_p50_s"]
    assert (va, vb, ch) == (pytest.approx(0.10), pytest.approx(0.20), pytest.approx(1.0))
    assert d4.intervals["ttft_p50_s"] == (pytest.approx((0.10, 0.10)), pytest.approx((0.20, 0.20)))
    assert d4.noise["ttft_p50_s"] == "beyond" and verdict(ch, False, "beyond") is False
    # the same tokens in the same window in both runs: no change, intervals overlap
    assert d4.values["output_tokens_per_s"][2] == pytest.approx(0.0)
    assert d4.noise["output_tokens_per_s"] == "within"
    # r1-c16: TTFTs spread over 390 ms, shifted by 20 ms: p50 245 -> 265 ms (+8%, more than the
    # 5% rule's threshold), but the intervals of 40 requests overlap: within, not called worse
    va, vb, ch = d16.values["ttft_p50_s"]
    assert va == pytest.approx(0.245) and vb == pytest.approx(0.265)
    assert ch == pytest.approx(0.02 / 0.245)
    ia, ib = d16.intervals["ttft_p50_s"]
    assert ia[0] <= ib[1] and ib[0] <= ia[1]
    assert d16.noise["ttft_p50_s"] == "within" and verdict(ch, False, "within") is None
    assert verdict(ch, False) is False     # what the bare 5% rule would have said
    # a figure without intervals on either side is judged by the 5% rule alone
    assert d16.noise["error_rate"] is None


def test_cli_console_json_and_html(runs, tmp_path):
    a, _, b = runs
    env = harness_env()
    out_j, out_h = tmp_path / "c.json", tmp_path / "c.html"
    p = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b), "--json",
                        str(out_j), "--html", str(out_h)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Not like for like: the runs differ in workload, slo, harness version, host hardware" in p.stdout
    assert "slo: slo.ttft_s.p99: 0.5 vs 1.0" in p.stdout
    assert "host hardware: hardware.cpu.usable_cores: 16 vs 8" in p.stdout
    assert "beyond" in p.stdout and "within (overlap)" in p.stdout
    d = json.loads(out_j.read_text())
    assert d["comparable"] is False and d["differs_in"] == ["workload", "slo", "harness version",
                                                            "host hardware"]
    assert {"aspect": "slo", "field": "slo.ttft_s.p99", "a": 0.5, "b": 1.0} in d["differences"]
    c4 = next(c for c in d["cells"] if c["cell"] == "r1-c4")["values"]["ttft_p50_s"]
    assert c4["noise"] == "beyond" and c4["ci_a"] == pytest.approx([0.1, 0.1])
    c16 = next(c for c in d["cells"] if c["cell"] == "r1-c16")["values"]["ttft_p50_s"]
    assert c16["noise"] == "within"
    page = out_h.read_text()
    assert 'id="not-like-for-like"' in page
    assert (f'<td class="l">slo</td><td class="l">slo.ttft_s.p99</td>'
            f'<td class="l">0.5</td><td class="l">1.0</td>') in page
    t4 = page.split('id="cell-r1-c4"', 1)[1].split("</table>", 1)[0]
    assert ('<td class="l">TTFT p50 ms</td><td>100 <span class="ci">(100–100)</span></td>'
            '<td>200 <span class="ci">(200–200)</span></td><td class="bad">+100.0%</td>'
            '<td class="noise">beyond</td>') in t4
    # its p99 of a few requests: open above in both runs, shown so, and within (A's may be 200 ms)
    assert ('<td class="l">TTFT p99 ms</td><td>100 <span class="ci">(100–≥100)</span></td>'
            '<td>200 <span class="ci">(200–≥200)</span></td><td>+100.0%</td>'
            '<td class="noise">within (overlap)</td>') in t4
    p99 = next(c for c in d["cells"] if c["cell"] == "r1-c4")["values"]["ttft_p99_s"]
    assert (p99["open_a"], p99["open_b"], p99["noise"]) == ("upper", "upper", "within")
    assert "open_a" not in c4
    t16 = page.split('id="cell-r1-c16"', 1)[1].split("</table>", 1)[0]
    row = t16.split('<td class="l">TTFT p50 ms</td>', 1)[1].split("</tr>", 1)[0]
    assert "<td>+8.2%</td>" in row and html.escape("within (overlap)") in row


def _strict(a: Path, b: Path, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    p = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b), "--strict",
                        "--json", str(out)], cwd=ROOT, env=harness_env(),
                       capture_output=True, text=True, timeout=120)
    return p, json.loads(out.read_text())


def test_strict_exit_codes_for_ci(runs, tmp_path):
    """``compare --strict``: 0 like for like and nothing worse, 1 B worse beyond the intervals
    (only in the regressing direction), 2 not like for like, 4 a cell invalid in either run."""
    a, a2, b = runs
    p, _ = _strict(a, a, tmp_path / "aa.json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "strict: exit 0: like for like" in p.stdout
    # r1-c4's TTFT 100 -> 200 ms with point intervals: worse, beyond; r1-c16's +8% is within
    p, d = _strict(a, a2, tmp_path / "aa2.json")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "r1-c4 TTFT p50 ms +100.0% (beyond the intervals)" in p.stdout
    # (its p99 of a few requests has open upper ends, A's may lie above 200 ms: not claimed)
    assert {(r["cell"], r["column"]) for r in d["regressions"]} == {("r1-c4", "ttft_p50_s")}
    # the same e2e with a later first token: TPOT is shorter, beyond the intervals, and better
    tpot = next(c for c in d["cells"] if c["cell"] == "r1-c4")["values"]["tpot_p50_s"]
    assert tpot["noise"] == "beyond" and tpot["change"] < -0.05
    # not like for like: 2 before any figure is looked at (A -> B is also 100 ms slower)
    p, d = _strict(a, b, tmp_path / "ab.json")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "strict: exit 2: not like for like: the runs differ in workload, slo" in p.stdout
    assert d["regressions"]
    # half of r1-c4's requests failed in C, over its validity limit: its verdict is invalid
    scen = SCENARIO_YAML + "validity: {error_share_invalid: 0.2}\n"
    base = _run(tmp_path / "base", "run-base", shift=0.0, constant_ttft=0.10, scenario=scen,
                hardware=HW_A, version="0.1.0")
    reqs = [request("r1-c4", 1, 4, start_s=i * 0.4, ttft_s=0.1, e2e_s=1.0, tokens=11,
                    request_id=i, run_id="run-c", error="http_500" if i % 2 else None)
            for i in range(N)]
    r16, w16 = _cell("r1-c16", 16, lambda i: 0.05 + 0.01 * i, "run-c")
    c = write_run(tmp_path / "c", requests=reqs + r16,
                  windows=[window("r1-c4", 1, 4, 0.0, 20.0, run_id="run-c")] + w16,
                  scenario_yaml=scen, run_id="run-c")
    m = json.loads((c / "manifest.json").read_text())
    m["hardware"], m["versions"]["slm-harness"] = HW_A, "0.1.0"
    (c / "manifest.json").write_text(json.dumps(m))
    p, d = _strict(base, c, tmp_path / "bc.json")
    assert p.returncode == 4, p.stdout + p.stderr
    assert d["invalid_cells"] == ["r1-c4"]
    assert "invalid measurement (its verdict) in r1-c4" in p.stdout
    # without --strict the comparison is only printed
    p = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(a2)], cwd=ROOT,
                       env=harness_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "strict:" not in p.stdout
