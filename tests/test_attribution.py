"""Per-request energy: hand-computed splits, and attributed + idle = measured on random cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.attribution import attribute, pool, request_class
from harness.records.schema import GPU_SCHEMA

S = 1_000_000_000


def gpu(power, t0=0, t1=1 * S, every=S // 10) -> pd.DataFrame:
    rows = [{"ts_ns": t, "gpu": 0, "source": "nvml-power", "power_w": power(t)}
            for t in range(t0, t1 + 1, every)]
    return pd.DataFrame(rows, columns=GPU_SCHEMA.names)


def reqs(*rows) -> pd.DataFrame:
    """rows: (start_s, first_s, end_s, input_tokens, output_tokens)"""
    return pd.DataFrame([{"start_ns": int(s * S), "first_token_ns": int(f * S), "end_ns": int(e * S),
                          "input_tokens": i, "output_tokens": o, "error_class": None}
                         for s, f, e, i, o in rows])


def test_above_idle_split_by_decode_work():
    # 200 W for 1 s, idle 100 W: 100 J idle, 100 J split 1:3 by output tokens in the window
    r = reqs((0, 0, 1.0, 0, 10), (0, 0, 1.0, 0, 30))
    out = attribute(r, gpu(lambda t: 200.0), 0, S, 200.0, 100.0)
    assert out["idle_j"] == pytest.approx(100.0) and out["attributed_j"] == pytest.approx(100.0)
    by = out["by_class"]
    assert by["in1-out16"]["j_per_output_token"] == pytest.approx(25.0 / 10)
    assert by["in1-out32"]["j_per_output_token"] == pytest.approx(75.0 / 30)
    assert by["in1-out32"]["j_per_request"] == pytest.approx(75.0) and by["in1-out32"]["requests"] == 1


def test_nothing_in_flight_is_idle_and_prefill_weight_counts():
    # one request in the first half only: the second half's energy above idle has no owner: idle
    r = reqs((0, 0.0, 0.5, 0, 10))
    out = attribute(r, gpu(lambda t: 200.0), 0, S, 200.0, 100.0)
    assert out["attributed_j"] == pytest.approx(50.0) and out["idle_j"] == pytest.approx(150.0)
    # prompt work: A prefills 100 tokens over the first half while B decodes 100 tokens all along
    # (50 in the first half): with prefill weight 0.5 the first half (50 J above idle) splits 1:1
    r = reqs((0, 0.5, 0.5, 100, 0), (0, 0, 1.0, 0, 100))
    out = attribute(r, gpu(lambda t: 200.0), 0, S, 200.0, 100.0, prefill_weight=0.5)
    a, b = out["by_class"]["in128-out1"], out["by_class"]["in1-out128"]
    assert a["j"] == pytest.approx(25.0) and b["j"] == pytest.approx(75.0)


def test_scaled_to_the_counter_and_no_idle_baseline():
    # samples say 150 W but the counter measured 300 J over 1 s: bins are scaled to the counter;
    # without an idle baseline everything in flight is attributed
    r = reqs((0, 0, 1.0, 0, 50))
    out = attribute(r, gpu(lambda t: 150.0), 0, S, 300.0, None)
    assert out["attributed_j"] == pytest.approx(300.0) and out["idle_j"] == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(5))
def test_attributed_plus_idle_is_the_measured_energy(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(200):
        s = rng.uniform(-2, 9)
        f = s + rng.uniform(0, 0.5)
        e = f + rng.uniform(0, 3)
        rows.append((s, f, e, int(rng.integers(1, 600)), int(rng.integers(0, 300))))
    r = reqs(*rows)
    power = lambda t: 120 + 80 * np.sin(t / S) ** 2 + rng.uniform(0, 20)  # noqa: E731
    measured = float(rng.uniform(500, 2000))
    out = attribute(r, gpu(power, 0, 10 * S, S // 20), 0, 10 * S, measured, 130.0,
                    prefill_weight=0.3, decode_weight=1.0)
    assert out["attributed_j"] + out["idle_j"] == pytest.approx(measured, rel=1e-9)
    assert sum(c["j"] for c in out["by_class"].values()) == pytest.approx(out["attributed_j"])
    both = pool([out, out])
    assert both["measured_j"] == pytest.approx(2 * measured)
    assert both["attributed_j"] + both["idle_j"] == pytest.approx(2 * measured)


def test_request_classes():
    assert request_class(128, 128) == "in128-out128" and request_class(129, 1) == "in256-out1"
