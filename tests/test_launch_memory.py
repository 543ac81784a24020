"""The memory split of N replicas on one GPU, by TGI's own sizing rule (docs/stack.md)."""

from __future__ import annotations

import pytest

from harness.launch.memory import (TGI_WIGGLE_ROOM, ReplicaMemory, budget_from_log,
                                   budget_spread, check_budgets, even_fractions, parse_budget_metrics,
                                   simulate_tgi_start, staggered_fractions, tgi_kv_bytes,
                                   tgi_warmup_tokens)

GIB = 2**30
H100 = 85_520_809_984                      # bytes, as torch.cuda reports an H100 80GB HBM3
SMOLLM2_KV = 2 * 30 * 3 * 64 * 2           # bytes per token: 2 x layers x kv heads x head dim x bf16


def test_tgi_formula_and_wiggle_room():
    assert TGI_WIGGLE_ROOM == 0.90
    # free - (1 - fraction * 0.9) * total, never below zero
    assert tgi_kv_bytes(70 * GIB, 80 * GIB, 1.0) == int(70 * GIB - 0.1 * 80 * GIB)
    assert tgi_kv_bytes(70 * GIB, 80 * GIB, 0.5) == int(70 * GIB - 0.55 * 80 * GIB)
    assert tgi_kv_bytes(10 * GIB, 80 * GIB, 0.3) == 0


def test_warmup_batch_tokens():
    # one request of max_input_tokens=4096 covers 240 prefill tokens; it holds max_total_tokens
    assert tgi_warmup_tokens(240, 4096, 8192) == 8192
    # TGI's defaults for a 1024/2048 model: prefill 4096 tokens in 4 requests of 1024
    assert tgi_warmup_tokens(4096, 1024, 2048) == 4 * 2048
    assert tgi_warmup_tokens(1074, 1024, 2048) == 2 * 2048


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_staggered_fractions_grow_in_equal_steps_to_the_share(n):
    fr = staggered_fractions(n)
    assert fr[-1] == 0.9 and len(fr) == n
    steps = [b - a for a, b in zip([0.0] + fr, fr)]
    assert max(steps) - min(steps) <= 2e-4
    assert even_fractions(n) == [int(0.9 / n * 1e4) / 1e4] * n
    assert staggered_fractions(4, 1.0) == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("n", [2, 3, 4, 8])
@pytest.mark.parametrize("resident_gib", [0.5, 3.0, 6.0])
def test_one_after_another_with_staggered_fractions_gives_equal_budgets(n, resident_gib):
    mem = ReplicaMemory(resident=int(resident_gib * GIB), transient=200 * 2**20,
                        warmup_tokens=tgi_warmup_tokens(4096, 1024, 2048))
    budgets = simulate_tgi_start(H100, staggered_fractions(n), mem, SMOLLM2_KV)
    # replicas 2..N get exactly the same; replica 1 measured with its warm-up activations held
    # (the transient) and comes out smaller by just that: docs/stack.md, "what is left over"
    assert max(budgets[1:]) - min(budgets[1:]) <= 2 + n, budgets
    short = (budgets[1] - budgets[0]) * SMOLLM2_KV
    assert abs(short - mem.transient) < 0.002 * H100, budgets
    assert budget_spread(budgets) < mem.transient / (budgets[0] * SMOLLM2_KV) + 0.002
    # the whole set holds the last replica's share of the GPU: 0.9 x 0.9 (TGI's wiggle room)
    held = sum(budgets) * SMOLLM2_KV + n * mem.resident
    assert abs(held / H100 - 0.81) < 0.01


@pytest.mark.parametrize("n", [2, 3, 4])
def test_the_naive_layouts_give_unequal_budgets(n):
    mem = ReplicaMemory(resident=2 * GIB, transient=0,
                        warmup_tokens=tgi_warmup_tokens(4096, 1024, 2048))
    # all at once with 0.9/N each: the replica that measures first takes its share, the others
    # are left their warm-up blocks only, in whatever order they happen to measure
    for order in (list(range(n)), list(reversed(range(n)))):
        budgets = simulate_tgi_start(H100, even_fractions(n), mem, SMOLLM2_KV, order=order,
                                     loaded_first=True)
        first = order[0]
        assert budgets[first] > 40 * mem.warmup_tokens
        assert all(b == mem.warmup_tokens for i, b in enumerate(budgets) if i != first)
    # one after another, but still 0.9/N each: the same failure
    budgets = simulate_tgi_start(H100, even_fractions(n), mem, SMOLLM2_KV)
    assert budgets[1:] == [mem.warmup_tokens] * (n - 1)
    assert budget_spread(budgets) > 0.9


def test_budget_spread():
    assert budget_spread([100, 100, 100]) == 0
    assert budget_spread([100, 90, None]) == pytest.approx(0.1)
    assert budget_spread([100, None]) is None and budget_spread([]) is None


def test_budget_from_tgi_and_vllm_metrics_text():
    tgi = ("# TYPE tgi_batch_max_total_tokens gauge\ntgi_batch_max_total_tokens 897313\n"
           "tgi_queue_size 0\n")
    assert parse_budget_metrics(tgi) == 897313
    vllm = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
            'vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",'
            'gpu_memory_utilization="0.3",num_gpu_blocks="51200"} 1.0\n')
    assert parse_budget_metrics(vllm) == 51200 * 16
    assert parse_budget_metrics("tgi_queue_size 0\n") is None


def test_check_budgets_without_answers_warns_nothing():
    out = check_budgets(["http://127.0.0.1:1", "http://127.0.0.1:1"], echo=None)
    assert out == {"kv_budgets": [None, None], "kv_budget_spread": None,
                   "kv_budget_warning": None}


def test_budget_from_the_servers_log_lines():
    tgi = ('2026-12-06T07:00:01Z  INFO text_generation_router_v3: backends/v3/src/lib.rs:137: '
           'Setting max batch total tokens to 897313\n')
    assert budget_from_log("warming up\n" + tgi) == 897313
    vllm = ("(EngineCore_DP0 pid=1) INFO 12-06 07:00:01 [kv_cache_utils.py:1286] "
            "GPU KV cache size: 686,320 tokens\n")
    assert budget_from_log(vllm) == 686320
    assert budget_from_log("nothing here\n") is None
    # a replica that answers nothing over HTTP: the log line is read instead
    out = check_budgets(["http://127.0.0.1:1", "http://127.0.0.1:1"], echo=None,
                        logs=lambda i: [tgi, "Setting max batch total tokens to 8192"][i])
    assert out["kv_budgets"] == [897313, 8192] and out["kv_budget_warning"]
