"""One JSONL reader for datasets and traces (harness/workload/localfile.py): the same malformed
file gives the same error through both, naming the file and the line; the CLI exits 2."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.scenario.models import Dataset, Trace
from harness.workload.dataset import load_dataset
from harness.workload.trace import load_trace
from tests.support.runs import run_cli, write


def _dataset(p):
    load_dataset(Dataset(path=str(p), format="jsonl"), seed=1)


def _trace(p):
    load_trace(Trace(path=str(p), format="mooncake"))


OK = b'{"prompt": "a b", "timestamp": 0, "input_length": 2, "output_length": 2}\n'   # both read it


@pytest.mark.parametrize("body,line,msg", [
    (OK + b'\n{"prompt": \n', 3, "not valid JSON"),
    (OK + b'[1, 2]\n', 2, "each line must be a JSON object"),
    (OK + b'{"prompt": "caf\xe9"}\n', 2, "not valid JSON (str is not valid UTF-8"),
    (None, None, "no such file"),
])
def test_a_malformed_jsonl_file_reads_the_same_as_a_dataset_and_as_a_trace(tmp_path, body, line, msg):
    p = tmp_path / "x.jsonl"
    if body is not None:
        p.write_bytes(body)
    errs = []
    for load in (_dataset, _trace):
        with pytest.raises(InputError) as e:
            load(p)
        errs.append(e.value)
    for e in errs:
        assert e.file == str(p) and e.line == line and msg in e.message, str(e)
    if msg == "no such file":
        assert [e.message for e in errs] == ["cannot read dataset: no such file", "cannot read trace: no such file"]
    else:
        assert errs[0].message == errs[1].message


def test_the_cli_names_the_trace_line_and_exits_2_before_any_load(tmp_path):
    t = tmp_path / "t.jsonl"
    t.write_text('{"timestamp": 0, "input_length": 4, "output_length": 2}\n"oops"\n')
    sc = write(tmp_path, f"""name: bad-trace
workload: {{trace: {{path: {t}, format: mooncake}}}}
load: {{mode: rate, levels: [1], warmup_s: 0, duration_s: 1, cooldown_s: 0}}
""")
    p = run_cli([sc, "--url", "http://127.0.0.1:9"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"{t}:2: each line must be a JSON object" in p.stderr
