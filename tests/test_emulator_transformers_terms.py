"""The emulator's transformers-style terms, in virtual time: CUDA graphs captured on first use of a
padded shape, a front end that hands requests over one after another, step-time jitter, and the
power that dense-mask attention draws (in-process and across processes)."""

from __future__ import annotations

from harness.emulator import calibrate as cal
from harness.emulator.engine import Seq, make_replica
from harness.emulator.gpu import SharedGpu
from harness.emulator.profile import load_profile
from harness.emulator.sharedgpu import ProcessSharedGpu
from harness.emulator.simulate import VirtualTimer

MS = 1_000_000


def _profile(**upd):
    """The built-in H100 profile with every transformers term off except those named."""
    p = load_profile("h100-smollm2-135m")
    base = {"frontend_ms": 0.0, "frontend_per_seq": 0.0, "admission_ms": 0.0, "step_jitter": 0.0,
            "graph_capture_ms": 0.0, "frontend_fifo": False}
    base.update({k: v for k, v in upd.items() if k not in ("graph_q_interval",)})
    p = cal.with_params(p, {k: v for k, v in base.items() if k != "frontend_fifo"})
    timing = p.timing.model_copy(update={"frontend_fifo": base["frontend_fifo"]})
    limits = p.limits.model_copy(update={"graph_q_interval": upd.get("graph_q_interval", 0)})
    return p.model_copy(update={"timing": timing, "limits": limits})


class _Sink:
    def __init__(self):
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def token(self, s, due, last):
        self.first.setdefault(s.rid, due)
        if last:
            self.last[s.rid] = due


def _one(profile, requests, prompt=128, output=4):
    """Submit ``requests`` = [(rid, at_ms)] to one replica; its first-token times (ms) and the replica."""
    timer, sink = VirtualTimer(), _Sink()
    gpu = SharedGpu(profile, 1)
    gpu._last_ns = 0
    rep = make_replica(0, profile, gpu, timer)
    for rid, at in requests:
        timer.at(at * MS, lambda s, t: rep.submit(s, t), Seq(rid, prompt, output, sink, at * MS))
    timer.run_until(60_000 * MS)
    return {rid: sink.first[rid] / MS - at for rid, at in requests}, rep


def test_a_new_padded_shape_costs_one_capture_and_the_same_shape_again_none():
    plain, _ = _one(_profile(), [(1, 0), (2, 1000)])
    graphs, rep = _one(_profile(graph_q_interval=64, graph_capture_ms=150.0), [(1, 0), (2, 1000)])
    # the first request's prefill step (a new shape) and its first decode step each pay a capture
    assert abs(graphs[1] - plain[1] - 150.0) < 1.0, (graphs, plain)
    # the second request, alone like the first, meets only shapes captured already
    assert abs(graphs[2] - plain[2]) < 1.0, (graphs, plain)
    assert rep.captures >= 2 and len(rep.graphs) == rep.captures
    # query tokens are padded to the interval: 128 prompt tokens and 100 are one shape, 129 another
    assert rep._new_graph(100, 0, 8192) is False and (128, 1) in rep.graphs
    assert rep._new_graph(129, 0, 8192) is True and (192, 1) in rep.graphs
    assert rep._new_graph(20000, 0, 8192) is True and (8192, 1) in rep.graphs     # capped at the budget


def test_dense_mask_attention_costs_gpu_time_per_pair():
    """gpu_per_mpair_ms: a step attending through one dense mask pays for every (query token, cache
    token) pair of the whole batch. The first of 64 prompts of 128 tokens steps alone (128 x 128
    pairs); the other 63 share the next step with its decode: (1 + 63 x 128) query tokens against
    (129 + 63 x 128) cache tokens. A decode step of 64 sequences is 64 x (64 x 129): the prefill
    pays about 128 times what the decode does, where a per-sequence cost would charge both alike."""
    burst = [(i, 0) for i in range(64)]
    plain, _ = _one(_profile(), burst, output=2)
    dense, rep = _one(_profile(gpu_per_mpair_ms=0.5), burst, output=2)
    assert abs(dense[0] - plain[0] - 0.5 * 128 * 128 / 1e6) < 1e-3, (dense[0], plain[0])
    wave = 0.5 * 128 * 128 / 1e6 + 0.5 * (1 + 63 * 128) * (129 + 63 * 128) / 1e6
    assert all(abs(dense[i] - plain[i] - wave) < 1e-3 for i in range(1, 64)), (dense, plain)
    m = rep.model
    decode = m.step_ms(64, 0, 64 * 129, 0.0, 0, pairs=64 * 64 * 129)[0] - m.step_ms(64, 0, 64 * 129, 0.0, 0)[0]
    assert abs(decode - 0.5 * 64 * 64 * 129 / 1e6) < 1e-9
    # a flash-attention profile (the default 0) pays nothing for the same pairs
    assert _profile().timing.gpu_per_mpair_ms == 0.0


