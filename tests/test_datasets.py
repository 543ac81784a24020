"""Datasets from local files: ShareGPT conversations, JSONL pairs, CSV and Parquet columns, lengths
from a local tokenizer.json, filters, seeded sampling, one clear error per malformed record, and a
real run against the emulator whose ground truth counts what the records say was sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from harness.errors import InputError
from harness.scenario.loader import parse_scenario
from harness.scenario.models import Dataset
from harness.workload.dataset import load_dataset
from tests.support.emulator import emulate_process, get_json
from tests.support.processes import ROOT, bare_env
from tests.support.runs import run_cli, run_dir, write

DATA = ROOT / "scenarios" / "data"
TOK = str(DATA / "tokenizer.json")


def _ds(**kw) -> Dataset:
    return Dataset(**{"shuffle": False, **kw})


def test_the_sample_files_are_what_the_script_writes(tmp_path):
    before = {f.name: f.read_bytes() for f in DATA.iterdir()}
    p = subprocess.run([sys.executable, "scripts/make_sample_workloads.py"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert {f.name: f.read_bytes() for f in DATA.iterdir()} == before


def test_every_format_reads_the_same_prompts_and_lengths():
    pairs = [json.loads(line) for line in (DATA / "pairs.jsonl").read_text().splitlines()]
    want = [(p["prompt"], len(p["answer"].split())) for p in pairs]
    for ds in (_ds(path=str(DATA / "pairs.jsonl"), output_field="answer"),
               _ds(path=str(DATA / "sharegpt.json"), format="sharegpt"),
               _ds(path=str(DATA / "prompts.csv"), format="csv", output_tokens_field="output_tokens"),
               _ds(path=str(DATA / "prompts.parquet"), format="parquet", output_tokens_field="output_tokens")):
        rows = load_dataset(ds, 0)
        assert [(r.prompt, r.output_tokens) for r in rows] == want, ds.format
        assert [r.input_tokens for r in rows] == [len(p.split()) for p, _ in want]


def test_sharegpt_jsonl_and_messages_form_and_records_without_a_reply_are_skipped(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(o) for o in [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c"},
                      {"role": "assistant", "content": "d e"}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
        {"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "q r"},
                           {"from": "gpt", "value": "s t u v"}]}]) + "\n")
    rows = load_dataset(_ds(path=str(f), format="sharegpt"), 0)
    assert [(r.prompt, r.output_tokens) for r in rows] == [("a b c", 2), ("q r", 4)]


def test_lengths_come_from_the_tokenizer_json():
    tok = Tokenizer.from_file(TOK)
    rows = load_dataset(_ds(path=str(DATA / "sharegpt.json"), format="sharegpt", tokenizer=TOK), 0)
    convs = [c for c in json.loads((DATA / "sharegpt.json").read_text()) if len(c["conversations"]) > 1]
    assert [r.input_tokens for r in rows] == [len(tok.encode(c["conversations"][0]["value"],
                                                             add_special_tokens=False).ids) for c in convs]
    assert [r.output_tokens for r in rows] == [len(tok.encode(c["conversations"][1]["value"],
                                                              add_special_tokens=False).ids) for c in convs]
    assert sum(r.input_tokens for r in rows) > 1.2 * sum(len(r.prompt.split()) for r in rows)


def test_length_filters_and_seeded_sampling():
    base = dict(path=str(DATA / "sharegpt.json"), format="sharegpt", tokenizer=TOK)
    every = load_dataset(_ds(**base), 0)
    kept = load_dataset(_ds(**base, min_prompt_tokens=40, max_prompt_tokens=120, max_output_tokens=100), 0)
    assert 0 < len(kept) < len(every)
    assert all(40 <= r.input_tokens <= 120 and r.output_tokens <= 100 for r in kept)
    assert len(kept) == sum(40 <= r.input_tokens <= 120 and r.output_tokens <= 100 for r in every)
    a = load_dataset(_ds(**base, sample=10), 7)
    b = load_dataset(_ds(**base, sample=10), 7)
    c = load_dataset(_ds(**base, sample=10), 8)
    assert len(a) == 10 and [r.prompt for r in a] == [r.prompt for r in b] != [r.prompt for r in c]


def _parquet(path: Path, **cols) -> None:
    pq.write_table(pa.table(cols), path)


@pytest.mark.parametrize("name,fmt,body,kw,rec,field,msg", [
    ("a.json", "sharegpt", json.dumps([{"conversations": []}, {"turns": []}]), {}, 2, "conversations",
     "missing 'conversations'"),
    ("a.json", "sharegpt", json.dumps([{"conversations": [{"from": "human"}]}]), {}, 1, "conversations[0]",
     "missing text"),
    ("a.json", "sharegpt", json.dumps([{"conversations": "hi"}]), {}, 1, "conversations", "list of turns"),
    ("a.jsonl", "sharegpt", '{"conversations": [{"value": "x"}]}\n', {}, 1, "conversations[0]", "speaker"),
    ("a.jsonl", "sharegpt", '{"conversations": []}\n[1]\n', {}, 2, None, "JSON object"),
    ("p.jsonl", "jsonl", '{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n', {"output_field": "answer"}, 2,
     "answer", "missing or empty output text"),
    ("p.csv", "csv", "prompt,n\nhello,3\n,4\n", {"output_tokens_field": "n"}, 3, "prompt", "missing or empty prompt"),
    ("p.csv", "csv", "prompt,n\nhello,3\nbye,zero\n", {"output_tokens_field": "n"}, 3, "n", "positive integer"),
    ("p.csv", "csv", "text,n\nhello,3\n", {}, 1, "prompt", "no such column"),
    ("p.parquet", "parquet", None, {"output_tokens_field": "n"}, 2, "n", "positive integer"),
])
def test_each_malformed_record_names_file_record_and_field(tmp_path, name, fmt, body, kw, rec, field, msg):
    f = tmp_path / name
    if body is None:
        _parquet(f, prompt=["a", "b"], n=[3, -1])
    else:
        f.write_text(body)
    with pytest.raises(InputError) as e:
        load_dataset(_ds(path=str(f), format=fmt, **kw), 0)
    assert (e.value.line, e.value.field) == (rec, field) and msg in e.value.message
    assert str(e.value).startswith(f"{f}:{rec}: ")


def test_bad_files_and_bounds_are_refused(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a Parquet file"):
        load_dataset(_ds(path=str(tmp_path / "x.parquet"), format="parquet"), 0)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(InputError, match="not a tokenizer.json"):
        load_dataset(_ds(path=str(DATA / "pairs.jsonl"), tokenizer=str(tmp_path / "t.json")), 0)
    with pytest.raises(InputError, match="inside the length filters"):
        load_dataset(_ds(path=str(DATA / "pairs.jsonl"), min_prompt_tokens=100_000), 0)
    for bad, m in (("min_prompt_tokens: 0", "greater than 0"), ("max_output_tokens: 1000001", "less than or equal"),
                   ("sample: .nan", "finite"), ("sample: true", "expected a number"),
                   ("{min_prompt_tokens: 9, max_prompt_tokens: 3}", "max_prompt_tokens must be >="),
                   ("format: xml", "format")):
        body = bad if bad.startswith("{") else "{" + bad + "}"
        text = f"name: x\nworkload:\n  dataset:\n    path: {DATA / 'pairs.jsonl'}\n    " + \
            body.strip("{}").replace(", ", "\n    ") + "\n"
        with pytest.raises(InputError) as e:
            parse_scenario(text, "s.yaml")
        assert m in str(e.value) and "s.yaml:" in str(e.value), (bad, str(e.value))


def test_validate_exits_2_naming_the_record(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"},
                                                                    {"from": "gpt", "value": "yo"}]},
                                                 {"conversations": [{"from": "human", "value": 5}]}]))
    f = write(tmp_path, "name: x\nworkload: {dataset: {path: c.json, format: sharegpt}}\n")
    p = subprocess.run([sys.executable, "-m", "harness", "validate", f], cwd=ROOT, capture_output=True,
                       text=True, env=bare_env(), timeout=60)
    assert p.returncode == 2 and f"{tmp_path / 'c.json'}:2: conversations[0]: missing text" in p.stderr + p.stdout


def test_a_sharegpt_run_sends_the_sampled_records_and_the_emulator_agrees(tmp_path):
    """ShareGPT records filtered to 10..60 words: every request's prompt length (the emulator's
    own count, one token per word) falls inside the filter, the output lengths are the replies'
    and the emulator's ground truth received every request and sent every token the records hold."""
    rows = load_dataset(_ds(path=str(DATA / "sharegpt.json"), format="sharegpt", min_prompt_tokens=10,
                            max_prompt_tokens=60), 0)
    text = f"""
name: sharegpt
target: {{protocol: tgi}}
workload:
  dataset: {{path: {DATA / 'sharegpt.json'}, format: sharegpt, min_prompt_tokens: 10, max_prompt_tokens: 60}}
load: {{mode: rate, arrival: poisson, levels: [30], warmup_s: 0, duration_s: 1.5, cooldown_s: 0}}
"""
    with emulate_process("fixed-50ms-10ms") as url:
        p = run_cli([write(tmp_path, text), "--url", url], tmp_path)
        gt = get_json(url + "/emulator/ground_truth")["total"]
    assert p.returncode in (0, 4), p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet")
    assert len(req) >= 20 and req.error_class.isna().all()
    assert req.input_tokens.between(10, 60).all()
    by_len = {(r.input_tokens, r.output_tokens) for r in rows}
    assert set(zip(req.input_tokens, req.output_tokens)) <= by_len
    assert gt["requests_received"] == len(req) and gt["tokens_sent"] == req.output_tokens.sum()
