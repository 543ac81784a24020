"""The report's table of a ``levels: auto`` search: each level in run order with its throughput,
TTFT p50 and the knee signals it fired, read back from the rendered HTML."""

from __future__ import annotations

import html
import json
import re

from harness.analysis import analyze
from harness.analysis.knee import LevelResult
from harness.analysis.synthetic import SCENARIO_YAML, ModelCell, plausible_run
from harness.report.html import render_html

AUTO_YAML = SCENARIO_YAML.replace("levels: [4, 16]", "levels: auto, auto_min_gain: 0.1")
CELLS = [ModelCell(1, 4, 400, 0.05, 150), ModelCell(1, 16, 900, 0.2, 170),
         ModelCell(1, 64, 960, 0.9, 190), ModelCell(1, 32, 940, 0.4, 180)]


def _table(page: str) -> list[list[str]]:
    body = re.search(r'<table id="auto-search">(.*?)</table>', page, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", td) for td in re.findall(r"<t[dh]>(.*?)</t[dh]>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_the_search_table_lists_each_level_in_run_order_with_the_signals_it_fired(tmp_path):
    run = plausible_run(tmp_path / "auto", CELLS, duration_s=5, warmup_s=1, cooldown_s=0.5,
                        scenario_yaml=AUTO_YAML)
    levels = [LevelResult(4, 400.0, True, 0.040, 0.010),
              LevelResult(16, 900.0, True, 0.080, 0.011),
              # +6.7% over 16 streams: under the scenario's 10% minimum gain; TTFT p50 x10 for x4
              LevelResult(64, 960.0, False, 0.800, 0.012, True, "TTFT +300.0 ms/s"),
              LevelResult(32, 940.0, True, 0.100, 0.011)]
    mf = run / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["auto_results"] = {"1": [x.to_json() for x in levels]}
    mf.write_text(json.dumps(manifest))
    a = analyze(run)
    page = render_html(a)
    head, *rows = _table(page)
    assert head == ["replicas", "level", "output tokens/s", "TTFT p50 ms", "signals"]
    assert [r[:4] for r in rows] == [["1", "4 streams", "400", "40"], ["1", "16 streams", "900", "80"],
                                     ["1", "64 streams", "960", "800"], ["1", "32 streams", "940", "100"]]
    assert rows[0][4] == "–" and rows[1][4] == "–"
    assert rows[2][4] == ("SLO broken; over-saturated (TTFT +300.0 ms/s); latency super-linear "
                          "(TTFT p50 x10 for x4 load); throughput gain under 10%")
    # 32 streams against 16: +4.4%, under 10%; TTFT x1.2 for x2 is no super-linear growth
    assert rows[3][4] == "throughput gain under 10%"
    # under it, why the search stopped: summary.json's sentence
    stopped = a.to_summary()["auto_search"]["1"]["stopped"]
    assert stopped.startswith("the SLO broke at 64 streams")
    assert f"<li>1 replica(s): {html.escape(stopped)}</li>" in page


def test_a_run_with_fixed_levels_has_no_search_table(tmp_path):
    run = plausible_run(tmp_path / "fixed", CELLS[:2], duration_s=5, warmup_s=1, cooldown_s=0.5)
    page = render_html(analyze(run))
    assert 'id="auto-search"' not in page and "The knee search" not in page
