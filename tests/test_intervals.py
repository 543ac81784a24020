"""Intervals on cases small enough to compute by hand (the bootstrap for rates, order statistics
for latency percentiles), repeats pooled, open ends, and the frontier and recommendation calling
overlapping intervals ties."""

from __future__ import annotations

import numpy as np
import pytest

from fractions import Fraction
from math import comb

from harness.analysis.intervals import (WindowSample, bootstrap, intervals, order_ranks, overlaps,
                                        quantile_interval, reach)
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
    # the p50 of two values: no order statistic bounds it at 95% (P(B=0) = P(B=2) = 1/4), so
    # both ends are open at the smallest and largest value
    assert ci["ttft_p50_s"] == pytest.approx((0.1, 0.3))


def test_repeats_are_resampled_before_requests():
    # repeat A: 100 tok/s, TTFT 0.1 s every request; repeat B: 200 tok/s, TTFT 0.3 s. Drawing 2
    # repeats: means 100 (1/4), 150 (1/2), 200 (1/4); the TTFT p50 interval covers both repeats'
    # own p50s (0.1 and 0.3)
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


def _cdf(n: int, q: Fraction, k: int) -> Fraction:
    """P(B <= k), B ~ Binomial(n, q), exactly (the oracle: no floating point, no code under test)."""
    return sum((comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1)), Fraction(0))


def test_order_statistic_ranks_by_hand():
    # n=100, q=0.5: P(B<=39) = 0.0176 <= 0.025 < P(B<=40) = 0.0284, so l = 40;
    # P(B>=61) = 1 - P(B<=60) = 0.0176 <= 0.025 < P(B>=60) = 0.0284, so u = 61
    assert order_ranks(100, 0.5) == (40, 61)
    # n=40, q=0.5: P(B<=13) = 0.0192, P(B<=14) = 0.0403; P(B<=26) = 0.9808, P(B<=25) = 0.9597
    assert order_ranks(40, 0.5) == (14, 27)
    # n=1000, q=0.99: P(B<=982) = 0.0138, P(B<=983) = 0.0264; P(B>=997) = 0.0101,
    # P(B>=996) = 0.0287
    assert order_ranks(1000, 0.99) == (983, 997)
    # a p99's upper end needs P(B=n) = 0.99**n <= 0.025: 0.99**367 = 0.02501, 0.99**368 = 0.02476
    assert order_ranks(367, 0.99)[1] is None and order_ranks(368, 0.99) == (360, 368)
    # p95: 0.95**71 = 0.0262, 0.95**72 = 0.0249; p90: 0.9**35 = 0.0250(3), 0.9**36 = 0.0225
    assert order_ranks(71, 0.95)[1] is None and order_ranks(72, 0.95)[1] == 72
    assert order_ranks(35, 0.9)[1] is None and order_ranks(36, 0.9)[1] == 36
    # against the exact binomial: the widest equal tails within 2.5% each, coverage >= 95%
    for n, q in ((10, Fraction(1, 2)), (57, Fraction(9, 10)), (120, Fraction(19, 20)),
                 (400, Fraction(99, 100))):
        lo, hi = order_ranks(n, float(q))
        assert _cdf(n, q, lo - 1) <= Fraction(1, 40) < _cdf(n, q, lo)
        assert 1 - _cdf(n, q, hi - 1) <= Fraction(1, 40) < 1 - _cdf(n, q, hi - 2)
        assert _cdf(n, q, hi - 1) - _cdf(n, q, lo - 1) >= Fraction(95, 100)


def test_the_point_is_always_inside_its_interval():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 5, 9, 20, 50, 101, 367, 368, 1000):
        x = rng.lognormal(-2.0, 1.0, n)
        for q in (50.0, 90.0, 95.0, 99.0):
            lo, hi, how = quantile_interval(x, q)
            assert lo <= np.percentile(x, q) <= hi, (n, q)
            assert (how in ("upper", "both")) == ((q / 100) ** n > 0.025), (n, q, how)
    # 100 values 1..100: the p50 interval is x_(40)..x_(61) (ranks above)
    assert quantile_interval(np.arange(1.0, 101.0), 50) == (40.0, 61.0, "")
    assert quantile_interval(np.array([np.nan, 1.0, np.inf]), 50) == (1.0, 1.0, "both")
    assert quantile_interval(np.array([np.nan]), 50) is None


