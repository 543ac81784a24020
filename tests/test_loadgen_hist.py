"""Histograms: the vectorised recording equals HdrHistogram's own, and encode/merge is exact."""

from __future__ import annotations

import random

import numpy as np

from harness.loadgen.hist import HistSet, new_hist, record_array
from harness.loadgen.slo import evaluate
from harness.loadgen.collector import PhaseStats
from harness.scenario.models import Slo


def test_record_array_matches_record_value_bucket_for_bucket():
    rng = random.Random(3)
    vals = [rng.choice([rng.randint(0, 100), rng.randint(1000, 20000), rng.randint(10**6, 10**9),
                        rng.randint(1, 10**10)]) for _ in range(50000)]
    a, b = new_hist(), new_hist()
    for v in vals:
        a.record_value(min(max(v, 1), a.highest_trackable_value))
    record_array(b, np.array(vals, dtype=np.int64))
    assert list(a.counts) == list(b.counts)
    assert (a.total_count, a.min_value, a.max_value) == (b.total_count, b.min_value, b.max_value)
    for q in (1, 50, 90, 99, 99.9):
        assert a.get_value_at_percentile(q) == b.get_value_at_percentile(q)


def test_encode_decode_merge_equals_one_histogram():
    rng = random.Random(5)
    parts = [[rng.randint(9000, 12000) for _ in range(3000)] for _ in range(3)]
    whole = HistSet()
    merged = HistSet()
    for p in parts:
        whole.record_many("itl", p)
        w = HistSet()
        w.record_many("itl", p)
        merged.merge_encoded(w.encode())      # what the master does with each worker's delta
    assert merged.count("itl") == 9000
    for q in (50, 99, 99.9):
        assert merged.percentile_s("itl", q) == whole.percentile_s("itl", q)
    assert HistSet.decode(merged.encode()).percentile_s("itl", 99) == whole.percentile_s("itl", 99)


def test_slo_verdict_per_check():
    st = PhaseStats()
    st.requests, st.ok, st.output_tokens = 100, 98, 5000
    st.errors = {"http_429": 2}
    st.hist.record_many("ttft", [50_000] * 99 + [900_000])
    slo = Slo.model_validate({"ttft_s": {"p50": 0.06, "p999": 0.5}, "max_error_rate": 0.01,
                              "min_output_tokens_per_s": 400})
    v = evaluate(slo, st, measure_s=10.0)
    got = {c.name: c.ok for c in v.checks}
    assert got == {"ttft_s.p50": True, "ttft_s.p999": False, "error_rate": False, "output_tokens_per_s": True}
    assert not v.ok
    assert evaluate(Slo(), st, 10.0).ok
    empty = evaluate(Slo.model_validate({"ttft_s": {"p99": 1}}), PhaseStats(), 10.0)
    assert not empty.ok          # no data is not a pass


def test_reader_health_goes_to_the_cell_and_phase_and_merges_across_workers():
    """Late read passes are credited to the next request accounted, travel in the stats delta
    (sum of passes, max of the wait), and show in the summary and under the console table."""
    import io

    from rich.console import Console

    from harness.loadgen.collector import CellInfo, Collector
    from harness.loadgen.result import CellResult
    from harness.loadgen.stream import StreamResult
    from harness.loadgen.summary import print_table
    from harness.protocols import RequestSpec

    health = iter([(0, 0), (3, 12_000_000), (1, 30_000_000), (0, 0)])
    workers = []
    for w in range(2):
        col = Collector(forward=True)
        col.reader_health = lambda: next(health)
        for phase in ("warmup", "measure"):
            res = StreamResult("http://r", 1_000, end_pc=2_000_000, first_pc=1_500_000, output_tokens=2,
                               itl_ns=[400_000], events=2, status=200, finish_reason="length")
            col.add(res, RequestSpec("p", 1, 2), CellInfo("run", "c1", 1, 4, phase), 1_000)
        workers.append(col.export())
    master = Collector()
    for payload in workers:
        master.absorb(payload)
    assert master.phase_stats("c1", "warmup").reader_late == 0 + 1
    m = master.cell_stats("c1")
    assert (m.reader_late, m.reader_lag_max_ns) == (3, 12_000_000)   # the measured phase only
    r = CellResult("run", "c1", 1, 4, "concurrency", m, measure_s=1.0)
    gen = r.summary()["generator"]
    assert (gen["late_read_passes"], gen["lag_max_ms"], gen["reader_lag_max_ms"]) == (3, 12.0, 12.0)
    out = io.StringIO()
    print_table([r], Console(file=out, width=200))
    assert "fell behind in c1 (3 read passes" in out.getvalue() and "up to 12.0 ms" in out.getvalue()
