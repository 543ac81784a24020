"""Trace replay: Mooncake, Azure and BurstGPT files, time windows and speed-up, replayed open loop
through real runs against the emulator: intended send times follow the trace, the lengths are the
trace's, shared hash_ids blocks hit the emulator's prefix cache, bad records name file:line: field."""

from __future__ import annotations

import urllib.request

import pandas as pd
import pytest

from harness.errors import InputError
from harness.scenario.loader import parse_scenario
from harness.scenario.models import Trace
from harness.workload.trace import TraceFactory, load_trace
from tests.support.emulator import emulate_process, get_json
from tests.support.processes import ROOT
from tests.support.runs import run_cli, run_dir, write

DATA = ROOT / "scenarios" / "data"


def test_the_three_formats_give_the_same_schedule():
    moon = load_trace(Trace(path=str(DATA / "mooncake.jsonl"), format="mooncake", block_tokens=64))
    az = load_trace(Trace(path=str(DATA / "azure.csv"), format="azure"))
    bg = load_trace(Trace(path=str(DATA / "burstgpt.csv"), format="burstgpt"))
    assert len(moon) == len(az) == 283 and len(bg) == 283 - 283 // 25     # failed rows skipped
    for a, b in zip(moon, az):
        assert abs(a.offset_s - b.offset_s) < 0.002 and a.output_tokens == b.output_tokens
    assert [e.offset_s for e in az] == sorted(e.offset_s for e in az) and az[0].offset_s == 0


def test_window_and_speedup():
    full = load_trace(Trace(path=str(DATA / "azure.csv"), format="azure"))
    w = load_trace(Trace(path=str(DATA / "azure.csv"), format="azure", start_s=5, end_s=10, speedup=4))
    inside = [e for e in full if 5 <= e.offset_s < 10]
    assert len(w) == len(inside) and all(0 <= e.offset_s < 1.25 for e in w)
    assert [round(e.offset_s * 4 + 5, 6) for e in w] == [round(e.offset_s, 6) for e in inside]


def test_mooncake_blocks_become_shared_prompt_prefixes():
    tr = Trace(path=str(DATA / "mooncake.jsonl"), format="mooncake", block_tokens=64)
    es = load_trace(tr)
    f, g = TraceFactory(tr, es, 0, 0, 2), TraceFactory(tr, es, 0, 1, 2)
    by_first = {}
    for fac in (f, g):
        for e in fac.entries:
            p = fac.prompt(e).split()
            assert len(p) == e.input_tokens
            if e.hash_ids and e.input_tokens >= 64:
                by_first.setdefault(e.hash_ids[0], set()).add(" ".join(p[:64]))
    assert all(len(v) == 1 for v in by_first.values())     # one block id, one text, in every stream
    assert len({next(iter(v)) for v in by_first.values()}) == len(by_first)


@pytest.mark.parametrize("fmt,name,body,line,field", [
    ("mooncake", "t.jsonl", '{"timestamp": 1, "input_length": 5, "output_length": 2}\n{"timestamp": -4, '
     '"input_length": 5, "output_length": 2}\n', 2, "timestamp"),
    ("mooncake", "t.jsonl", '{"timestamp": 1, "input_length": "x", "output_length": 2}\n', 1, "input_length"),
    ("mooncake", "t.jsonl", '{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": "a"}\n', 1,
     "hash_ids"),
    ("mooncake", "t.jsonl", '{"timestamp": 1,\n', 1, None),
    ("azure", "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2025-01-01 00:00:01,5,2\nyesterday,5,2\n", 3,
     "TIMESTAMP"),
    ("azure", "t.csv", "TIMESTAMP,ContextTokens\n2025-01-01 00:00:01,5\n", 1, "GeneratedTokens"),
    ("burstgpt", "t.csv", "Timestamp,Request tokens,Response tokens\n0.5,5,2\nnan,5,2\n", 3, "Timestamp"),
    ("burstgpt", "t.csv", "Timestamp,Request tokens,Response tokens\n0.5,0,2\n", 2, "Request tokens"),
])
def test_each_malformed_trace_record_names_file_line_and_field(tmp_path, fmt, name, body, line, field):
    f = tmp_path / name
    f.write_text(body)
    with pytest.raises(InputError) as e:
        load_trace(Trace(path=str(f), format=fmt))
    assert (e.value.line, e.value.field) == (line, field), str(e.value)
    assert str(e.value).startswith(f"{f}:{line}: ")


