"""Multi-turn sessions: each turn carries the growing history, think time between turns, sticky
sessions stay on one replica and hit its prefix cache; real runs against four emulated replicas."""

from __future__ import annotations

import urllib.request

import pandas as pd
import pytest

from harness.errors import InputError
from harness.scenario.loader import parse_scenario
from harness.scenario.models import Workload
from harness.workload.sessions import SessionFactory
from tests.support.emulator import get_json
from tests.support.processes import emulator_process
from tests.support.runs import run_cli, run_dir, write


def test_each_turn_carries_the_history_and_conversations_restart():
    wl = Workload.model_validate({"seed": 1, "sessions": {"turns": 3, "think_time_s": 2, "think": "exponential"},
                                  "prompt_tokens": {"dist": "fixed", "value": 10},
                                  "output_tokens": {"dist": "fixed", "value": 5}})
    f = SessionFactory(wl, 0)
    specs = [f.next() for _ in range(7)]
    assert [(s.session & 0xFFFFFF, s.turn, s.input_tokens) for s in specs] == [
        (1, 1, 10), (1, 2, 25), (1, 3, 40), (2, 1, 10), (2, 2, 25), (2, 3, 40), (3, 1, 10)]
    assert all(len(s.prompt.split()) == s.input_tokens for s in specs)
    assert specs[2].prompt.startswith(specs[1].prompt) and not specs[3].prompt.startswith(specs[2].prompt[:50])
    thinks = [f.think_s() for _ in range(4000)]
    assert abs(sum(thinks) / len(thinks) - 2.0) < 0.15


@pytest.mark.parametrize("text,msg", [
    ("workload: {sessions: {turns: 0}}\n", "greater than 0"),
    ("workload: {sessions: {turns: 1001}}\n", "less than or equal to 1000"),
    ("workload: {sessions: {turns: 2, think_time_s: -1}}\n", "greater than or equal to 0"),
    ("workload: {sessions: {turns: 2, think_time_s: .nan}}\n", "finite"),
    ("workload: {sessions: {turns: 2}}\nload: {mode: rate, max_in_flight: 3}\n", "take no max_in_flight"),
])
def test_bad_session_settings_name_their_line(text, msg):
    with pytest.raises(InputError) as e:
        parse_scenario("name: x\n" + text, "s.yaml")
    assert msg in str(e.value) and "s.yaml:" in str(e.value), str(e.value)


SCENARIO = """
name: sessions
target: {{protocol: tgi, balance: round-robin}}
workload: {{seed: {seed}, prompt_tokens: {{dist: fixed, value: 40}}, output_tokens: {{dist: fixed, value: 8}},
           sessions: {{turns: 4, think_time_s: 0.05, sticky: {sticky}}}}}
load: {{mode: concurrency, levels: [3], warmup_s: 0, duration_s: 3, cooldown_s: 0}}
"""


def _run(tmp_path, urls, sticky: bool):
    for u in urls:
        urllib.request.urlopen(urllib.request.Request(u + "/emulator/ground_truth/reset", method="POST")).read()
    d = tmp_path / str(sticky)
    d.mkdir()
    text = SCENARIO.format(sticky=str(sticky).lower(), seed=2 + sticky)   # a seed each: the caches outlive a run
    p = run_cli([write(d, text), *sum((["--url", u] for u in urls), [])], d)
    assert p.returncode in (0, 4), p.stderr
    tot = get_json(urls[0] + "/emulator/ground_truth")["total"]     # every replica of the process
    tot["log"] = [e for u in urls for e in get_json(u + "/emulator/arrivals")["arrivals"]]
    return pd.read_parquet(run_dir(d) / "requests.parquet"), tot


