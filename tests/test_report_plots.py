"""The report's trade-off figures, read back from the matplotlib artists: the frontier as a line on
every plane of the three objectives with the third as colour, 95% interval bars on both axes,
invalid cells crossed out and off the line, the SLO bound drawn only where it does not squeeze
the data; and the page in headless Chromium, every figure decoded."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from harness.analysis import analyze
from harness.analysis.synthetic import SCENARIO_YAML, ModelCell, plausible_run
from harness.report import objectives as obj
from harness.report import write_report
from harness.report.slo_mark import set_limits
from harness.report.tradeoffs import projection_figure
from tests.support.cells import CELLS

BROKEN = "r2-c16"   # a frontier cell without failures; the fixture fails 40% of its requests


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same modeled run twice: as measured, and with BROKEN's window 40% failed under a
    validity threshold that makes that invalid."""
    d = tmp_path_factory.mktemp("planes")
    good = plausible_run(d / "good", CELLS, duration_s=5, warmup_s=1, cooldown_s=0.5)
    bad = plausible_run(d / "bad", CELLS, duration_s=5, warmup_s=1, cooldown_s=0.5,
                        scenario_yaml=SCENARIO_YAML + "validity: {error_share_invalid: 0.2}\n")
    p = bad / "requests.parquet"
    req = pd.read_parquet(p)
    hit = req.index[(req["cell"] == BROKEN) & (req["phase"] == "measure")][::5]
    hit = hit.union(req.index[(req["cell"] == BROKEN) & (req["phase"] == "measure")][1::5])
    req.loc[hit, "error_class"] = "http_5xx"
    req.to_parquet(p)
    return analyze(good), analyze(bad)


def planes(a):
    lat, tput, en = obj.latency(a), obj.throughput(), obj.energy()
    return [(lat, tput, en), (tput, en, lat), (lat, en, tput), (tput, obj.per_user_speed(), en)]


def _artist(ax, gid):
    found = [x for x in list(ax.lines) + list(ax.collections) if x.get_gid() == gid]
    return found[0] if found else None


def test_every_plane_draws_the_frontier_as_a_line_with_the_third_objective_as_colour(runs):
    a, _ = runs
    frontier = [c for c in a.cells if c.frontier == "frontier"]
    assert len(frontier) >= 2 and any(c.frontier == "dominated" for c in a.cells)
    for x, y, colour in planes(a):
        fig = projection_figure(a, x, y, colour, "t")
        ax, bar = fig.axes
        line = _artist(ax, "frontier")
        assert line is not None, (x.name, y.name)
        want = sorted((x.value(c), y.value(c)) for c in frontier)
        assert list(zip(line.get_xdata(), line.get_ydata())) == want
        # the colour bar spans the third objective of every cell and names it
        assert bar.get_ylabel().startswith(colour.label)
        lo, hi = bar.get_ylim()
        vals = [colour.value(c) for c in a.cells]
        assert lo == pytest.approx(min(vals)) and hi == pytest.approx(max(vals))
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "Pareto frontier (3 objectives)" in legend and "1 replica" in legend
        assert "recommended" in legend and _artist(ax, "recommended") is not None
        # interval bars on both axes where a repeat (here: the requests' bootstrap) gave one
        bars = [e for e in ax.containers if e.has_xerr and e.has_yerr]
        assert len(bars) == len(a.cells)


def test_latency_is_in_ms_on_every_plane(runs):
    a, _ = runs
    c = a.cells[0]
    fig = projection_figure(a, obj.latency(a), obj.throughput(), obj.energy(), "t")
    assert fig.axes[0].get_xlabel() in ("TTFT p99 (ms)", "TTFT p99 (ms, log scale)")
    pts = fig.axes[0].collections[0].get_offsets()
    assert pts[0][0] == pytest.approx(c.ttft_p99_s * 1000)