@pytest.mark.parametrize("extra,msg", [
    ("  trace: {path: T, format: azure, speedup: 0}\n", "greater than 0"),
    ("  trace: {path: T, format: azure, speedup: 1001}\n", "less than or equal to 1000"),
    ("  trace: {path: T, format: azure, start_s: 5, end_s: 5}\n", "end_s must be > start_s"),
    ("  trace: {path: T, format: azure, end_s: .inf}\n", "finite"),
    ("  trace: {path: T, format: csv}\n", "format"),
    ("  trace: {path: T, format: azure}\nload: {mode: concurrency}\n", "load.mode must be rate"),
    ("  trace: {path: T, format: azure}\nload: {mode: rate, levels: [1, 2]}\n", "one level"),
    ("  trace: {path: T, format: azure, start_s: 9999}\nload: {mode: rate, levels: [1]}\n", "no request inside"),
])
def test_bad_trace_settings_are_refused_at_load(extra, msg):
    text = "name: x\nworkload:\n" + extra.replace("T", str(DATA / "azure.csv"))
    if "load:" not in text:
        text += "load: {mode: rate, levels: [1]}\n"
    with pytest.raises(InputError) as e:
        parse_scenario(text, "s.yaml")
    assert msg in str(e.value), str(e.value)


def test_a_mooncake_replay_keeps_the_traces_times_and_lengths_and_hits_the_prefix_cache(tmp_path):
    """The first 4 s of the trace at 2x speed: every request's intended send time is its trace
    time / 2 from the first (within 1 ms), its lengths are the trace's, the emulator received each
    one, and the requests sharing hash_ids blocks hit its prefix cache."""
    tr = Trace(path=str(DATA / "mooncake.jsonl"), format="mooncake", block_tokens=64, end_s=4, speedup=2)
    want = load_trace(tr)
    text = f"""
name: replay
target: {{protocol: tgi}}
workload: {{trace: {{path: {DATA / 'mooncake.jsonl'}, format: mooncake, block_tokens: 64, end_s: 4, speedup: 2}}}}
load: {{mode: rate, levels: [1], warmup_s: 0, duration_s: 2.5, cooldown_s: 0}}
"""
    with emulate_process("fixed-50ms-10ms") as url:
        urllib.request.urlopen(urllib.request.Request(url + "/emulator/ground_truth/reset", method="POST")).read()
        p = run_cli([write(tmp_path, text), "--url", url], tmp_path)
        gt = get_json(url + "/emulator/ground_truth")["total"]
        log = get_json(url + "/emulator/arrivals")["arrivals"]
    assert p.returncode in (0, 4), p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet").sort_values("intended_ns")
    assert len(req) == len(want) and req.error_class.isna().all()
    got = (req.intended_ns - req.intended_ns.iloc[0]) / 1e9
    assert (abs(got.to_numpy() - [e.offset_s for e in want]) < 1e-3).all()
    assert list(req.input_tokens) == [e.input_tokens for e in want]
    assert list(req.output_tokens) == [e.output_tokens for e in want]
    assert gt["requests_received"] == len(req)
    shared = sum(1 for i, e in enumerate(want) if e.hash_ids and e.hash_ids[0] < 1000
                 and any(o.hash_ids[:1] == e.hash_ids[:1] for o in want[:i]))
    assert shared > 5 and gt["prefix_hits"] >= shared
    # the emulator's own log: when it read each request (wall clock, the records' clock: one host):
    # the k-th read comes no earlier than the k-th intended send, the median within 20 ms. Not timed
    # from the first read (a slow first connection shifted every other request by it), and no max:
    # under 4 CPU hogs a tenth of the reads came 0.4-0.6 s late, the host's doing, not the pacing's
    assert len(log) == len(want)
    delay = (pd.Series(sorted(e[0] for e in log)) - sorted(req.intended_ns)) / 1e9
    assert delay.min() > -0.001 and delay.median() < 0.02 and delay.quantile(0.75) < 0.5, delay.describe()
    assert sorted(e[1] for e in log) == sorted(e.input_tokens for e in want)
    assert sum(e[1] - e[2] for e in log) == gt["prefix_hit_tokens"]      # prefill saved by the cache
    lag = (req.start_ns - req.intended_ns) / 1e6
    assert lag.quantile(0.5) < 20     # a busy 2-core host: loose; benchmarks/replay_fidelity.py measures it
