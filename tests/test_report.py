"""The report: files written, numbers equal the analysis, self-contained HTML seen by real Chromium."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis import analyze
from harness.analysis.compare import COMPARED, compare, verdict
from harness.analysis.synthetic import (
    ModelCell,
    SCENARIO_YAML,
    plausible_run,
    request,
    window,
    write_run,
)
from harness.report import write_report
from harness.report.fmt import change, compared, ms
from tests.support.cells import CELLS
from tests.support.chromium import chromium as _chromium

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return plausible_run(
        tmp_path_factory.mktemp("rep") / "run", CELLS, duration_s=5, warmup_s=1, cooldown_s=0.5
    )


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A second run for compare: three of run_dir's cells (other timings), one cell of its own."""
    return plausible_run(
        tmp_path_factory.mktemp("cmp") / "other",
        CELLS[:3] + [ModelCell(4, 16, 1500, 0.1, 210)],
        duration_s=5,
        warmup_s=1,
        cooldown_s=0.5,
        seed=3,
        counter_windows=True,
        run_id="other-run",
    )


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_outputs_match_analysis(run_dir):
    a, paths = write_report(run_dir)
    summary = json.loads(paths.summary.read_text())
    assert summary["recommendation"]["sentence"] == a.recommendation.sentence
    assert [c["cell"] for c in summary["cells"]] == [c.cell for c in a.cells]
    for s, c in zip(summary["cells"], a.cells):
        assert s["output_tokens_per_s"] == pytest.approx(c.output_tokens_per_s)
        assert s["ttft_p99_s"] == pytest.approx(c.ttft_p99_s)
        assert s["j_per_token"] == pytest.approx(c.j_per_token)
        assert s["frontier"] == c.frontier
    rows = list(csv.DictReader(paths.csv.open()))
    assert [r["cell"] for r in rows] == [c.cell for c in a.cells]
    for r, c in zip(rows, a.cells):
        assert float(r["output_tokens_per_s"]) == pytest.approx(c.output_tokens_per_s)
        assert float(r["energy_j"]) == pytest.approx(c.energy_j)
        assert r["energy_source"] == "power-integral"
    assert (run_dir / "replicas.csv").read_text().count("\n") == 1 + sum(
        len(c.per_replica) for c in a.cells
    )
    # the modeled replica effect: at 64 streams two replicas deliver more than one
    assert a.cell("r2-c64").output_tokens_per_s > 1.3 * a.cell("r1-c64").output_tokens_per_s
    assert a.cell("r2-c64").frontier == "frontier"


def test_html_is_self_contained(run_dir):
    _, paths = write_report(run_dir)
    text = paths.html.read_text()
    assert not re.search(r"<(script|link|iframe)\b", text)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 6   # 3 trade-off planes, interactivity, latency CDFs, timeline (no server metrics)
    for b in imgs:
        assert base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n"


def test_chromium_renders_report_offline(run_dir, tmp_path):
    a, paths = write_report(run_dir)
    dom = _chromium(["--dump-dom", paths.html.as_uri()], tmp_path).stdout
    assert a.recommendation.sentence.replace("<=", "&lt;=") in dom
    assert dom.count('<tr class="') == len(a.cells)
    # every image decoded by the browser: naturalWidth > 0 shows in a script-free way via screenshot size
    shot = tmp_path / "shot.png"
    r = _chromium(
        ["--window-size=1400,2400", f"--screenshot={shot}", paths.html.as_uri()], tmp_path
    )
    assert shot.is_file(), r.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] == 2400 and img.shape[1] == 1400
    # not a blank page: plots and tables put many distinct colours on it
    assert (
        len({tuple(p) for p in (img[::7, ::7, :3] * 255).astype(int).reshape(-1, 3).tolist()}) > 50
    )