def test_an_invalid_cell_is_crossed_out_and_never_on_the_frontier_line(runs):
    _, a = runs
    broken = a.cell(BROKEN)
    assert broken.verdict == "invalid" and broken.frontier == "invalid", broken.verdict_reasons
    for x, y, colour in planes(a):
        ax = projection_figure(a, x, y, colour, "t").axes[0]
        cross = _artist(ax, "invalid")
        assert cross is not None
        assert [tuple(p) for p in cross.get_offsets()] == [(x.value(broken), y.value(broken))]
        line = _artist(ax, "frontier")
        assert (x.value(broken), y.value(broken)) not in set(zip(line.get_xdata(), line.get_ydata()))
        assert "invalid: off the frontier" in [t.get_text() for t in ax.get_legend().get_texts()]


def _axes():
    return Figure().add_subplot()


def test_an_slo_far_beyond_the_data_is_a_note_at_the_edge_not_a_squeezed_axis():
    ax = _axes()
    assert set_limits(ax, "x", 50, 300, slo=5000) == "edge"
    assert ax.get_xlim() == (50, 300)
    assert [t.get_text() for t in ax.texts] == ["SLO 5,000 ms →"]
    ax = _axes()
    assert set_limits(ax, "x", 200, 300, slo=10) == "edge"
    assert ax.get_xlim() == (200, 300) and "every cell is beyond it" in ax.texts[0].get_text()


def test_an_slo_near_the_data_is_a_line_inside_the_axis():
    ax = _axes()
    assert set_limits(ax, "x", 50, 300, slo=320) == "line"
    lo, hi = ax.get_xlim()
    assert lo == 50 and 320 < hi < 50 + 1.5 * 250
    (line,) = ax.lines
    assert list(line.get_xdata()) == [320, 320]
    ax = _axes()
    assert set_limits(ax, "y", 50, 300, slo=200) == "line" and ax.get_ylim() == (50, 300)


def test_the_report_plane_keeps_the_axis_to_the_data(runs):
    """The synthetic SLO (TTFT p99 <= 500 ms) lies inside the cells' latencies: drawn as a line,
    the axis no wider than the cells and their intervals (with a margin)."""
    a, _ = runs
    ax = projection_figure(a, obj.latency(a), obj.throughput(), obj.energy(), "t").axes[0]
    lats = [c.ttft_p99_s * 1000 for c in a.cells]
    ends = [v * 1000 for c in a.cells for v in c.intervals["ttft_p99_s"]] + lats
    assert min(lats) < 500 < max(lats)
    assert any(list(ln.get_xdata()) == [500, 500] for ln in ax.lines)
    lo, hi = ax.get_xlim()
    assert min(ends) * 0.7 < lo < min(ends) and max(ends) < hi < max(ends) * 1.7


def test_chromium_decodes_every_figure_and_shows_the_frontier_captions(runs, tmp_path):
    from stack_support import Chromium

    _, a = runs   # the run with an invalid cell
    _, paths = write_report(a, out_dir=tmp_path)
    with Chromium(tmp_path / "chromium") as browser:
        browser.get(paths.html.as_uri())
        imgs = browser.script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        caps = browser.script(
            "return [...document.querySelectorAll('#tradeoffs figcaption')].map(f => f.innerText);")
        badges = browser.script(
            "return [...document.querySelectorAll('#cells tbody tr')].map(r => [r.cells[0].innerText,"
            " r.cells[1].querySelector('.badge').innerText,"
            " getComputedStyle(r.cells[1].querySelector('.badge')).backgroundColor]);")
    alts = [i[0] for i in imgs]
    assert alts[:4] == ["throughput vs latency", "J/token vs throughput", "J/token vs latency",
                        "interactivity"]
    assert {"latency CDFs per cell", "power and tokens/s timeline"} <= set(alts)
    for alt, complete, w, h in imgs:
        assert complete and w > 300 and h > 200, alt
    assert len(caps) == 4 and all("frontier as a black line" in c and "colour:" in c for c in caps)
    # a coloured verdict badge beside each cell's name
    assert [b[:2] for b in badges] == [[c.cell, c.verdict] for c in a.cells]
    assert [BROKEN, "invalid"] in [b[:2] for b in badges]
    colours = {"valid": "rgb(46, 125, 50)", "warn": "rgb(239, 108, 0)", "invalid": "rgb(198, 40, 40)"}
    assert all(b[2] == colours[b[1]] for b in badges)


