"""Bad scenario files: one message with file, line and field path, and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.support.refusals import ErrorCase, assert_refused, error_table

GOOD = Path(__file__).resolve().parent.parent / "scenarios"

BAD: list[ErrorCase] = [
    ("unknown_top_key", "name: x\nlaod: {}\n", 2, "laod", "unknown key"),
    ("unknown_nested_key", "name: x\nload:\n  levels: [1]\n  duraton_s: 5\n", 4, "load.duraton_s", "unknown key"),
    ("negative_rate", "name: x\nload:\n  mode: rate\n  levels: [2, -1]\n", 4, "load.levels[1]", "greater than 0"),
    ("zero_concurrency", "name: x\nload:\n  levels:\n    - 4\n    - 0\n", 5, "load.levels[1]", "greater than 0"),
    ("wrong_type_duration", "name: x\nload:\n  duration_s: soon\n", 3, "load.duration_s", "valid number"),
    ("missing_name", "load:\n  levels: [1]\n", 1, "name", "required"),
    ("bad_protocol", "name: x\ntarget:\n  protocol: grpc\n", 3, "target.protocol", "tgi"),
    ("bad_launcher_kind", "name: x\ntarget:\n  launcher:\n    kind: kubernetes\n", 3, "target.launcher", "kind"),
    ("launcher_typo", "name: x\ntarget:\n  launcher:\n    kind: emulator\n    profle: a\n", 5,
     "target.launcher.profle", "unknown key"),
    ("endpoints_without_urls", "name: x\ntarget:\n  launcher:\n    kind: endpoints\n", 3,
     "target.launcher.urls", "required"),
    ("uniform_max_below_min", "name: x\nworkload:\n  output_tokens: {dist: uniform, min: 50, max: 10}\n", 3,
     "workload.output_tokens", "max must be >= min"),
    ("normal_max_below_min",
     "name: x\nworkload:\n  output_tokens: {dist: normal, mean: 20, std: 2, min: 8, max: 4}\n", 3,
     "workload.output_tokens", "max must be >= min"),
    ("lognormal_max_below_min",
     "name: x\nworkload:\n  prompt_tokens: {dist: lognormal, median: 20, sigma: 1, min: 8, max: 4}\n", 3,
     "workload.prompt_tokens", "max must be >= min"),
    ("unknown_distribution", "name: x\nworkload:\n  prompt_tokens: {dist: gamma, k: 2}\n", 3,
     "workload.prompt_tokens", "gamma"),
    ("negative_std", "name: x\nworkload:\n  prompt_tokens:\n    dist: normal\n    mean: 100\n    std: -3\n", 6,
     "workload.prompt_tokens.std", "greater than or equal to 0"),
    ("slo_negative", "name: x\nslo:\n  ttft_s: {p99: -0.5}\n", 3, "slo.ttft_s.p99", "greater than 0"),
    ("slo_unknown_percentile", "name: x\nslo:\n  itl_s:\n    p98: 0.1\n", 4, "slo.itl_s.p98", "unknown key"),
    ("error_rate_over_one", "name: x\nslo:\n  max_error_rate: 1.5\n", 3, "slo.max_error_rate", "less than or equal to 1"),
    ("telemetry_rate_too_high", "name: x\ntelemetry:\n  rate_hz: 1000\n", 3, "telemetry.rate_hz", "less than or equal to 100"),
    ("missing_dataset", "name: x\nworkload:\n  dataset:\n    path: nowhere.jsonl\n", 4,
     "workload.dataset.path", "dataset file not found"),
    ("missing_tokenizer", f"name: x\nworkload:\n  dataset:\n    path: {GOOD / 'data' / 'pairs.jsonl'}\n"
     "    tokenizer: nowhere.json\n", 5, "workload.dataset.tokenizer",
     "tokenizer file not found: nowhere.json"),
    ("missing_trace",
     "name: x\nload: {mode: rate}\nworkload:\n  trace:\n    format: azure\n    path: nowhere.csv\n", 6,
     "workload.trace.path", "trace file not found: nowhere.csv"),
    ("invalid_yaml", "name: x\nload:\n  levels: [1, 2\n", 4, None, "invalid YAML"),
    ("duplicate_key", "name: x\nload:\n  levels: [1]\n  levels: [2]\n", 4, "levels", "duplicate key"),
    ("not_a_mapping", "- just\n- a list\n", 1, None, "mapping"),
    ("empty_levels", "name: x\nload:\n  levels: []\n", 3, "load.levels", "must not be empty"),
    ("replicas_zero", "name: x\nload:\n  replicas: [1, 0]\n", 3, "load.replicas[1]", "greater than 0"),
    ("influx_v2_without_bucket", "name: x\nstore:\n  influxdb:\n    url: http://127.0.0.1:8086\n", 3,
     "store.influxdb.bucket", "org and bucket"),
    ("system_prompt_on_tgi", "name: x\nworkload:\n  system_prompt: hi\n", 3, "workload.system_prompt", "openai-chat"),
    ("bad_name", "name: 'has space'\n", 1, "name", "pattern"),
]


@error_table(BAD)
def test_bad_scenario_reports_file_line_field(tmp_path, capsys, name, text, line, field, fragment):
    assert_refused(tmp_path, capsys, name, text, line, field, fragment)


def test_missing_scenario_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: scenario file not found" in capsys.readouterr().err


def test_console_script_exit_code_is_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nload:\n  levels: [-1]\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"slm-harness: error: {path}:3: load.levels[0]: Input should be greater than 0 (got -1)"


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert ": ok (" in capsys.readouterr().out


def test_dataset_path_resolved_relative_to_scenario(tmp_path):
    from harness.scenario import load_scenario

    (tmp_path / "data.jsonl").write_text('{"prompt": "hello"}\n')
    (tmp_path / "s.yaml").write_text("name: x\nworkload:\n  dataset: {path: data.jsonl}\n")
    s = load_scenario(tmp_path / "s.yaml")
    assert s.workload.dataset.path == str((tmp_path / "data.jsonl").resolve())


def test_schema_is_json_and_describes_every_section(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) >= {"name", "target", "workload", "load", "slo", "telemetry", "store"}
    assert schema["additionalProperties"] is False
