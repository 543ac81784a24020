"""Analysis arithmetic on hand-computed cases: tokens, energy, metrics, goodput, frontier, knee."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields

import pandas as pd
import pytest

from harness.analysis import KneeSearch, LevelResult, Point, analyze, load_run, pareto_frontier
from harness.analysis.energy import window_energy
from harness.analysis.synthetic import (
    ns,
    power_samples,
    request,
    samples_at,
    window,
    write_run,
)
from harness.analysis.tokens import tokens_in_window
from harness.errors import InputError
from harness.records.schema import GpuSample


def _df(records):
    return pd.DataFrame([r.to_dict() if hasattr(r, "to_dict") else r for r in records])


# ---------------------------------------------------------------------------------------------
# tokens in a window
# ---------------------------------------------------------------------------------------------
def test_tokens_split_across_window_edges():
    # first token at 1 s, end at 3 s, 5 tokens: 1 token at 1 s, 4 spread over (1, 3]
    df = _df([request("r1-c1", 1, 1, start_s=0.5, ttft_s=0.5, e2e_s=2.5, tokens=5)])
    assert tokens_in_window(df, ns(2), ns(4)) == pytest.approx(2.0)  # half of the 4
    assert tokens_in_window(df, ns(0), ns(2)) == pytest.approx(3.0)  # first + half of the 4
    assert tokens_in_window(df, ns(0), ns(10)) == pytest.approx(5.0)
    assert tokens_in_window(df, ns(3.5), ns(10)) == 0.0


def test_tokens_single_token_and_zero_span():
    df = _df(
        [
            request("r1-c1", 1, 1, start_s=0.0, ttft_s=1.0, e2e_s=1.0, tokens=3),
            request("r1-c1", 1, 1, start_s=0.0, ttft_s=None, e2e_s=0.2, tokens=0, error="connect"),
        ]
    )
    # all three tokens at t=1 s (span zero): counted where the first token fell
    assert tokens_in_window(df, ns(0.5), ns(1.5)) == pytest.approx(3.0)
    assert tokens_in_window(df, ns(1.5), ns(2.0)) == 0.0


# ---------------------------------------------------------------------------------------------
# energy
# ---------------------------------------------------------------------------------------------
def _samples(points, gpu=0, counter=None):
    """The sample frame window_energy reads; util 50 + t shows which samples a mean took."""
    rows = [
        asdict(g) for g in samples_at(points, gpu=gpu, counter_j=counter, util=lambda t: 50 + t)
    ]
    return pd.DataFrame(rows, columns=[f.name for f in fields(GpuSample)])


def test_power_integral_hand_computed():
    g = _samples([(0, 100), (1, 100), (2, 200), (3, 200), (4, 100)])
    e = window_energy(g, ns(0.5), ns(3.5))
    # 0.5..1: 50 J; 1..2: 150 J; 2..3: 200 J; 3..3.5: (200+150)/2*0.5 = 87.5 J
    assert e.energy_j == pytest.approx(487.5)
    assert e.source == "power-integral"
    assert e.mean_power_w == pytest.approx(162.5)
    assert e.coverage == pytest.approx(1.0)
    assert e.gpu_util_pct == pytest.approx((51 + 52 + 53) / 3)  # samples at 1, 2, 3 s


def test_window_counter_wins_over_samples():
    g = _samples([(0, 100), (1, 100), (2, 100)])
    e = window_energy(g, ns(0), ns(2), counter_j=400.0, counter_source="nvml-counter")
    assert (e.energy_j, e.source, e.mean_power_w) == (400.0, "window:nvml-counter", 200.0)


def test_sample_counter_interpolated_at_edges():
    g = _samples([(0, 100), (1, 100), (2, 100)], counter=[1000.0, 1100.0, 1300.0])
    e = window_energy(g, ns(0.5), ns(1.5))
    assert e.source == "sample-counter"
    assert e.energy_j == pytest.approx(1200.0 - 1050.0)


def test_two_gpus_sum():
    g = pd.concat([_samples([(0, 100), (2, 100)], gpu=0), _samples([(0, 50), (2, 150)], gpu=1)])
    e = window_energy(g, ns(0), ns(2), max_gap_s=5)
    assert e.energy_j == pytest.approx(200 + 200)


def test_missing_energy_no_samples_and_gap():
    e = window_energy(_samples([]), ns(0), ns(10))
    assert e.energy_j is None and e.source is None
    g = _samples([(t / 10, 100) for t in range(0, 41)])  # samples only in 0..4 s of 0..10 s
    e = window_energy(g, ns(0), ns(10), max_gap_s=1.0)
    assert e.energy_j is None
    assert e.coverage == pytest.approx(0.5)  # 0..4 plus 1 s held after the last sample
    assert "cover" in e.note


def test_partial_coverage_is_scaled_and_reported():
    g = _samples([(t / 10, 100) for t in range(0, 91)])  # 0..9 s of 0..10, held 1 s -> full
    e = window_energy(g, ns(0), ns(10), max_gap_s=0.5)
    assert e.coverage == pytest.approx(0.95)
    assert e.energy_j == pytest.approx(1000.0)  # 100 W over the covered part, scaled to 10 s
    assert "95%" in e.note


# ---------------------------------------------------------------------------------------------
# one cell from a run directory, hand-computed
# ---------------------------------------------------------------------------------------------
def _cell_run(tmp_path, *, with_power=True, counter=None):
    c = ("r1-c4", 1, 4)
    reqs = [
        # started before the window, ends inside: counts for throughput, not for distributions
        request(*c, start_s=9.0, ttft_s=0.2, e2e_s=2.0, tokens=10, request_id=0),
        request(*c, start_s=10.0, ttft_s=0.1, e2e_s=1.0, tokens=10, request_id=1),
        request(
            *c,
            start_s=11.0,
            ttft_s=0.2,
            e2e_s=2.0,
            tokens=10,
            request_id=2,
            replica="http://127.0.0.1:9001",
        ),
        request(*c, start_s=12.0, ttft_s=0.3, e2e_s=3.0, tokens=10, request_id=3),
        request(*c, start_s=13.0, ttft_s=None, e2e_s=0.5, tokens=0, request_id=4, error="http_5xx"),
        # ttft 0.9 s breaks the 0.5 s SLO bound: not good; ends after the window
        request(*c, start_s=19.0, ttft_s=0.9, e2e_s=2.0, tokens=10, request_id=5),
    ]
    wins = [
        window(*c, 8, 10, phase="warmup"),
        window(*c, 10, 20, energy_j=counter, energy_source="nvml-counter" if counter else None),
        window(*c, 20, 22, phase="cooldown"),
    ]
    samples = power_samples(8, 22, 10, lambda t: 150.0, util=lambda t: 40.0) if with_power else []
    return write_run(tmp_path / "run", requests=reqs, windows=wins, samples=samples)


def test_a_percentile_without_a_field_is_kept_beside_the_fields():
    """An SLO-only percentile (p999) has no CellMetrics field: ``put`` keeps it apart and ``get``
    finds it as it finds a field."""
    from harness.analysis.metrics import CellMetrics

    m = CellMetrics(run_id="r", cell="r1-c1", replicas=1, level=1, level_kind="concurrency",
                    start_ns=0, end_ns=1, duration_s=1.0)
    m.put("ttft_p99_s", 0.5)
    m.put("ttft_p999_s", 0.9)
    assert m.ttft_p99_s == 0.5 and m.extra_percentiles == {"ttft_p999_s": 0.9}
    assert (m.get("ttft_p99_s"), m.get("ttft_p999_s")) == (0.5, 0.9)


def test_cell_metrics_hand_computed(tmp_path):
    a = analyze(_cell_run(tmp_path))
    assert len(a.cells) == 1
    c = a.cells[0]
    assert c.duration_s == pytest.approx(10.0)
    assert (c.requests_started, c.requests_ok, c.requests_failed) == (5, 4, 1)
    assert c.error_rate == pytest.approx(0.2)
    assert c.errors == {"http_5xx": 1}
    # completions inside [10, 20): requests 0 (end 11), 1 (11), 2 (13), 3 (15); 5 ends at 21
    assert c.requests_completed == 4
    assert c.request_throughput_rps == pytest.approx(0.4)
    # goodput: 0.4 req/s x the share of ok requests sent in the window meeting ttft <= 0.5 s
    # (1, 2, 3 of 1, 2, 3, 5)
    assert c.goodput_rps == pytest.approx(0.4 * 3 / 4)
    assert c.good_fraction == pytest.approx(3 / 5)  # 1, 2, 3 of the 5 started
    # TTFT over ok started requests: 0.1, 0.2, 0.3, 0.9 -> p50 = 0.25, p99 = 0.3 + 0.97*0.6
    assert c.ttft_p50_s == pytest.approx(0.25)
    assert c.ttft_p99_s == pytest.approx(0.3 + 0.97 * 0.6)
    assert c.e2e_p50_s == pytest.approx(2.0)
    # tokens: req 0 first token 9.2 (outside), 9 others over (9.2, 11]: in [10, 20) 9*1.0/1.8 = 5
    # req 1, 2, 3: all 10; req 5: first at 19.9 (in) + 9 * 0.1/1.1
    expected = 5 + 30 + 1 + 9 * 0.1 / 1.1
    assert c.output_tokens == pytest.approx(expected)
    assert c.output_tokens_per_s == pytest.approx(expected / 10)
    # energy: 150 W for 10 s from the power integral
    assert c.energy_source == "power-integral"
    assert c.energy_j == pytest.approx(1500.0)
    assert c.mean_power_w == pytest.approx(150.0)
    assert c.j_per_token == pytest.approx(1500.0 / expected)
    assert c.tokens_per_j == pytest.approx(expected / 1500.0)
    assert c.gpu_util_pct == pytest.approx(40.0)
    # SLO: ttft p99 0.882 > 0.5 and error rate 20% > 5%
    assert c.slo_ok is False
    assert len(c.slo_failures) == 2
    assert a.recommendation.meets_slo is False
    assert a.exit_code() == 1
    assert "No configuration meets the SLO" in a.recommendation.sentence
    # per replica
    reps = {r.replica: r for r in c.per_replica}
    assert reps["http://127.0.0.1:9001"].requests_started == 1
    assert reps["http://127.0.0.1:9000"].requests_started == 4
    assert sum(r.token_share for r in c.per_replica) == pytest.approx(1.0)


def test_cell_energy_counter_and_missing(tmp_path):
    a = analyze(_cell_run(tmp_path, counter=1234.0))
    assert a.cells[0].energy_j == 1234.0
    assert a.cells[0].energy_source == "window:nvml-counter"
    b = analyze(_cell_run(tmp_path / "b", with_power=False))
    c = b.cells[0]
    assert c.energy_j is None and c.j_per_token is None and c.mean_power_w is None
    assert c.frontier == "frontier"  # single cell, energy left out of the objectives
    assert b.frontier.objectives == ["throughput", "latency"]


def test_all_error_cell(tmp_path):
    c = ("r2-c8", 2, 8)
    reqs = [
        request(*c, start_s=10 + i, ttft_s=None, e2e_s=0.1, tokens=0, error="connect", request_id=i)
        for i in range(5)
    ]
    path = write_run(
        tmp_path / "run",
        requests=reqs,
        windows=[window(*c, 10, 20)],
        samples=power_samples(9, 21, 10, lambda t: 80.0),
    )
    a = analyze(path)
    cell = a.cells[0]
    assert cell.error_rate == 1.0 and cell.errors == {"connect": 5}
    assert cell.output_tokens_per_s == 0.0 and cell.ttft_p99_s is None
    assert cell.j_per_token is None and cell.tokens_per_j == 0.0
    assert cell.energy_j == pytest.approx(800.0)
    assert cell.frontier == "excluded"
    assert cell.slo_ok is False
    assert a.exit_code() == 1
    a.write()  # summary.json / cells.csv still written
    assert (path / "summary.json").is_file() and (path / "cells.csv").read_text().count("\n") == 2


def test_resumed_cell_uses_last_window(tmp_path):
    c = ("r1-c2", 1, 2)
    reqs = [
        request(*c, start_s=1, ttft_s=5.0, e2e_s=6.0, tokens=4, request_id=0),  # first attempt
        request(*c, start_s=31, ttft_s=0.1, e2e_s=1.0, tokens=4, request_id=1),
    ]  # retry
    path = write_run(
        tmp_path / "run", requests=reqs, windows=[window(*c, 0, 10), window(*c, 30, 40)]
    )
    cell = analyze(path).cells[0]
    assert cell.start_ns == ns(30) and cell.ttft_p50_s == pytest.approx(0.1)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(InputError):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a run directory"):
        load_run(tmp_path / "empty")
    bad = write_run(tmp_path / "bad")
    (bad / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="manifest.json"):
        load_run(bad)


def test_unknown_latency_metric(tmp_path):
    with pytest.raises(InputError, match="unknown latency metric"):
        analyze(_cell_run(tmp_path), latency_key="ttft_p42_s")


# ---------------------------------------------------------------------------------------------
# Pareto frontier
# ---------------------------------------------------------------------------------------------
def test_frontier_single_cell():
    f = pareto_frontier([Point("a", 10, 1.0, 0.1)])
    assert f.status == {"a": "frontier"} and f.objectives == [
        "throughput",
        "latency",
        "j_per_token",
    ]


def test_frontier_ties_both_stay():
    f = pareto_frontier([Point("a", 10, 1.0, 0.1), Point("b", 10, 1.0, 0.1)])
    assert f.status == {"a": "frontier", "b": "frontier"}


def test_frontier_equal_throughput_lower_latency_dominates():
    f = pareto_frontier([Point("a", 100, 1.0, 0.1), Point("b", 100, 0.5, 0.1)])
    assert f.status == {"a": "dominated", "b": "frontier"} and f.dominated_by["a"] == ["b"]


def test_frontier_three_objectives():
    pts = [
        Point("a", 100, 1.0, 0.10),
        Point("b", 200, 2.0, 0.10),
        Point("c", 150, 3.0, 0.20),
        Point("d", 50, 0.5, 0.30),
    ]
    f = pareto_frontier(pts)
    assert f.status == {"a": "frontier", "b": "frontier", "c": "dominated", "d": "frontier"}
    assert f.dominated_by["c"] == ["b"]


def test_frontier_energy_objective_matters():
    pts = [Point("a", 100, 1.0, 0.05), Point("b", 200, 0.5, 0.10)]
    assert pareto_frontier(pts).status == {"a": "frontier", "b": "frontier"}
    assert pareto_frontier(pts, use_energy=False).status == {"a": "dominated", "b": "frontier"}


def test_frontier_missing_energy_drops_objective():
    f = pareto_frontier(
        [Point("a", 100, 1.0, None), Point("b", 200, 2.0, 0.05), Point("c", 50, 3.0, 0.01)]
    )
    assert f.objectives == ["throughput", "latency"]
    assert f.status == {"a": "frontier", "b": "frontier", "c": "dominated"}
    assert "a" in f.notes[0]


def test_frontier_excludes_cells_without_successes():
    f = pareto_frontier([Point("a", 0.0, None, None), Point("b", 10, 1.0, 0.1)])
    assert f.status == {"a": "excluded", "b": "frontier"}
    assert f.objectives == ["throughput", "latency", "j_per_token"]


# ---------------------------------------------------------------------------------------------
# recommendation across cells
# ---------------------------------------------------------------------------------------------
def _two_cell_run(tmp_path, ttft_r2):
    reqs, wins, samples = [], [], []
    for k, (cell, reps, lvl, ttft) in enumerate([("r1-c4", 1, 4, 0.1), ("r2-c4", 2, 4, ttft_r2)]):
        t0 = 100 * k
        for i in range(10):
            reqs.append(
                request(
                    cell,
                    reps,
                    lvl,
                    start_s=t0 + i,
                    ttft_s=ttft,
                    e2e_s=1.0,
                    tokens=10 * reps,
                    request_id=100 * k + i,
                )
            )
        wins.append(window(cell, reps, lvl, t0, t0 + 10))
        samples += power_samples(t0 - 1, t0 + 11, 10, lambda t, r=reps: 100.0 + 20 * r)
    return write_run(tmp_path / f"run{ttft_r2}", requests=reqs, windows=wins, samples=samples)


def test_recommendation_picks_highest_throughput_meeting_slo(tmp_path):
    a = analyze(_two_cell_run(tmp_path, ttft_r2=0.2))
    assert [c.slo_ok for c in a.cells] == [True, True]
    assert a.recommendation.cell == "r2-c4" and a.exit_code() == 0
    s = a.recommendation.sentence
    assert s.startswith("Recommended: 2 replicas at concurrency 4 (r2-c4)")
    r2 = a.cell("r2-c4")
    assert (
        f"{r2.output_tokens_per_s:,.0f} output tok/s" in s and f"{r2.j_per_token:.3g} J/token" in s
    )
    # r2 more throughput but more latency: both on the frontier
    assert [c.frontier for c in a.cells] == ["frontier", "frontier"]
    b = analyze(_two_cell_run(tmp_path, ttft_r2=0.7))  # r2 breaks the 0.5 s TTFT bound
    assert b.recommendation.cell == "r1-c4" and b.exit_code() == 0


# ---------------------------------------------------------------------------------------------
# knee search for levels: auto
# ---------------------------------------------------------------------------------------------
def _drive(search, fn):
    results = []
    while (lvl := search.next_level(results)) is not None:
        thr, ok = fn(lvl)
        results.append(LevelResult(lvl, thr, ok))
    return [r.level for r in results]


def test_knee_explores_then_bisects():
    fn = lambda c: (min(c * 100, 1000), c <= 24)  # noqa: E731 - saturates at 10, SLO breaks above 24
    assert _drive(KneeSearch(max_cells=8), fn) == [1, 2, 4, 8, 16, 32, 11, 9]
    assert _drive(KneeSearch(max_cells=20), fn) == [1, 2, 4, 8, 16, 32, 11, 9, 10]


def test_knee_flat_throughput_stops_early():
    assert _drive(KneeSearch(), lambda c: (500.0, True)) == [1, 2]


def test_knee_respects_max_level_and_rates():
    levels = _drive(KneeSearch(start=0.5, max_level=3, integer=False), lambda c: (c * 10, True))
    assert levels == [0.5, 1.0, 2.0, 3.0]
    assert math.isclose(max(levels), 3.0)


def test_open_loop_late_send_counts_by_intended_time_and_itl_from_histogram(tmp_path):
    from hdrh.histogram import HdrHistogram

    c = ("r1-q2", 1, 2.0)
    late = request(*c, start_s=10.5, ttft_s=0.4, e2e_s=1.0, tokens=4, request_id=1)
    late.intended_ns = ns(9.9)  # the schedule wanted it before the window: not this window's
    late2 = request(*c, start_s=20.5, ttft_s=0.2, e2e_s=1.0, tokens=4, request_id=2)
    late2.intended_ns = ns(19.9)  # wanted inside the window, sent after it: this window's
    path = write_run(
        tmp_path / "run", requests=[late, late2], windows=[window(*c, 10, 20, kind="rate")]
    )
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in [10_000] * 90 + [50_000] * 10:  # ITL 10 ms x90, 50 ms x10
        h.record_value(v)
    enc = h.encode()
    (path / "histograms" / "r1-q2.json").write_text(
        json.dumps({"itl": enc.decode() if isinstance(enc, bytes) else enc})
    )
    cell = analyze(path).cells[0]
    assert cell.requests_started == 1 and cell.ttft_p50_s == pytest.approx(0.2)
    assert cell.level_label == "2 req/s"
    assert cell.itl_source == "hdr-histogram"
    assert cell.itl_p50_s == pytest.approx(0.010, rel=1e-3)
    assert cell.itl_p99_s == pytest.approx(0.050, rel=1e-3)


def test_recommendation_near_tie_in_throughput_goes_to_lower_energy():
    from harness.analysis.metrics import CellMetrics
    from harness.analysis.recommend import recommend

    def cell(name, reps, tps, j, ttft):
        return CellMetrics(
            run_id="x",
            cell=name,
            replicas=reps,
            level=64,
            level_kind="concurrency",
            start_ns=0,
            end_ns=10**10,
            duration_s=10,
            requests_ok=10,
            output_tokens_per_s=tps,
            j_per_token=j,
            ttft_p99_s=ttft,
            energy_source="power-integral",
            slo_ok=True,
        )

    cells = [
        cell("r1-c64", 1, 1000.0, 0.16, 0.2),
        cell("r2-c64", 2, 1015.0, 0.18, 0.2),
        cell("r4-c64", 4, 900.0, 0.10, 0.1),
    ]
    # r2 is 1.5% faster than r1 (inside the 2% tie) but costs more energy: r1 wins
    assert recommend(cells, None, "ttft_p99_s").cell == "r1-c64"
    cells[1].output_tokens_per_s = 1030.0  # 3% faster: r2 wins
    assert recommend(cells, None, "ttft_p99_s").cell == "r2-c64"