def test_the_comparison_plane_carries_both_runs_interval_bars(runs):
    from harness.report.tradeoffs import compare_figure

    a, b = runs
    ax = compare_figure(a, b).axes[0]
    bars = [e for e in ax.containers if e.has_xerr and e.has_yerr]
    assert len(bars) == len(a.cells) + len([c for c in b.cells if c.ttft_p99_s is not None])
    assert ax.get_ylabel() == "TTFT p99 (ms)"


def test_a_power_line_breaks_across_a_gap_in_the_samples():
    from harness.report.timeseries import with_gaps

    t = [0.0, 0.05, 0.1, 0.15, 5.0, 5.05]   # 20 Hz, then nothing for ~5 s (replicas restarting)
    ts, vs = with_gaps(t, [1, 2, 3, 4, 5, 6])
    assert list(ts[:4]) == t[:4] and np.isnan(ts[4]) and np.isnan(vs[4]) and list(ts[5:]) == t[4:]
    ts, _ = with_gaps([0, 1, 2, 3, 4], [1, 1, 1, 1, 1])   # 1 Hz throughout: no gap
    assert not np.isnan(ts).any()


def test_cell_names_above_the_timeline_stand_upright_only_when_they_would_overlap():
    from harness.report.timeline import Timeline
    from harness.report.timeseries import shade_phases

    def names(n_cells, cell_s):
        phases = [(f"r4-c256-n{i}", "measure", i * cell_s, i * cell_s + cell_s * 0.6)
                  for i in range(n_cells)]
        tl = Timeline(0, 1.0, np.zeros(0), np.zeros(0), {}, phases)
        ax = _axes()
        shade_phases([ax], tl, ax, width_in=11.5)
        return [t.get_rotation() for t in ax.texts]

    assert names(6, 8.0) == [0.0] * 6          # the demo: six names side by side
    assert names(27, 30.0) == [90.0] * 27      # 27 windows of a sweep with repeats


def test_the_ttft_cdf_shows_the_slo_bound_as_a_ring_at_its_percentile(runs):
    from harness.report.distributions import cdf_figure

    a, _ = runs   # SLO: TTFT p99 <= 500 ms; no TPOT bound
    ttft, tpot = cdf_figure(a).axes
    (ring,) = [ln for ln in ttft.lines if ln.get_gid() == "slo"]
    assert list(ring.get_xdata()) == [500.0] and list(ring.get_ydata()) == [0.99]
    lo, hi = ttft.get_xlim()
    assert lo < min(c.ttft_p50_s for c in a.cells) * 1000 and max(c.ttft_p99_s for c in a.cells) * 1000 < hi
    assert not [ln for ln in tpot.lines if ln.get_gid() == "slo"]
    assert "p99 SLO 500 ms" in [t.get_text().strip() for t in ttft.texts]


def test_latency_spread_over_decades_goes_on_a_log_axis(tmp_path):
    """One cell far past the knee (TTFT ~60x the others') must not push the rest into a corner."""
    cells = CELLS[:2] + [ModelCell(1, 64, 1250, 3.0, 190)]
    a = analyze(plausible_run(tmp_path / "run", cells, duration_s=5, warmup_s=1, cooldown_s=0.5))
    lats = [c.ttft_p99_s * 1000 for c in a.cells]
    assert max(lats) > 20 * min(lats)
    ax = projection_figure(a, obj.latency(a), obj.throughput(), obj.energy(), "t").axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "TTFT p99 (ms, log scale)"
    lo, hi = ax.get_xlim()
    assert lo < min(lats) and max(lats) < hi < 2 * max(lats)
    # the demo-like spread stays linear
    b = analyze(plausible_run(tmp_path / "b", CELLS[3:5], duration_s=5, warmup_s=1, cooldown_s=0.5))
    ax = projection_figure(b, obj.latency(b), obj.throughput(), obj.energy(), "t").axes[0]
    assert ax.get_xscale() == "linear"