def test_sticky_sessions_stay_on_one_replica_and_hit_its_prefix_cache(tmp_path):
    with emulator_process("--replicas", "4", profile="cpu-demo") as urls:
        sticky, gt_s = _run(tmp_path, urls, True)
        loose, gt_l = _run(tmp_path, urls, False)
    for req in (sticky, loose):
        assert req.error_class.isna().all() and req.turn.max() == 4
        # the history grows: turn k carries k prompts of 40 and k-1 answers of 8 tokens (the
        # emulator's own count of the prompt it received)
        assert (req.input_tokens == 48 * req.turn - 8).all()
    # the emulator's own log: every prompt it read is a turn's (40, 88, 136 or 184 tokens), as
    # many of each as the records hold (plus any still in flight when the run ended)
    from collections import Counter
    for req, gt in ((sticky, gt_s), (loose, gt_l)):
        seen = Counter(e[1] for e in gt["log"])
        assert set(seen) <= {40, 88, 136, 184}
        assert all(seen[n] >= c for n, c in Counter(req.input_tokens).items())
    later = sticky[sticky.turn > 1]
    assert len(later) >= 8
    assert (sticky.groupby("session").replica.nunique() == 1).all()
    assert loose.groupby("session").replica.nunique().max() > 1
    # every later sticky turn finds the previous turn's prompt cached on its replica: its whole
    # 16-token blocks (a turn never hits more: its text was never sent before)
    full = lambda req: int(sum((48 * (k - 1) - 8) // 16 * 16 for k in req.turn if k > 1))   # noqa: E731
    assert gt_s["prefix_hits"] >= len(later) and gt_s["prefix_hit_tokens"] >= full(sticky)
    # round robin over 4 replicas with 3 conversations: a later turn mostly lands where its
    # history is not cached (least-outstanding would keep a closed loop's user on one replica
    # by itself: the one it just freed)
    assert gt_l["prefix_hit_tokens"] < 0.5 * full(loose)


def test_open_loop_starts_conversations_per_second_and_each_runs_its_turns(tmp_path):
    """mode rate with sessions: 4 conversations started per second (constant), 3 turns each with
    0.1 s think time: first turns 0.25 s apart, later turns follow their answer, the history grows,
    every id fits in 64 bits and the emulator received every request."""
    text = """
name: open-sessions
target: {protocol: tgi}
workload: {seed: 5, prompt_tokens: {dist: fixed, value: 20}, output_tokens: {dist: fixed, value: 4},
           sessions: {turns: 3, think_time_s: 0.1}}
load: {mode: rate, arrival: constant, levels: [4], warmup_s: 0, duration_s: 2, cooldown_s: 0}
"""
    from tests.support.emulator import emulate_process

    with emulate_process("fixed-50ms-10ms") as url:
        urllib.request.urlopen(urllib.request.Request(url + "/emulator/ground_truth/reset", method="POST")).read()
        p = run_cli([write(tmp_path, text), "--url", url], tmp_path)
        gt = get_json(url + "/emulator/ground_truth")["total"]
    assert p.returncode in (0, 4), p.stderr
    req = pd.read_parquet(run_dir(tmp_path) / "requests.parquet").sort_values("intended_ns")
    assert req.error_class.isna().all() and gt["requests_received"] == len(req)
    first = req[req.turn == 1]
    assert 7 <= len(first) <= 9 and first.session.nunique() == len(first)
    gaps = first.intended_ns.diff().dropna() / 1e9
    assert (abs(gaps - 0.25) < 0.002).all()
    assert (req.input_tokens == 24 * req.turn - 4).all()
    done = req.groupby("session").turn.agg(["min", "max", "count"])
    assert (done["min"] == 1).all() and (done["max"] == 3).sum() >= 6 and (done["count"] == done["max"]).all()
    for _, s in req.groupby("session"):
        s = s.sort_values("turn")
        if len(s) > 1:   # a later turn is due after the previous answer and 0.1 s of thought
            assert ((s.intended_ns.iloc[1:].to_numpy() - s.end_ns.iloc[:-1].to_numpy()) / 1e9 >= 0.099).all()
    assert req.request_id.nunique() == len(req) and req.session.max() < 2**62
    # per-turn and per-session figures: summary.json, turns.csv/sessions.csv, console, report
    import json
    d = run_dir(tmp_path)
    figs = json.loads((d / "summary.json").read_text())["sessions"]
    (cell,) = req.cell.unique()
    turns = {t["turn"]: t for t in figs["turns"]}
    measured = req[req.phase == "measure"]
    assert sorted(turns) == [1, 2, 3]
    for k, t in turns.items():
        assert t["cell"] == cell and t["requests"] == (measured.turn == k).sum() == t["requests_ok"]
        assert t["input_tokens_mean"] == 24 * k - 4            # the history grows turn by turn
        assert 0.05 <= t["ttft_p50_s"] <= t["ttft_p99_s"] < 1.0
    (s,) = figs["sessions"]
    per = req[req.session.isin(first[first.phase == "measure"].session)].groupby("session")
    assert s["sessions"] == per.ngroups and s["complete"] == int((per.turn.max() == 3).sum())
    assert s["turns_mean"] == pytest.approx(per.size().mean())
    dur = (per.end_ns.max() - per.intended_ns.min()) / 1e9
    assert s["duration_p50_s"] == pytest.approx(dur.quantile(0.5))
    assert s["latency_p50_s"] == pytest.approx(per.e2e_s.sum().quantile(0.5))
    assert s["input_tokens_mean"] == pytest.approx(per.input_tokens.sum().mean())
    tc = pd.read_csv(d / "turns.csv")
    assert list(tc.turn) == [1, 2, 3] and list(tc.input_tokens_mean) == [20, 44, 68]
    assert pd.read_csv(d / "sessions.csv").sessions.tolist() == [s["sessions"]]
    assert "By turn" in p.stdout and "Per session" in p.stdout
    html = (d / "report.html").read_text()
    assert 'id="sessions"' in html and "<td>68</td>" in html
