"""The bad-input table: scenario files a user gets wrong, each refused before any load is sent.

Every case is written to a file, validated through the real command line, and must give exit
code 2 and ``FILE:LINE: field.path: message`` with no traceback. The same files are then checked
in one ``slm-harness validate`` process, which must report every file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.cli import main
from tests.support.refusals import ErrorCase, assert_refused, error_table, write_case

EP = "name: x\ntarget:\n  launcher:\n    kind: endpoints\n    urls: [{}]\n"
DB = "name: x\nstore:\n  influxdb:\n    api: v1\n    database: d\n    url: {}\n"
OUT = "name: x\nworkload:\n  output_tokens: {}\n"

BAD: list[ErrorCase] = [
    # unbounded or non-finite numbers
    ("level_1e12", "name: x\nload:\n  levels: [1e12]\n", 3, "load.levels[0]", "less than or equal to 100000"),
    ("level_inf", "name: x\nload:\n  mode: rate\n  levels: [.inf]\n", 4, "load.levels[0]", "finite"),
    ("level_nan", "name: x\nload:\n  levels: [.nan]\n", 3, "load.levels[0]", "finite"),
    ("level_neg_inf", "name: x\nload:\n  levels: [-.inf]\n", 3, "load.levels[0]", "finite"),
    ("level_1e309", "name: x\nload:\n  mode: rate\n  levels: [1e309]\n", 4, "load.levels[0]", "finite"),
    ("level_true", "name: x\nload:\n  levels: [true]\n", 3, "load.levels[0]", "expected a number"),
    ("level_false", "name: x\nload:\n  levels: [4, false]\n", 3, "load.levels[1]", "expected a number"),
    ("level_text", "name: x\nload:\n  levels: [many]\n", 3, "load.levels[0]", "valid number"),
    ("levels_scalar", "name: x\nload:\n  levels: 8\n", 3, "load.levels", "valid list"),
    ("levels_auto_typo", "name: x\nload:\n  levels: atuo\n", 3, "load.levels", "'auto'"),
    ("levels_too_many", "name: x\nload:\n  levels: [" + ", ".join(["1"] * 1001) + "]\n", 3, "load.levels",
     "at most 1000"),
    ("duration_1e309", "name: x\nload:\n  duration_s: 1e309\n", 3, "load.duration_s", "finite"),
    ("duration_year", "name: x\nload:\n  duration_s: 31536000\n", 3, "load.duration_s", "less than or equal to 604800"),
    ("duration_zero", "name: x\nload:\n  duration_s: 0\n", 3, "load.duration_s", "greater than 0"),
    ("duration_bool", "name: x\nload:\n  duration_s: yes\n", 3, "load.duration_s", "expected a number"),
    ("warmup_negative", "name: x\nload:\n  warmup_s: -1\n", 3, "load.warmup_s", "greater than or equal to 0"),
    ("cooldown_inf", "name: x\nload:\n  cooldown_s: .inf\n", 3, "load.cooldown_s", "finite"),
    ("replicas_zero", "name: x\nload:\n  replicas: [0]\n", 3, "load.replicas[0]", "greater than 0"),
    ("replicas_negative", "name: x\nload:\n  replicas: [1, -1]\n", 3, "load.replicas[1]", "greater than 0"),
    ("replicas_huge", "name: x\nload:\n  replicas: [100000]\n", 3, "load.replicas[0]", "less than or equal to 256"),
    ("replicas_fraction", "name: x\nload:\n  replicas: [1.5]\n", 3, "load.replicas[0]", "fractional"),
    ("replicas_true", "name: x\nload:\n  replicas: [true]\n", 3, "load.replicas[0]", "expected a number"),
    ("max_requests_zero", "name: x\nload:\n  max_requests: 0\n", 3, "load.max_requests", "greater than 0"),
    ("max_requests_huge", "name: x\nload:\n  max_requests: 1e15\n", 3, "load.max_requests", "less than or equal"),
    ("auto_max_level_inf", "name: x\nload:\n  auto_max_level: .inf\n", 3, "load.auto_max_level", "finite"),
    ("auto_max_cells_huge", "name: x\nload:\n  auto_max_cells: 100000\n", 3, "load.auto_max_cells", "less than or equal to 1000"),
    ("auto_latency_growth_one", "name: x\nload:\n  levels: auto\n  auto_latency_growth: 1\n", 4,
     "load.auto_latency_growth", "greater than 1"),
    ("auto_min_gain_whole", "name: x\nload:\n  auto_min_gain: 1.5\n", 3, "load.auto_min_gain", "less than 1"),
    ("auto_min_gain_text", "name: x\nload:\n  auto_min_gain: 5%\n", 3, "load.auto_min_gain", "valid number"),
    ("auto_saturation_min_s_zero", "name: x\nload:\n  auto_saturation_min_s: 0\n", 3,
     "load.auto_saturation_min_s", "greater than 0"),
    ("auto_saturation_rise_neg", "name: x\nload:\n  auto_saturation_rise: -0.5\n", 3,
     "load.auto_saturation_rise", "greater than 0"),
    ("stage_target_inf", "name: x\nload:\n  stages:\n    - {duration_s: 5, target: .inf}\n", 4,
     "load.stages[0].target", "finite"),
    ("stage_missing_target", "name: x\nload:\n  stages:\n    - duration_s: 5\n", 4, "load.stages[0].target", "required"),
    ("fractional_concurrency", "name: x\nload:\n  levels: [2.5]\n", 3, "load.levels[0]", "whole number"),
    ("bad_mode", "name: x\nload:\n  mode: closed\n", 3, "load.mode", "'concurrency' or 'rate'"),
    # lengths
    ("output_1e29", OUT.format("{dist: fixed, value: 100000000000000000000000000000}"), 3,
     "workload.output_tokens.value", "less than or equal to 1000000"),
    ("output_1e29_float", OUT.format("{dist: fixed, value: 1e29}"), 3, "workload.output_tokens.value",
     "less than or equal to 1000000"),
    ("output_zero", OUT.format("{dist: fixed, value: 0}"), 3, "workload.output_tokens.value", "greater than 0"),
    ("output_fraction", OUT.format("{dist: fixed, value: 12.5}"), 3, "workload.output_tokens.value", "fractional"),
    ("output_true", OUT.format("{dist: fixed, value: true}"), 3, "workload.output_tokens.value", "expected a number"),
    ("valu_typo", OUT.format("{dist: fixed, valu: 5}"), 3, "workload.output_tokens.valu", "unknown key 'valu'"),
    ("value_missing", OUT.format("{dist: fixed}"), 3, "workload.output_tokens.value", "required"),
    ("uniform_max_below_min", OUT.format("{dist: uniform, min: 50, max: 10}"), 3, "workload.output_tokens",
     "max must be >= min"),
    ("normal_max_below_min", OUT.format("{dist: normal, mean: 50, std: 5, min: 100, max: 10}"), 3,
     "workload.output_tokens", "max must be >= min"),
    ("lognormal_max_below_min", OUT.format("{dist: lognormal, median: 50, sigma: 1, min: 100, max: 10}"), 3,
     "workload.output_tokens", "max must be >= min"),
    ("normal_mean_inf", OUT.format("{dist: normal, mean: .inf, std: 5}"), 3, "workload.output_tokens.mean", "finite"),
    ("normal_std_nan", OUT.format("{dist: normal, mean: 50, std: .nan}"), 3, "workload.output_tokens.std", "finite"),
    ("lognormal_sigma_huge", OUT.format("{dist: lognormal, median: 50, sigma: 1000}"), 3,
     "workload.output_tokens.sigma", "less than or equal to 10"),
    ("lognormal_median_huge", "name: x\nworkload:\n  prompt_tokens:\n    dist: lognormal\n    median: 1e12\n"
     "    sigma: 1\n", 5, "workload.prompt_tokens.median", "less than or equal to 1000000"),
    ("uniform_min_bool", OUT.format("{dist: uniform, min: true, max: 10}"), 3, "workload.output_tokens.min",
     "expected a number"),
    ("unknown_dist", OUT.format("{dist: gamma}"), 3, "workload.output_tokens", "gamma"),
    ("seed_huge", "name: x\nworkload:\n  seed: 1e30\n", 3, "workload.seed", "less than or equal"),
    ("top_p_zero", "name: x\nworkload:\n  sampling: {top_p: 0}\n", 3, "workload.sampling.top_p", "greater than 0"),
    ("temperature_inf", "name: x\nworkload:\n  sampling: {temperature: .inf}\n", 3,
     "workload.sampling.temperature", "finite"),
    ("top_k_huge", "name: x\nworkload:\n  sampling: {top_k: 1e12}\n", 3, "workload.sampling.top_k", "less than or equal"),
    # target
    ("endpoint_notaport", EP.format("'http://127.0.0.1:notaport'"), 5, "target.launcher.urls[0]",
     "port must be a number"),
    ("endpoint_garbage", EP.format("'::garbage::'"), 5, "target.launcher.urls[0]", "must start with http"),
    ("endpoint_no_host", EP.format("'http://:8080'"), 5, "target.launcher.urls[0]", "no host"),
    ("endpoint_bad_host", EP.format("'http://bad host:80'"), 5, "target.launcher.urls[0]", "spaces"),
    ("endpoint_port_too_big", EP.format("'http://127.0.0.1:70000'"), 5, "target.launcher.urls[0]", "port"),
    ("endpoint_bad_chars", EP.format("'http://exa$mple.com'"), 5, "target.launcher.urls[0]", "not a valid host"),
    ("endpoints_empty", "name: x\ntarget:\n  launcher: {kind: endpoints, urls: []}\n", 3, "target.launcher.urls",
     "at least 1"),
    ("request_timeout_inf", "name: x\ntarget:\n  request_timeout_s: .inf\n", 3, "target.request_timeout_s", "finite"),
    ("base_port_huge", "name: x\ntarget:\n  launcher: {kind: processes, command: [x], base_port: 99999}\n", 3,
     "target.launcher.base_port", "less than or equal to 65535"),
    ("health_path_relative", "name: x\ntarget:\n  launcher: {kind: endpoints, urls: ['http://h:1'], "
     "health_path: health}\n", 3, "target.launcher.health_path", "pattern"),
    ("balance_typo", "name: x\ntarget:\n  balance: random\n", 3, "target.balance", "round-robin"),
    ("emulator_profile_unknown", "name: x\ntarget:\n  launcher: {kind: emulator, profile: nope}\n", 3,
     "target.launcher.profile", "unknown emulator profile 'nope'"),
    ("emulator_profile_path_missing", "name: x\ntarget:\n  launcher:\n    kind: emulator\n"
     "    profile: ./absent.yaml\n", 5, "target.launcher.profile", "not found"),
    # slo, telemetry, store
    ("slo_inf", "name: x\nslo:\n  ttft_s: {p99: .inf}\n", 3, "slo.ttft_s.p99", "finite"),
    ("slo_bool", "name: x\nslo:\n  ttft_s: {p99: true}\n", 3, "slo.ttft_s.p99", "expected a number"),
    ("error_rate_nan", "name: x\nslo:\n  max_error_rate: .nan\n", 3, "slo.max_error_rate", "finite"),
    ("min_tps_huge", "name: x\nslo:\n  min_output_tokens_per_s: 1e15\n", 3, "slo.min_output_tokens_per_s",
     "less than or equal"),
    ("telemetry_rate_inf", "name: x\ntelemetry:\n  rate_hz: .inf\n", 3, "telemetry.rate_hz", "finite"),
    ("telemetry_gpu_negative", "name: x\ntelemetry:\n  gpus: [-1]\n", 3, "telemetry.gpus[0]", "greater than or equal to 0"),
    ("store_not_a_url", DB.format("not-a-url"), 6, "store.influxdb.url", "must start with http"),
    ("store_url_bad_port", DB.format("'http://127.0.0.1:port'"), 6, "store.influxdb.url", "port must be a number"),
    ("store_batch_zero", "name: x\nstore:\n  influxdb: {url: 'http://h:1', api: v1, database: d, batch_size: 0}\n", 3,
     "store.influxdb.batch_size", "greater than 0"),
    ("store_flush_inf", "name: x\nstore:\n  influxdb: {url: 'http://h:1', api: v1, database: d, "
     "flush_interval_s: .inf}\n", 3, "store.influxdb.flush_interval_s", "finite"),
    ("store_unknown_key", "name: x\nstore:\n  influxdb:\n    url: 'http://h:1'\n    tokn_env: T\n", 5,
     "store.influxdb.tokn_env", "did you mean 'token_env'"),
    # keys and YAML
    ("unknown_top_key", "name: x\nlaod: {}\n", 2, "laod", "did you mean 'load'"),
    ("name_too_long", "name: " + "a" * 300 + "\n", 1, "name", "at most 200"),
    ("name_missing", "load: {levels: [1]}\n", 1, "name", "required"),
    ("tab_indent", "name: x\nload:\n\tlevels: [1]\n", 3, None, "invalid YAML"),
    ("unclosed_bracket", "name: x\nload:\n  levels: [1, 2\n", 4, None, "invalid YAML"),
    ("python_tag", "name: x\nload: !!python/object:os.system {}\n", 2, None, "invalid YAML"),
    ("duplicate_key", "name: x\nname: y\n", 2, "name", "duplicate key"),
    ("list_document", "- a\n- b\n", 1, None, "mapping"),
    ("empty_file", "", 1, None, "empty"),
    ("scalar_document", "just text\n", 1, None, "mapping"),
]


def _write(tmp_path: Path) -> list[Path]:
    return [write_case(tmp_path, name, text) for name, text, *_ in BAD]


def test_table_is_large_enough():
    assert len(BAD) >= 60
    assert len({b[0] for b in BAD}) == len(BAD)


@error_table(BAD)
def test_bad_scenario(tmp_path, capsys, name, text, line, field, fragment):
    assert_refused(tmp_path, capsys, name, text, line, field, fragment)


def test_every_problem_of_a_file_is_shown(tmp_path, capsys):
    path = tmp_path / "many.yaml"
    path.write_text("name: x\nload:\n  levels: [.nan]\n  duraton_s: 3\n  replicas: [0]\n"
                    "workload:\n  output_tokens: {dist: fixed, valu: 5}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [e.split(": ")[2] for e in err] == [
        f"{path}:3", f"{path}:4", f"{path}:5", f"{path}:7"] or [e.split(": error: ")[1].split(": ")[0] for e in err] == [
        f"{path}:3", f"{path}:4", f"{path}:5", f"{path}:7"], err
    assert "load.levels[0]: Input should be a finite number" in err[0]
    assert "load.duraton_s: unknown key 'duraton_s' (did you mean 'duration_s'?)" in err[1]
    assert "load.replicas[0]: Input should be greater than 0" in err[2]
    # the misspelt key is reported as unknown, not as a missing 'value'
    assert err[3].endswith("workload.output_tokens.valu: unknown key 'valu' (did you mean 'value'?)")


def test_many_problems_are_capped(tmp_path, capsys):
    path = tmp_path / "many.yaml"
    path.write_text("name: x\nload:\n  levels: [" + ", ".join(["-1"] * 500) + "]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 21 and err[-1] == f"slm-harness: error: {path}:3: ... and 480 more problems", err[-2:]


def test_a_file_that_is_not_text(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: x\nload: \xff\xfe\n")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"slm-harness: error: {path}:2: not UTF-8 text (byte 0xff)"


def test_validate_checks_every_file_in_one_process(tmp_path):
    """The console script with every bad file and a good one: each bad file named, exit 2."""
    paths = _write(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text("name: fine\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", *map(str, paths), str(good)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    for p in paths:
        assert f"slm-harness: error: {p}:" in proc.stderr, p.name
    assert f"{good}: ok (fine:" in proc.stdout
    assert "no target: in the file, so it runs against the built-in emulator" in proc.stdout
    assert proc.stderr.strip().endswith(f"{len(paths)} of {len(paths) + 1} scenario files have problems")


def test_yaml_1e12_is_a_number(tmp_path):
    """``1e3`` is a number as in YAML 1.2 (PyYAML alone would read the text "1e3")."""
    from harness.scenario import load_scenario

    p = tmp_path / "s.yaml"
    p.write_text("name: x\nload:\n  mode: rate\n  levels: [1e3, 2.5E1]\n  duration_s: 1e1\n")
    s = load_scenario(p)
    assert s.load.levels == [1000.0, 25.0] and s.load.duration_s == 10.0


def test_unset_token_env_warns_at_validate_and_refuses_the_run(tmp_path, capsys):
    p = tmp_path / "db.yaml"
    p.write_text("name: x\nstore:\n  influxdb:\n    url: http://127.0.0.1:9\n    api: v1\n"
                 "    database: d\n    token_env: SLM_TEST_SURELY_UNSET_TOKEN\n")
    env = dict(os.environ)
    env.pop("SLM_TEST_SURELY_UNSET_TOKEN", None)
    assert main(["validate", str(p)]) == 0
    err = capsys.readouterr().err
    assert f"{p}:7: store.influxdb.token_env: environment variable SLM_TEST_SURELY_UNSET_TOKEN is not set" in err
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(p), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"slm-harness: error: {p}:7: store.influxdb.token_env: environment variable "
                                   "SLM_TEST_SURELY_UNSET_TOKEN is not set (it should hold the InfluxDB token; "
                                   "or give token_file)")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_missing_replica_program_warns_at_validate_and_refuses_the_run(tmp_path, capsys):
    p = tmp_path / "proc.yaml"
    p.write_text("name: x\ntarget:\n  launcher:\n    kind: processes\n"
                 "    command: [/nonexistent/serve, --port, '{port}']\n")
    assert main(["validate", str(p)]) == 0
    assert (f"{p}:5: target.launcher.command[0]: program not found: /nonexistent/serve"
            in capsys.readouterr().err)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(p), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err == (f"slm-harness: error: {p}:5: target.launcher.command[0]: program not found: "
                   "/nonexistent/serve (not a file, or not on PATH here)")
    assert not (tmp_path / "r").exists()


def test_set_token_env_value_never_shown(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLM_TEST_TOKEN", "s3cr3t-value")
    p = tmp_path / "db.yaml"
    p.write_text("name: x\nstore:\n  influxdb:\n    url: http://127.0.0.1:9\n    api: v1\n"
                 "    database: d\n    token_env: SLM_TEST_TOKEN\n    password_env: SLM_TEST_UNSET_PW\n")
    assert main(["validate", str(p)]) == 0
    err = capsys.readouterr().err
    assert "SLM_TEST_UNSET_PW is not set" in err and "s3cr3t" not in err


def test_refused_credentials_say_so_and_give_the_replay_command(influxdb_auth, tmp_path, caplog,
                                                                 monkeypatch):
    """After a 401 the last word names the refusal (not "unreachable ... the next run") and the
    exact command that writes the spool; that command then works once the password is right."""
    import logging
    import shlex

    from harness.records.schema import GpuSample
    from harness.scenario import load_scenario
    from harness.store.writer import writer_from_config

    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text(
        f"name: x\nstore:\n  influxdb:\n    url: {influxdb_auth.url}\n    api: v1\n    database: harness\n"
        "    username_env: BI_TEST_USER\n    password_env: BI_TEST_PW\n")
    monkeypatch.setenv("BI_TEST_USER", "admin")
    monkeypatch.setenv("BI_TEST_PW", "wrong-pw-1a2b3c")
    cfg = load_scenario(run / "scenario.yaml").store.influxdb
    w = writer_from_config(cfg, run)
    w.write_gpu_samples([GpuSample(ts_ns=1_700_000_000_000_000_000 + i * 50_000_000, gpu=0,
                                   source="emulated", power_w=100.0 + i, run_id="bi") for i in range(40)])
    st = w.close(timeout_s=1.5)
    assert st["spool_points"] == 40
    text = caplog.text
    assert "replayed by the next run" not in text and "unreachable" not in text
    assert "the database refused the credentials (HTTP 401" in text
    command = f"python -m harness.store.replay {run / 'influx-spool'} --scenario {run / 'scenario.yaml'}"
    assert command in text
    assert "wrong-pw-1a2b3c" not in text

    monkeypatch.setenv("BI_TEST_PW", "s3cret-admin-pw")
    argv = shlex.split(command)
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "40 points replayed, 0 still spooled" in proc.stdout