def test_the_report_says_why_it_has_no_server_metrics_figure(runs, tmp_path):
    from harness.analysis.rundata import load_run
    from harness.report.html import render_html

    a, _ = runs
    assert "no /metrics samples in this run" in render_html(a)
    # a server whose gauges the report does not know (llama.cpp): its samples kept, named
    d = tmp_path / "llamacpp"
    shutil.copytree(a.run.path, d)
    t0 = int(a.cells[0].start_ns)
    pd.DataFrame({"ts_ns": [t0, t0 + 500_000_000] * 2,
                  "replica": ["http://127.0.0.1:9000"] * 4,
                  "name": ["llamacpp:requests_processing"] * 2 + ["llamacpp:kv_cache_usage_ratio"] * 2,
                  "labels": ["{}"] * 4, "value": [1.0, 2.0, 0.1, 0.2],
                  "run_id": ["synthetic"] * 4}).to_parquet(d / "server_metrics.parquet")
    assert len(load_run(d).server) == 4
    html = render_html(analyze(d))
    assert "the servers expose none of the gauges plotted" in html
    assert "4 samples of 2 series are in server_metrics.parquet" in html



def _heads(ax):
    return _r((ln.get_marker(), ln.get_xdata()[0], ln.get_ydata()[0])
              for ln in ax.lines if ln.get_gid() == "open-end")


def _r(heads):
    return sorted((m, round(float(hx), 6), round(float(hy), 6)) for m, hx, hy in heads)


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_an_open_interval_end_is_drawn_as_an_arrowhead_and_named_in_the_legend(runs):
    """A p99 the window's requests cannot bound stops at the slowest request; the plane must
    not draw that end as a closed bar."""
    import copy

    from harness.report.tradeoffs import OPEN_LABEL, compare_figure

    a, b = runs
    key = a.latency_key
    lat, tput, en, speed = obj.latency(a), obj.throughput(), obj.energy(), obj.per_user_speed()
    opened = [c for c in a.cells if c.intervals_open.get(key) == "upper"]
    assert opened, "the 5 s windows hold too few requests to bound a p99"
    # latency on x: a right-pointing head at each open interval's top, at the cell's height
    ax = projection_figure(a, lat, tput, en, "t").axes[0]
    assert _heads(ax) == _r((">", lat.interval(c)[1], tput.value(c)) for c in opened)
    assert OPEN_LABEL in _legend(ax)
    # latency on y: upward heads
    ax = projection_figure(a, tput, lat, en, "t").axes[0]
    assert _heads(ax) == _r(("^", tput.value(c), lat.interval(c)[1]) for c in opened)
    # a plane whose objectives are all bounded carries neither heads nor the legend phrase
    assert not any(c.intervals_open.get(k) for c in a.cells
                   for k in ("output_tokens_per_s", "j_per_token", "tpot_p50_s"))
    for x, y in ((tput, en), (tput, speed)):
        ax = projection_figure(a, x, y, lat, "t").axes[0]
        assert _heads(ax) == [] and OPEN_LABEL not in _legend(ax)
    # per-user speed is 1 / TPOT p50: a TPOT open above is a speed open below, a downward head
    slow = copy.deepcopy(a)
    c = slow.cells[0]
    c.intervals_open = {**c.intervals_open, "tpot_p50_s": "upper"}
    ax = projection_figure(slow, tput, speed, en, "t").axes[0]
    assert _heads(ax) == _r([("v", tput.value(c), speed.interval(c)[0])])
    # the comparison plane marks both runs' open ends
    ax = compare_figure(a, b).axes[0]
    n_open = sum(c.intervals_open.get(key) == "upper" for run in runs for c in run.cells
                 if c.ttft_p99_s is not None)
    assert [h[0] for h in _heads(ax)] == ["^"] * n_open and OPEN_LABEL in _legend(ax)
