"""Workload: seeded length distributions, prompts, datasets, arrivals and the run's timeline."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from harness.errors import InputError
from harness.scenario.loader import parse_scenario
from harness.scenario.models import Dataset, Fixed, Load, LogNormal, Normal, Uniform, Workload
from harness.workload import Arrivals, RequestFactory, build_plan, cell_name, length_sampler, synthetic_prompt
from harness.workload.dataset import load_dataset


def _draw(dist, n=20000, seed=1):
    f = length_sampler(dist, random.Random(seed))
    return [f() for _ in range(n)]


def test_fixed_and_uniform():
    assert set(_draw(Fixed(value=64), 100)) == {64}
    xs = _draw(Uniform(dist="uniform", min=10, max=20))
    assert min(xs) == 10 and max(xs) == 20
    assert abs(statistics.mean(xs) - 15) < 0.2


def test_normal_clipped():
    xs = _draw(Normal(dist="normal", mean=100, std=20, min=50, max=140))
    assert min(xs) >= 50 and max(xs) <= 140
    assert abs(statistics.mean(xs) - 100) < 1.0
    assert 17 < statistics.pstdev(xs) < 21


def test_lognormal_median_and_sigma():
    xs = _draw(LogNormal(dist="lognormal", median=150, sigma=0.5, min=1))
    assert abs(statistics.median(xs) - 150) < 4
    logs = [math.log(x) for x in xs]
    assert abs(statistics.pstdev(logs) - 0.5) < 0.02


def test_same_seed_same_requests_and_streams_differ():
    wl = Workload(seed=5, prompt_tokens=Uniform(dist="uniform", min=4, max=40),
                  output_tokens=LogNormal(dist="lognormal", median=50, sigma=0.4))
    a = [RequestFactory(wl, 0).next() for _ in range(1)]
    f1, f2, g = RequestFactory(wl, 0), RequestFactory(wl, 0), RequestFactory(wl, 1)
    s1 = [f1.next() for _ in range(50)]
    s2 = [f2.next() for _ in range(50)]
    s3 = [g.next() for _ in range(50)]
    assert [(r.prompt, r.max_tokens) for r in s1] == [(r.prompt, r.max_tokens) for r in s2]
    assert [(r.prompt, r.max_tokens) for r in s1] != [(r.prompt, r.max_tokens) for r in s3]
    assert a[0].prompt == s1[0].prompt
    for r in s1:
        assert len(r.prompt.split()) == r.input_tokens
    assert len({r.request_id for r in s1 + s3}) == 100


def test_synthetic_prompt_length_and_variety():
    rng = random.Random(0)
    ps = [synthetic_prompt(128, rng) for _ in range(20)]
    assert all(len(p.split()) == 128 for p in ps)
    assert len(set(ps)) == 20


def test_dataset_rows_and_output_lengths(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"q": "one two three", "n": 5}\n\n{"q": "four five", "n": 7}\n')
    wl = Workload(dataset=Dataset(path=str(p), prompt_field="q", output_tokens_field="n", shuffle=False))
    f = RequestFactory(wl, 0)
    got = [(r.prompt, r.max_tokens, r.input_tokens) for r in (f.next(), f.next(), f.next())]
    assert got == [("one two three", 5, 3), ("four five", 7, 2), ("one two three", 5, 3)]


@pytest.mark.parametrize("text,line,field,msg", [
    ('{"q": "a", "n": 1}\n{"q": \n', 2, None, "not valid JSON"),
    ('{"q": "a", "n": 1}\n[1]\n', 2, None, "JSON object"),
    ('{"q": "a", "n": 1}\n{"x": "b"}\n', 2, "q", "missing or empty prompt"),
    ('{"q": "a", "n": 0}\n', 1, "n", "positive integer"),
])
def test_dataset_errors_name_file_line_field(tmp_path, text, line, field, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_dataset(Dataset(path=str(p), prompt_field="q", output_tokens_field="n"), 0)
    assert e.value.line == line and e.value.field == field and msg in e.value.message
    assert str(p) in str(e.value)


def test_arrivals_constant_and_poisson():
    c = Arrivals("constant", 1)
    assert c.gap_s(4.0) == 0.25
    p = Arrivals("poisson", 1)
    gaps = [p.gap_s(50.0) for _ in range(20000)]
    assert abs(statistics.mean(gaps) - 0.02) < 0.0008
    assert abs(statistics.pstdev(gaps) - 0.02) < 0.0012     # exponential: sd == mean
    a, b = Arrivals("poisson", 9, 2), Arrivals("poisson", 9, 2)
    assert [a.gap_s(3) for _ in range(5)] == [b.gap_s(3) for _ in range(5)]
    with pytest.raises(ValueError):
        Arrivals("bursty", 0)


def test_plan_levels_back_to_back_with_ramp():
    load = Load(mode="concurrency", levels=[4, 16], warmup_s=1, duration_s=3, cooldown_s=0.5,
                stages=[{"duration_s": 2, "target": 8}])
    plan = build_plan(load, [4, 16], 2)
    phases = [(s.cell, s.phase, s.start_s, s.end_s) for s in plan.segments]
    assert phases == [("r2-c4", "ramp", 0, 2), ("r2-c4", "warmup", 2, 3), ("r2-c4", "measure", 3, 6),
                      ("r2-c4", "cooldown", 6, 6.5), ("r2-c16", "ramp", 6.5, 8.5),
                      ("r2-c16", "warmup", 8.5, 9.5), ("r2-c16", "measure", 9.5, 12.5),
                      ("r2-c16", "cooldown", 12.5, 13.0)]
    assert plan.total_s == 13.0
    assert plan.segments[0].value_at(1.0) == 4.0       # ramp 0 -> 8 over 2 s
    assert plan.segments[4].value_at(7.5) == 6.0       # ramp 4 -> 8 from the previous level
    assert plan.at(3.5).phase == "measure" and plan.at(13.0) is None
    assert plan.window("r2-c16", "measure") == (9.5, 12.5)
    assert cell_name(1, 7.5, "rate") == "r1-q7.5" and cell_name(2, 64, "concurrency") == "r2-c64"


def test_scenario_dataset_path_is_checked(tmp_path):
    with pytest.raises(InputError) as e:
        parse_scenario("name: x\nworkload:\n  dataset: {path: nope.jsonl}\n", file="s.yaml", base_dir=tmp_path)
    assert e.value.line == 3 and e.value.field == "workload.dataset.path"