def test_a_p99_of_few_requests_has_an_open_upper_end():
    """The percentile bootstrap put a p99 of 50 requests at the top of its own interval; the
    order-statistic interval reaches the slowest request and says it is open above it."""
    rng = np.random.default_rng(3)
    ttft = rng.exponential(0.1, 50)
    ci, method, opened = (lambda r: (r.figures, r.method, r.open_ends))(
        intervals([sample([5.0] * 50, ttft)], "r4-c16"))
    assert method == "requests"
    lo, hi = ci["ttft_p99_s"]
    assert hi == ttft.max() and lo < np.percentile(ttft, 99) <= hi
    # 0.99**50 = 0.61 and 0.95**50 = 0.077 leave no upper rank; 0.9**50 = 0.005 does
    assert opened["ttft_p99_s"] == opened["ttft_p95_s"] == "upper" and "ttft_p90_s" not in opened
    assert opened["e2e_p99_s"] == "upper" and "ttft_p50_s" not in opened
    # 400 requests (0.99**400 = 0.018): closed, the slowest request bounds it (u = n = 400);
    # 1000: closed below the slowest (x_(997), ranks above)
    for n, rank in ((400, 400), (1000, 997)):
        big = rng.exponential(0.1, n)
        got = intervals([sample([5.0] * n, big)], "r4-c16")
        assert "ttft_p99_s" not in got.open_ends
        assert got.figures["ttft_p99_s"][1] == np.sort(big)[rank - 1]
    # decisions see an open end as unbounded: no "beyond" or win claimed past the slowest request
    from harness.analysis.metrics import CellMetrics as CM

    c = CM(run_id="r", cell="r4-c16", replicas=4, level=16, level_kind="concurrency", start_ns=0,
           end_ns=1, duration_s=1.0, intervals={"ttft_p99_s": (lo, hi), "ttft_p50_s": (0.1, 0.2)},
           intervals_open={"ttft_p99_s": "upper"})
    assert reach(c, "ttft_p99_s") == (lo, np.inf) and reach(c, "ttft_p50_s") == (0.1, 0.2)
    assert overlaps(reach(c, "ttft_p99_s"), (hi * 2, hi * 3))
    from harness.report.fmt import interval, ms

    assert interval(c, "ttft_p99_s", ms) == f"{ms(lo)}–≥{ms(hi)}"
    assert interval(c, "ttft_p50_s", ms) == "100–200" and interval(c, "e2e_p50_s") == "–"


def test_repeats_widen_the_percentile_interval_to_their_spread():
    # repeat A: 1000 TTFTs evenly over 0.10..0.20 s, repeat B: over 0.20..0.30 s. Pooled, the
    # p50 interval of 2000 values is narrow around 0.2 s (ranks 956..1045 of 2000: 0.196..0.204);
    # the repeats' own p50s are 0.15 and 0.25 s: the interval widens to cover them
    a = sample([10.0] * 1000, np.linspace(0.10, 0.20, 1000))
    b = sample([10.0] * 1000, np.linspace(0.20, 0.30, 1000))
    pooled = np.concatenate([a.latency["ttft"], b.latency["ttft"]])
    one = quantile_interval(pooled, 50)
    assert 0.19 < one[0] < 0.2 < one[1] < 0.21
    got = intervals([a, b], "r1-c8")
    assert got.method == "repeats+requests"
    assert got.figures["ttft_p50_s"] == pytest.approx((0.15, 0.25))
    assert np.percentile(pooled, 50) == pytest.approx(0.2)
    # repeats that agree leave the pooled interval as it is
    same = intervals([a, sample([10.0] * 1000, np.linspace(0.10, 0.20, 1000))], "r1-c8")
    assert same.figures["ttft_p50_s"] == quantile_interval(
        np.concatenate([a.latency["ttft"]] * 2), 50)[:2]
    # 3 repeats of 100 requests: each one's p99 is open, the pooled 300 too (0.99**300 = 0.049)
    rng = np.random.default_rng(5)
    three = [sample([1.0] * 100, rng.exponential(0.1, 100)) for _ in range(3)]
    assert intervals(three, "r4-c16").open_ends["ttft_p99_s"] == "upper"


def test_intervals_are_reproducible_and_seeded_by_the_cell_name():
    rng = np.random.default_rng(11)
    s = [sample(rng.integers(1, 50, 80).astype(float), rng.exponential(0.1, 80), energy=50.0)
         for _ in range(2)]
    one, two = intervals(s, "r2-c32"), intervals(s, "r2-c32")
    assert one == two
    other = intervals(s, "r2-c64")
    # the bootstrap's draws follow the name; the order statistics involve no randomness
    assert other.figures["output_tokens_per_s"] != one.figures["output_tokens_per_s"]
    assert {k: v for k, v in other.figures.items() if k.startswith("ttft")} == \
        {k: v for k, v in one.figures.items() if k.startswith("ttft")}
