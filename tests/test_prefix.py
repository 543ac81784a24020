"""Shared prefixes: the prefix-repetition workload, and the emulator's prefix cache per replica
(hits skip the shared part's prefill), checked through real runs against the emulator."""

from __future__ import annotations

import urllib.request

import pandas as pd

from harness.emulator.prefixcache import BLOCK_TOKENS, PrefixCache
from harness.scenario.models import Workload
from harness.workload import RequestFactory
from tests.support.emulator import get_json
from tests.support.processes import emulator_process
from tests.support.runs import run_cli, run_dir, write


def test_the_cache_hits_whole_blocks_of_a_matching_prefix_only():
    c = PrefixCache(capacity_blocks=8)
    a = " ".join(f"w{i}" for i in range(40))          # 2 full blocks of 16 + 8 words
    assert c.match(a) == 0
    assert c.match(a) == 2 * BLOCK_TOKENS
    b = " ".join(f"w{i}" for i in range(20)) + " other" * 20
    assert c.match(b) == BLOCK_TOKENS                  # the first block only: the second differs
    assert c.match("x " + a) == 0                      # a shifted prompt shares no prefix
    for k in range(10):                                # evicted beyond capacity (LRU)
        c.match(" ".join(f"k{k}_{i}" for i in range(16)))
    assert c.match(a) == 0


def test_requests_share_one_of_a_few_prefixes_in_every_stream():
    wl = Workload.model_validate({"seed": 3, "shared_prefix": {"count": 3, "tokens": 50},
                                  "prompt_tokens": {"dist": "fixed", "value": 10}})
    factories = [RequestFactory(wl, s) for s in range(4)]
    specs = [f.next() for f in factories for _ in range(20)]
    heads = {" ".join(r.prompt.split()[:50]) for r in specs}
    assert len(heads) == 3
    assert all(r.input_tokens == 60 == len(r.prompt.split()) for r in specs)
    assert len({r.prompt for r in specs}) == len(specs)     # the rest of each prompt is its own


def _reset(url):
    urllib.request.urlopen(urllib.request.Request(url + "/emulator/ground_truth/reset", method="POST")).read()


def test_shared_prefixes_hit_the_cache_of_each_replica_and_cut_ttft(tmp_path):
    """Two prefixes of 1600 tokens over two replicas: at most 2 x 2 first sights miss, every other
    request hits all 100 blocks (ground truth), and the emulator's TTFT drops against the same
    lengths without sharing."""
    shared = """
name: prefix
target: {protocol: tgi}
workload: {seed: 1, shared_prefix: {count: 2, tokens: 1600}, prompt_tokens: {dist: fixed, value: 16},
           output_tokens: {dist: fixed, value: 4}}
load: {mode: rate, arrival: constant, levels: [12], warmup_s: 0, duration_s: 2, cooldown_s: 0}
"""
    plain = shared.replace("shared_prefix: {count: 2, tokens: 1600}, prompt_tokens: {dist: fixed, value: 16}",
                           "prompt_tokens: {dist: fixed, value: 1616}")
    with emulator_process("--replicas", "2", profile="cpu-demo") as urls:
        url = urls[0]
        flags = sum((["--url", u] for u in urls), [])
        for u in urls:
            _reset(u)
        (tmp_path / "a").mkdir()
        p = run_cli([write(tmp_path / "a", shared), *flags], tmp_path / "a")
        assert p.returncode in (0, 4), p.stderr
        gt = get_json(url + "/emulator/ground_truth")
        for u in urls:
            _reset(u)
        (tmp_path / "b").mkdir()
        q = run_cli([write(tmp_path / "b", plain), *flags], tmp_path / "b")
        assert q.returncode in (0, 4), q.stderr
        gt_plain = get_json(url + "/emulator/ground_truth")
    req = pd.read_parquet(run_dir(tmp_path / "a") / "requests.parquet")
    tot = gt["total"]
    # every request was looked up (a request left in flight when the plan ended may go unrecorded)
    assert len(req) >= 20 and len(req) <= tot["prefix_lookups"] <= len(req) + 2 and (req.input_tokens == 1616).all()
    assert tot["prefix_hits"] >= tot["prefix_lookups"] - 2 * len(urls)
    assert tot["prefix_hit_tokens"] == tot["prefix_hits"] * 1600
    assert gt_plain["total"]["prefix_hits"] == 0
    assert gt["total"]["ttft_us"]["p50"] + 5000 < gt_plain["total"]["ttft_us"]["p50"], (gt, gt_plain)


def test_shared_prefix_bounds_are_refused():
    import pytest

    from harness.errors import InputError
    from harness.scenario.loader import parse_scenario

    for bad, msg in (("{count: 0, tokens: 5}", "greater than 0"), ("{count: 10001, tokens: 5}", "less than or equal"),
                     ("{count: 2}", "tokens"), ("{count: 2, tokens: 1e29}", "less than or equal"),
                     ("{count: true, tokens: 4}", "expected a number")):
        with pytest.raises(InputError) as e:
            parse_scenario(f"name: x\nworkload:\n  shared_prefix: {bad}\n", "s.yaml")
        assert msg in str(e.value) and "s.yaml:3" in str(e.value), str(e.value)