def test_graphs_off_by_default_capture_nothing():
    _, rep = _one(_profile(graph_capture_ms=150.0), [(1, 0), (2, 1000)])
    assert rep.captures == 0 and not rep.graphs


def test_fifo_front_end_hands_a_burst_over_one_by_one():
    burst = [(i, 0) for i in range(8)]
    shared, _ = _one(_profile(frontend_ms=5.0), burst)
    fifo, _ = _one(_profile(frontend_ms=5.0, frontend_fifo=True), burst)
    # interleaved, the burst enters the queue together after 8 x 5 ms: no first token before that
    assert min(shared.values()) > 40.0, shared
    # one after another, the first is in after 5 ms and its first token comes before the burst's would
    assert min(fifo.values()) < 40.0, fifo
    assert len(set(fifo.values())) > len(set(shared.values())), (fifo, shared)


def test_step_jitter_is_seeded_and_keeps_the_mean():
    reqs = [(i, 0) for i in range(32)]
    a, _ = _one(_profile(step_jitter=0.2), reqs, output=64)
    b, _ = _one(_profile(step_jitter=0.2), reqs, output=64)
    plain, _ = _one(_profile(), reqs, output=64)
    assert a == b                                   # the same seed per replica: reproducible replays
    assert a != plain


def test_a_sweeps_windows_share_their_servers_graphs():
    """predict_run replays a replica count's windows in the sweep's order on the same processes: the
    shapes the first window captured cost nothing in the next."""
    p = _profile(graph_q_interval=64, graph_capture_ms=200.0, step_jitter=0.05, frontend_ms=0.7,
                 frontend_fifo=True)
    cell = cal.Cell("r1-c16", 1, 16, 128, 128, 4.0, 10.0, {}, repeats=3)
    graphs = [set()]
    first = cal._replay(p, cell, graphs)
    n_after_first = len(graphs[0])
    second = cal._replay(p, cell, graphs)
    assert n_after_first > 0 and len(graphs[0]) - n_after_first < n_after_first
    assert cal._summary([first])["ttft_p50_ms"] >= cal._summary([second])["ttft_p50_ms"]
    pooled = cal.predict_run(p, [cell])[0]
    fresh = cal.predict(p, cell)
    assert pooled["ttft_p50_ms"] <= fresh["ttft_p50_ms"] + 1e-9


def test_attention_power_in_process_and_across_processes(tmp_path):
    p = cal.with_params(_profile(), {"idle_w": 120.0, "active_w": 80.0, "power_exponent": 1.0,
                                     "attention_w": 0.5})
    gpu = SharedGpu(p, 2)
    gpu.set_rate(0, 0.5, gpu._last_ns + 1, attention=40.0)
    gpu.set_rate(1, 0.25, gpu._last_ns + 1, attention=20.0)
    assert abs(gpu.power_w() - (120.0 + 80.0 * 0.75 + 0.5 * 60.0)) < 1e-9
    # replicas in two processes see one GPU: the other's attention counts in the power either reports
    a = ProcessSharedGpu(p, 1, tmp_path / "gpu.state")
    b = ProcessSharedGpu(p, 1, tmp_path / "gpu.state", label=1)
    try:
        a.set_rate(0, 0.5, a.file.header()[4] + 1, attention=40.0)
        assert abs(b.snapshot(0)["power_w"] - (120.0 + 40.0 + 20.0)) < 1e-3
        b.set_rate(0, 0.25, b.file.header()[4] + 1, attention=20.0)
        assert abs(a.snapshot(0)["power_w"] - (120.0 + 80.0 * 0.75 + 30.0)) < 1e-3
    finally:
        a.close()
        b.close()


def test_fit_power_recovers_the_attention_term():
    """Cells made by a profile whose power has an attention term: the power fit finds it again (and
    finds none where the base profile's engine has no dense-mask attention)."""
    truth = cal.with_params(_profile(), {"idle_w": 120.0, "active_w": 70.0, "power_exponent": 0.6,
                                         "attention_w": 0.4})
    cells = [cal.Cell(f"r{n}-c{c}", n, c, 128, 64, 2.0, 4.0, {}) for n, c in
             [(1, 16), (1, 128), (1, 384), (2, 64), (2, 256), (3, 384)]]
    preds = cal.predict_run(truth, cells)
    assert max(p["attention"] for p in preds) > 5 * min(p["attention"] for p in preds) > 0
    for c, pr in zip(cells, preds):
        c.measured = {"power_w": pr["power_w"]}
    start = cal.with_params(truth, {"active_w": 10.0, "power_exponent": 1.5, "attention_w": 0.01})
    got = cal.fit_power(start, cells, preds)
    assert abs(got["attention_w"] - 0.4) < 0.04 and abs(got["active_w"] - 70.0) < 7.0, got
    off = cal.fit_power(cal.with_params(start, {"attention_w": 0.0}), cells, preds)
    assert "attention_w" not in off
