"""Bootstrap intervals on cases small enough to compute by hand, repeats pooled, and the frontier
and recommendation calling overlapping intervals ties."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.intervals import WindowSample, bootstrap, overlaps
from harness.analysis.metrics import CellMetrics
from harness.analysis.pareto import Point, pareto_frontier
from harness.analysis.recommend import recommend
from harness.analysis.repeats import config_of, repeat_of


def sample(credits, ttft, energy=None, dur=1.0, ended=None):
    c = np.asarray(credits, dtype=float)
    t = np.asarray(ttft, dtype=float)
    return WindowSample(dur, c, np.ones_like(c) if ended is None else np.asarray(ended, float),
                        np.ones(len(t)), {"ttft": t, "tpot": t / 10, "e2e": t * 2}, energy)


def test_identical_requests_give_a_point_interval():
    ci, method = bootstrap([sample([5.0] * 40, [0.2] * 40, energy=100.0)], "c")
    assert method == "requests"
    assert ci["output_tokens_per_s"] == (200.0, 200.0)
    assert ci["request_throughput_rps"] == (40.0, 40.0)
    assert ci["j_per_token"] == (0.5, 0.5)
    assert ci["ttft_p99_s"] == pytest.approx((0.2, 0.2))


def test_two_requests_by_hand():
    # resampling 2 of {10, 30}: sums 20 (1/4), 40 (1/2), 60 (1/4): the 2.5..97.5 % range is 20..60
    ci, _ = bootstrap([sample([10.0, 30.0], [0.1, 0.3])], "two", resamples=2000)
    assert ci["output_tokens_per_s"] == (20.0, 60.0)
    # the p50 of a resample of {0.1, 0.3}: 0.1, 0.2 or 0.3
    assert ci["ttft_p50_s"] == pytest.approx((0.1, 0.3))


def test_repeats_are_resampled_before_requests():
    # repeat A: 100 tok/s, TTFT 0.1 s every request; repeat B: 200 tok/s, TTFT 0.3 s. Drawing 2
    # repeats: means 100 (1/4), 150 (1/2), 200 (1/4); the pooled TTFT p50: 0.1, 0.2 or 0.3
    a = sample([10.0] * 10, [0.1] * 10)
    b = sample([20.0] * 10, [0.3] * 10)
    ci, method = bootstrap([a, b], "r1-c8", resamples=2000)
    assert method == "repeats+requests"
    assert ci["output_tokens_per_s"] == (100.0, 200.0)
    assert ci["ttft_p50_s"] == pytest.approx((0.1, 0.3))
    # seeded by the cell's name: the same answer twice
    assert bootstrap([a, b], "r1-c8", resamples=200) == bootstrap([a, b], "r1-c8", resamples=200)


def test_overlap_and_repeat_names():
    assert overlaps((1, 2), (2, 3)) and not overlaps((1, 2), (2.1, 3)) and not overlaps(None, (1, 2))
    assert config_of("r2-c64-n3") == "r2-c64" and repeat_of("r2-c64-n3") == 3
    assert config_of("r1-q7.5") == "r1-q7.5" and repeat_of("r1-q7.5") == 1


def test_frontier_calls_a_win_inside_the_intervals_a_tie():
    a = Point("A", 100.0, 0.5, 0.1, {"throughput": (90, 110), "latency": (0.4, 0.6), "j_per_token": (0.09, 0.11)})
    b = Point("B", 105.0, 0.5, 0.1, {"throughput": (95, 115), "latency": (0.4, 0.6), "j_per_token": (0.09, 0.11)})
    fr = pareto_frontier([a, b])
    assert fr.status == {"A": "frontier", "B": "frontier"} and fr.ties == {"A": ["B"]}
    assert any("A is on the frontier as a tie: B is better only within the intervals" in n for n in fr.notes)
    # clear of A's interval on throughput: B dominates
    c = Point("C", 130.0, 0.5, 0.1, {"throughput": (120, 140), "latency": (0.4, 0.6), "j_per_token": (0.09, 0.11)})
    fr = pareto_frontier([a, c])
    assert fr.status["A"] == "dominated" and fr.dominated_by["A"] == ["C"]
    # without intervals exact values decide, as before
    fr = pareto_frontier([Point("A", 100.0, 0.5, 0.1), Point("B", 105.0, 0.5, 0.1)])
    assert fr.status["A"] == "dominated"


def _cell(name, tput, ci, jpt):
    return CellMetrics(run_id="r", cell=name, replicas=1, level=8, level_kind="concurrency", start_ns=0,
                       end_ns=1, duration_s=1.0, requests_ok=10, output_tokens_per_s=tput, j_per_token=jpt,
                       energy_source="window:nvml-counter", slo_ok=None,
                       intervals={"output_tokens_per_s": ci}, interval_method="repeats+requests")


def test_recommendation_names_ties_within_the_intervals():
    fast = _cell("r1-c64", 1000.0, (950.0, 1050.0), 0.2)
    frugal = _cell("r2-c64", 980.0, (960.0, 1000.0), 0.1)   # overlaps the fastest: a tie
    slow = _cell("r1-c8", 500.0, (480.0, 520.0), 0.05)
    rec = recommend([fast, frugal, slow], None, "ttft_p99_s")
    assert rec.cell == "r2-c64" and rec.ties == ["r1-c64"]
    assert "Tied on throughput within the repeats+requests intervals with r1-c64" in rec.sentence
    assert "(95% CI 960-1,000)" in rec.sentence


def test_a_recommendation_at_the_edge_of_the_tested_range_says_so():
    from harness.analysis.summary import edge_note

    cells = [_cell(f"r{r}-c{lv}", 100.0, (90, 110), 0.1) for r in (1, 2) for lv in (16, 64)]
    for c in cells:
        c.replicas, c.level = int(c.cell[1]), float(c.cell.split("-c")[1])
    assert edge_note("r2-c64", cells) == (
        "It is at the edge of the tested range, the highest load tried for 2 replica(s) "
        "(64 streams): add levels above 64 (e.g. 128 streams); the most replicas tried (2): try 4.")
    assert edge_note("r1-c16", cells) == ""
    assert edge_note("r1-c64", cells).endswith("(64 streams): add levels above 64 (e.g. 128 streams).")
    # the lowest level: below it when nothing met the SLO, between it and the next when that broke it
    assert edge_note("r1-c16", cells, meets=False) == (
        "It is at the edge of the tested range, the lowest load tried for 1 replica(s) "
        "(16 streams): try levels below 16 streams.")
    cells[1].slo_ok = False
    assert edge_note("r1-c16", cells) == (
        "It is at the edge of the tested range, the lowest load tried for 1 replica(s) (16 streams), "
        "and the SLO breaks at the next (64 streams): try levels between 16 and 64 streams.")
    # levels: auto names its settings, and says nothing when the search saw the knee at its top
    auto = {"1": {"stopped": "reached auto_max_level (64 streams) while ..."}}
    assert edge_note("r1-c64", cells, auto).endswith("(64 streams): raise load.auto_max_level above 64.")
    auto = {"1": {"stopped": "the cell budget (auto_max_cells 2) ran out while ..."}}
    assert edge_note("r1-c64", cells, auto).endswith(
        "(64 streams): raise load.auto_max_cells so the search goes above 64.")
    auto = {"1": {"stopped": "throughput stopped growing by 5% at 64 streams; ..."}}
    assert edge_note("r1-c64", cells[:2], auto) == ""


def test_the_knee_search_says_why_it_stopped():
    from harness.analysis.knee import KneeSearch, LevelResult as L

    ks = KneeSearch(max_level=64, max_cells=8)
    grew = [L(1, 10, True), L(2, 20, True), L(4, 40, True)]
    assert "the knee was not reached; raise load.auto_max_cells" in KneeSearch(max_cells=3).why_stopped(grew)
    at_max = [L(16, 10, True), L(32, 20, True), L(64, 40, True)]
    assert "reached auto_max_level (64 streams)" in ks.why_stopped(at_max)
    slo = [L(1, 10, True), L(2, 20, True), L(4, 25, False), L(3, 22, True)]
    text = ks.why_stopped(slo)
    assert text == ("the SLO broke at 4 streams; the knee was bracketed between 3 and 4 streams, "
                    "one step apart; highest throughput 22 tok/s at 3 streams within the SLO "
                    "(levels tried, in order: 1, 2, 4, 3)")
    flat = [L(1, 10, True), L(2, 20, True), L(4, 20.5, True)]
    assert ks.why_stopped(flat).startswith("throughput stopped growing by 5% at 4 streams")