def test_report_cli_and_exit_codes(run_dir, tmp_path):
    r = _cli("report", str(run_dir), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert f"report: {tmp_path / 'out' / 'report.html'}" in r.stdout
    assert "Recommended: 2 replicas at concurrency 16 (r2-c16)" in r.stdout
    assert (tmp_path / "out" / "summary.json").is_file()
    # a stricter SLO that no cell meets: exit code 1 and the closest cell named
    strict = tmp_path / "strict"
    shutil.copytree(run_dir, strict)
    (strict / "scenario.yaml").write_text(SCENARIO_YAML.replace("p99: 0.5", "p99: 0.01"))
    r = _cli("report", str(strict), "-q")
    assert r.returncode == 1
    assert "No configuration meets the SLO (TTFT p99 <= 10 ms" in r.stdout
    r = _cli("report", str(tmp_path / "missing"))
    assert r.returncode == 2 and "run directory not found" in r.stderr


def test_compare_cli(run_dir, other_dir, tmp_path):
    r = _cli("compare", str(run_dir), str(other_dir), "--json", str(tmp_path / "cmp.json"))
    assert r.returncode == 0, r.stderr
    assert "only in A: r2-c4, r2-c16, r2-c64" in r.stdout and "only in B: r4-c16" in r.stdout
    # without --html no page is written and none is announced
    assert "comparison:" not in r.stdout and list(tmp_path.rglob("*.html")) == []
    d = json.loads((tmp_path / "cmp.json").read_text())
    a, b = analyze(run_dir), analyze(other_dir)
    c = next(x for x in d["cells"] if x["cell"] == "r1-c16")
    va, vb = a.cell("r1-c16").output_tokens_per_s, b.cell("r1-c16").output_tokens_per_s
    assert c["values"]["output_tokens_per_s"]["change"] == pytest.approx((vb - va) / va)
    assert b.cell("r4-c16").energy_source == "window:nvml-counter"


def test_compare_html(run_dir, other_dir, tmp_path):
    page = tmp_path / "cmp.html"
    r = _cli("compare", str(run_dir), str(other_dir), "--html", str(page))
    assert r.returncode == 0, r.stderr
    assert f"comparison: {page}" in r.stdout
    text = page.read_text()
    # self-contained: no scripts, no fetches, the figure inline
    assert not re.search(r"<(script|link|iframe)\b", text)
    assert not re.search(r'(src|href)="(https?:)?//', text)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 1 and base64.b64decode(imgs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = analyze(run_dir), analyze(other_dir)
    cmp = compare(a, b)
    assert (a.run_id, b.run_id) == ("synthetic", "other-run")
    assert f'id="run-a">{a.run_id}<' in text and f'id="run-b">{b.run_id}<' in text
    for sentence in (a.recommendation.sentence, b.recommendation.sentence):
        assert html.escape(sentence) in text
    assert "Cells only in A: r2-c4, r2-c16, r2-c64" in text and "Cells only in B: r4-c16" in text
    # one table per common cell; each metric's row holds A, B and the change as the console shows
    assert re.findall(r'<table class="cmp" id="cell-([^"]+)"', text) == [
        "r1-c4",
        "r1-c16",
        "r1-c64",
    ]
    for d in cmp.cells:
        table = text.split(f'id="cell-{d.cell}"', 1)[1].split("</table>", 1)[0]
        for col, label, higher in COMPARED:
            va, vb, ch = d.values[col]
            if va is None and vb is None:
                assert f">{label}<" not in table
                continue
            noise = d.noise.get(col)
            good = verdict(ch, higher, noise)
            cls = "" if good is None else f' class="{"good" if good else "bad"}"'
            ia, ib = d.intervals.get(col, (None, None))
            oa, ob = d.open_ends.get(col, ("", ""))
            ci = [f' <span class="ci">({compared(col, x[0])}–{"≥" if o == "upper" else ""}'
                  f'{compared(col, x[1])})</span>' if x else "" for x, o in ((ia, oa), (ib, ob))]
            assert (
                f'<td class="l">{label}</td><td>{compared(col, va)}{ci[0]}</td>'
                f"<td>{compared(col, vb)}{ci[1]}</td><td{cls}>{change(ch)}</td>"
                f'<td class="noise">{ {"within": "within (overlap)", "beyond": "beyond"}.get(noise, "")}</td>'
            ) in table
        assert f"<td>{d.frontier_a}</td><td>{d.frontier_b}</td>" in table
    # the modeled runs differ (r1-c16's TTFT p99 by over 30%), but a p99 of 64 requests is open
    # above its slowest request: within the intervals, not coloured; latency is in ms
    d16 = next(d for d in cmp.cells if d.cell == "r1-c16")
    assert abs(d16.values["ttft_p99_s"][2]) > 0.3 and d16.noise["ttft_p99_s"] == "within"
    assert a.cell("r1-c16").intervals_open["ttft_p99_s"] == "upper"
    ttft = a.cell("r1-c16").ttft_p99_s
    assert f"<td>{ms(ttft)} <span" in text and ms(ttft) == f"{ttft * 1000:,.0f}"


def test_chromium_renders_compare_offline(run_dir, other_dir, tmp_path):
    page = tmp_path / "cmp.html"
    assert _cli("compare", str(run_dir), str(other_dir), "--html", str(page)).returncode == 0
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    assert 'id="run-a">synthetic</b>' in dom and 'id="run-b">other-run</b>' in dom
    assert dom.count('<table class="cmp"') == 3
    assert dom.count('src="data:image/png;base64,') == 1


def test_report_without_energy_or_cells(tmp_path):
    c = ("r1-c2", 1, 2)
    path = write_run(
        tmp_path / "noenergy",
        requests=[
            request(*c, start_s=1 + i, ttft_s=0.1, e2e_s=0.5, tokens=8, request_id=i)
            for i in range(5)
        ],
        windows=[window(*c, 0, 10)],
    )
    a, paths = write_report(path)
    html = paths.html.read_text()
    assert "J/token vs throughput: nothing to plot" in html
    assert a.cells[0].energy_j is None and a.exit_code() == 0
    empty = write_run(tmp_path / "empty")
    a, paths = write_report(empty)
    assert a.cells == [] and a.exit_code() == 1
    assert "No cell was measured" in paths.html.read_text()
