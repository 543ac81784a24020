"""The ``levels: auto`` search on hand-made results: the probe's estimate, each signal that
brackets the knee (SLO, plateau, super-linear latency, over-saturation), stepping down from a
start past the knee, and the sentence that says why it stopped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.knee import KneeSearch, LevelResult as L, ProbeEstimate, ProbePoint, estimate_start
from harness.analysis.saturation import in_flight_at, oversaturation, slope
from harness.scenario.models import Slo


def _points(a: float, b: float, ttft=(0.010, 0.001), streams=(1, 8)) -> list[ProbePoint]:
    """Probe points on exact lines: e2e = a + b*s, TTFT p99 = t0 + t1*s."""
    return [ProbePoint(s, 10, s * 16 / (a + b * s),
                       {"e2e_s.p50": a + b * s, "ttft_s.p99": ttft[0] + ttft[1] * s}) for s in streams]


def _drive(search: KneeSearch, fn) -> list[L]:
    out: list[L] = []
    while (lv := search.next_level(out)) is not None:
        out.append(fn(lv))
    return out


# -- the probe ------------------------------------------------------------------------------
def test_the_probe_estimates_saturation_by_littles_law_and_starts_a_factor_below():
    # e2e 200 ms + 0.5 ms per stream: a doubling gains < 5% beyond 0.95*0.2/(0.1*0.0005) = 3800
    est = estimate_start(_points(0.2, 0.0005), None, mode="concurrency", min_gain=0.05,
                         max_level=100000)
    assert est.saturation_streams == pytest.approx(3800)
    assert est.estimate == pytest.approx(3800) and est.start == 950 and est.slo_streams is None
    # throughput there really gains < 5% from a doubling, and > 5% at half of it
    x = lambda s: s / (0.2 + 0.0005 * s)  # noqa: E731
    assert x(2 * 3801) / x(3801) < 1.05 < x(2 * 1900) / x(1900)
    # a TTFT p99 limit of 110 ms on TTFT p99 = 10 ms + 1 ms/stream is reached at 100 streams first
    slo = Slo(ttft_s={"p99": 0.110})
    est = estimate_start(_points(0.2, 0.0005), slo, mode="concurrency", min_gain=0.05, max_level=1024)
    assert est.slo_streams == pytest.approx(100) and est.slo_limit == "ttft_s.p99"
    assert est.estimate == pytest.approx(100) and est.start == 25
    text = est.describe()
    assert "probe at 1 and 8 streams" in text and "the SLO's TTFT p99 limit near 100 streams" in text
    assert text.endswith("the knee is expected near 100 streams, so the explore starts at 25 streams")
    # open loop: the same streams become a rate, streams / e2e (Little's law): 100 / 0.25 s
    est = estimate_start(_points(0.2, 0.0005), slo, mode="rate", min_gain=0.05, max_level=1000,
                         min_level=0.1)
    assert est.estimate == pytest.approx(400) and est.start == 100
    # the start stays two doublings below the cap; a round trip through the manifest keeps all
    est = estimate_start(_points(0.2, 0.0005), None, mode="concurrency", min_gain=0.05, max_level=64)
    assert est.start == 16
    assert [r.level for r in _drive(KneeSearch(start=est.start, max_level=64),
                                    lambda c: L(c, 10.0 * c, True))] == [16, 32, 64]
    assert ProbeEstimate.from_json(est.to_json()) == est


def test_the_probes_saturation_estimate_follows_the_minimum_gain():
    # e2e 200 ms + 0.5 ms per stream: a 20% minimum gain is missed beyond
    # 0.8*0.2/(0.4*0.0005) = 800 streams, 4.75 times sooner than a 5% one (3800)
    pts = _points(0.2, 0.0005)
    est = estimate_start(pts, None, mode="concurrency", min_gain=0.2, max_level=100000)
    assert est.saturation_streams == pytest.approx(800) and est.start == 200
    x = lambda s: s / (0.2 + 0.0005 * s)  # noqa: E731
    assert x(2 * 801) / x(801) < 1.2 < x(2 * 799) / x(799)
    default = estimate_start(pts, None, mode="concurrency", min_gain=0.05, max_level=100000)
    assert default.saturation_streams == pytest.approx(3800) and default.start == 950
    with pytest.raises(TypeError):                   # no hidden default: the caller says which
        estimate_start(pts, None, mode="concurrency")


def test_a_probe_that_sees_no_slowdown_starts_at_its_top_and_a_broken_slo_at_its_bottom():
    flat = estimate_start(_points(0.2, 0.0), None, mode="concurrency", min_gain=0.05)
    assert flat.estimate is None and flat.start == 8
    assert "saw no slowdown" in flat.describe()
    broke = estimate_start(_points(0.2, 0.0005), Slo(ttft_s={"p99": 0.005}), mode="concurrency",
                           min_gain=0.05)
    assert broke.slo_streams == 1 and broke.start == 1


# -- the signals and the sentence -------------------------------------------------------------
def test_super_linear_latency_brackets_the_knee_before_throughput_flattens():
    # throughput still grows 20% per doubling, but TTFT p50 quadruples from 16 to 32 streams
    def fn(c):
        ttft = 0.05 if c <= 16 else 0.05 * (c / 16) ** 2
        return L(c, 100 * c ** 0.26, True, ttft, 0.01)
    ks = KneeSearch(start=4, max_cells=5, latency_growth=1.5)
    res = _drive(ks, fn)
    assert [r.level for r in res] == [4, 8, 16, 32, 23]
    assert ks.why_stopped(res).startswith(
        "latency grew faster than the load at 32 streams (TTFT p50 x4 for x2 load, beyond x1.5 "
        "the load's growth); the knee was bracketed between 23 and 32 streams")
    # a p50 still under 50 ms is jitter, whatever its ratio: 5 ms -> 20 ms does not stop it
    ks = KneeSearch(start=4, max_cells=4, latency_growth=1.5)
    small = _drive(ks, lambda c: L(c, 100 * c ** 0.26, True, 0.005 * (c / 4) ** 2 if c <= 8 else 0.02, 0.01))
    assert ks.why_stopped(small).startswith("the cell budget (auto_max_cells 4) ran out")
    # the same latencies within the default x2 of the load's growth do not stop it
    ks = KneeSearch(max_cells=4, start=4)
    assert ks.why_stopped(_drive(ks, fn)).startswith("the cell budget (auto_max_cells 4) ran out")


def test_an_over_saturated_window_stops_the_explore_and_says_what_rose():
    def fn(q):
        sat = q >= 8
        return L(q, 50 * q, True, 0.1, 0.01, sat, "TTFT +300.0 ms/s (+250% over the window)" if sat else "")
    ks = KneeSearch(start=1, integer=False, max_cells=6)
    res = _drive(ks, fn)
    assert [r.level for r in res] == [1, 2, 4, 8, 5.66, 6.73]
    assert ks.why_stopped(res).startswith(
        "the over-saturation test fired at 8 req/s (rising through the window: TTFT +300.0 ms/s "
        "(+250% over the window)); the knee was bracketed between 6.73 and 8 req/s")


def test_a_start_past_the_knee_steps_down_until_a_level_is_below_it():
    fn = lambda c: L(c, min(c, 40) * 50.0, c <= 48)  # noqa: E731 - saturates at 40, SLO breaks above 48
    ks = KneeSearch(start=128, max_cells=8)
    res = _drive(ks, fn)
    assert [r.level for r in res] == [128, 64, 32, 45, 38, 35]
    assert "bracketed between 35 and 38 streams, one step apart" \
        in ks.why_stopped(res)
    # everything past the knee down to one stream: the sentence says to look below
    ks = KneeSearch(start=4, max_cells=8)
    res = _drive(ks, lambda c: L(c, 10.0, False))
    assert [r.level for r in res] == [4, 2, 1]
    assert ks.why_stopped(res).startswith("the SLO broke at 4 streams; even the lowest level tried "
                                          "(1 streams) is past the knee; try levels below it; no "
                                          "level met the SLO")


def test_each_stop_reason_has_its_sentence():
    ks = KneeSearch(max_level=64, max_cells=8)
    plateau = [L(1, 10, True), L(2, 20, True), L(4, 20.5, True)]
    assert ks.why_stopped(plateau).startswith(
        "throughput stopped growing by 5% at 4 streams; the knee was bracketed between 1 and 2 "
        "streams")
    at_max = [L(16, 10, True), L(32, 20, True), L(64, 40, True)]
    assert ks.next_level(at_max) is None
    assert ks.why_stopped(at_max).startswith("reached auto_max_level (64 streams) while throughput "
                                             "still grew within the SLO")
    assert KneeSearch(max_cells=3).why_stopped(plateau).startswith(
        "throughput stopped growing by 5% at 4 streams; the knee was bracketed between 1 and 2 "
        "streams, one step apart")
    wide = [L(8, 10, True), L(16, 20, True), L(32, 20.5, True)]
    assert KneeSearch(max_cells=3).why_stopped(wide).startswith(
        "throughput stopped growing by 5% at 32 streams; the knee was bracketed between 8 and 16 "
        "streams; the cell budget (auto_max_cells 3) ran out before refining it: raise "
        "load.auto_max_cells to narrow it")
    grew = [L(1, 10, None), L(2, 20, None), L(4, 40, None)]
    assert KneeSearch(max_cells=3).why_stopped(grew).startswith("the cell budget (auto_max_cells 3)")
    slo = [L(1, 10, True), L(2, 20, True), L(4, 25, False), L(3, 22, True)]
    assert ks.why_stopped(slo).startswith("the SLO broke at 4 streams")
    # older manifests kept [level, throughput, slo_ok]
    assert L.from_json([4, 25.0, False]) == L(4, 25.0, False)
    assert L.from_json(L(4, 25.0, False, 0.1).to_json()) == L(4, 25.0, False, 0.1)


# -- the over-saturation test on request rows -----------------------------------------------
def _rows(n: int, ttft, sent_s, e2e_s: float = 1.0) -> pd.DataFrame:
    sent = (np.asarray(sent_s) * 1e9).astype("int64")
    return pd.DataFrame({"phase": "measure", "intended_ns": sent, "start_ns": sent,
                         "end_ns": sent + int(e2e_s * 1e9), "ttft_s": ttft})


def test_over_saturation_fires_on_rising_ttft_and_in_flight_and_not_on_a_steady_window():
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 10, 400))
    # open loop past capacity: the queue (and so TTFT and e2e) grows with time
    e2e = 0.2 + 0.3 * t
    rising = _rows(400, 0.1 + 0.3 * t + rng.normal(0, 0.02, 400), t)
    rising["end_ns"] = rising["start_ns"] + (e2e * 1e9).astype("int64")
    sat = oversaturation(rising, closed_loop=False)
    assert sat.fired and sat.ttft.per_s == pytest.approx(0.3, rel=0.1)
    assert sat.in_flight.per_s > 0 and "requests in flight +" in sat.describe()
    steady = _rows(400, 0.1 + rng.normal(0, 0.02, 400), t, e2e_s=0.5)
    assert not oversaturation(steady, closed_loop=False).fired
    assert not oversaturation(steady, closed_loop=True).fired
    # a small rise (5% over the window) is below min_rise even when significant
    small = _rows(400, 0.1 + 0.0005 * t, t)
    assert not oversaturation(small, closed_loop=True).fired
    # too few requests or too short a window to say: no verdict, never a false alarm
    assert oversaturation(_rows(3, [0.1, 0.2, 0.3], [0, 1, 2]), closed_loop=True).ttft is None
    short = _rows(400, 0.1 + 3 * t / 10, t / 10)     # the same rise within one second
    assert oversaturation(short, closed_loop=True).ttft is None
    assert oversaturation(short, closed_loop=True, min_span_s=0.5).fired
    # a rise of 20 ms over the window is no queue building, whatever its share of a 10 ms TTFT
    tiny = _rows(400, 0.01 + 0.002 * t, t)
    assert not oversaturation(tiny, closed_loop=True).fired


def test_slope_and_in_flight_arithmetic():
    s = slope(np.arange(10.0), 2.0 * np.arange(10.0) + 1.0)
    assert s.per_s == pytest.approx(2.0) and s.half_width == pytest.approx(0.0, abs=1e-9)
    assert s.rel_rise == pytest.approx(18 / 10)
    flying = in_flight_at(np.array([0, 1, 2]), np.array([5, 1.5, np.inf]), np.array([1, 1.5, 6]))
    assert list(flying) == [2, 1, 1]


def test_closed_loop_needs_the_servers_queue_to_grow_too_where_they_report_one():
    from harness.analysis.saturation import queue_depth

    t = np.linspace(0, 10, 400)
    rising = _rows(400, 0.1 + 0.3 * t, t)
    # two replicas scraped at 2 Hz: one queue grows 3 requests a second, the other stays at 0
    ts = np.arange(0, 10, 0.5)
    rows = pd.DataFrame({"ts_ns": np.concatenate([ts, ts + 0.01]) * 1e9, "replica": ["a"] * 20 + ["b"] * 20,
                         "name": "tgi_queue_size", "labels": "{}",
                         "value": np.concatenate([3 * ts, np.zeros(20)])})
    rows = pd.concat([rows, rows.assign(name="tgi_batch_current_size", value=64.0)])
    when, depth = queue_depth(rows, 0, int(10e9))
    assert len(when) == 20 and depth[-1] == pytest.approx(28.5)
    grows = oversaturation(rising, closed_loop=True, queue=(when, depth))
    assert grows.fired and grows.queue.per_s == pytest.approx(3.0)
    assert "server queue +3.00/s" in grows.describe()
    flat = (when, np.full(len(when), 192.0))   # a full queue that holds steady: no growth
    assert not oversaturation(rising, closed_loop=True, queue=flat).fired
    assert queue_depth(rows[rows["name"] != "tgi_queue_size"], 0, int(10e9)) is None


def test_the_scenarios_thresholds_reach_the_search_and_the_over_saturation_test():
    from harness.analysis.saturation import thresholds
    from harness.scenario import parse_scenario

    def load(extra: str = ""):
        return parse_scenario("name: x\nload:\n  levels: auto\n  auto_max_cells: 6\n" + extra).load

    # throughput grows 10% per doubling: past the default 5% it keeps doubling, under a 20%
    # minimum gain it stops at the second level
    fn = lambda c: L(c, 100 * 1.1 ** np.log2(c), True)  # noqa: E731
    ks = KneeSearch.for_load(load(), start=4)
    assert ks.min_gain == 0.05 and ks.latency_growth == 2.0
    assert ks.why_stopped(_drive(ks, fn)).startswith("the cell budget (auto_max_cells 6) ran out")
    ks = KneeSearch.for_load(load("  auto_min_gain: 0.2\n  auto_latency_growth: 1.5\n"), start=4)
    assert ks.latency_growth == 1.5
    assert ks.why_stopped(_drive(ks, fn)).startswith("throughput stopped growing by 20% at 8 streams")
    # a rising window of 3 s is too short by default, and long enough for a 2 s minimum
    t = np.linspace(0, 3, 300)
    rising = _rows(300, 0.1 + 0.3 * t, t)
    assert thresholds(load()) == {"min_rise": 0.5, "min_span_s": 5.0}
    assert oversaturation(rising, closed_loop=True, **thresholds(load())).ttft is None
    assert oversaturation(rising, closed_loop=True,
                          **thresholds(load("  auto_saturation_min_s: 2\n"))).fired
    # a rise of 40% of the median over the window fires only under a minimum rise below 50%
    mild = _rows(300, 0.6 + 0.03 * np.linspace(0, 10, 300), np.linspace(0, 10, 300))
    assert not oversaturation(mild, closed_loop=True, **thresholds(load())).fired
    assert oversaturation(mild, closed_loop=True,
                          **thresholds(load("  auto_saturation_rise: 0.3\n"))).fired
