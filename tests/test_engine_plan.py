"""The engine's plan of cells and its one exit-code rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.engine.outcome import exit_code
from harness.engine.plan import Cell, RunPlan
from harness.scenario.models import Scenario
from harness.workload.plan import build_plan


def _scenario(**load) -> Scenario:
    return Scenario.model_validate({"name": "p", "load": {"levels": [4, 8], "replicas": [1, 2],
                                                          **load}})


def test_cells_are_replicas_x_levels_with_repeats_interleaved_in_each_group():
    plan = RunPlan.from_scenario(_scenario(), repeats=2)
    groups = plan.groups()
    assert [g.replicas for g in groups] == [1, 2]
    assert [c.name for c in groups[0].cells] == ["r1-c4", "r1-c8", "r1-c4-n2", "r1-c8-n2"]
    assert groups[1].cells[2] == Cell(2, 4.0, "concurrency", 1)
    assert plan.total_cells() == 8
    # the load generator names the cell the same way (the name every record carries)
    segs = build_plan(_scenario().load, [8.0], 2, repeat=1).segments
    assert {s.cell for s in segs} == {"r2-c8-n2"}


def test_a_door_narrows_the_plan_and_auto_levels_leave_the_choice_to_the_search():
    plan = RunPlan.from_scenario(_scenario(), replicas=[3], levels=[16])
    assert [c.name for g in plan.groups() for c in g.cells] == ["r3-c16"]
    auto = RunPlan.from_scenario(_scenario(levels="auto", auto_max_cells=5))
    assert auto.auto and auto.groups()[0].cells == () and auto.total_cells() == 10
    rate = RunPlan.from_scenario(_scenario(mode="rate", levels=[2.5]), replicas=[1])
    assert rate.groups()[0].cells[0].name == "r1-q2.5"


def _analysis(*verdicts, meets=True):
    cells = [SimpleNamespace(slo_ok=v) for v in verdicts]
    return SimpleNamespace(cells=cells, recommendation=SimpleNamespace(meets_slo=meets))


@pytest.mark.parametrize("status, analysis, gate, code", [
    ("bad-input", _analysis(True), "every", 2),
    ("launch-failed", _analysis(True), "every", 3),
    ("interrupted", _analysis(True), "every", 130),       # a stop wins over met cells
    ("stopped", _analysis(False), "every", 130),
    ("complete", _analysis(True, False), "every", 1),    # run / locust -f: any cell violating
    ("complete", _analysis(True, False), "recommended", 0),   # sweep: the recommendation meets
    ("complete", _analysis(False, meets=False), "recommended", 1),
    ("complete", _analysis(), "every", 1),                # nothing measured is not a pass
    ("complete", None, "every", 1),                       # no analysis (the report failed)
    ("complete", _analysis(True, None), "every", 0),      # a cell with no SLO to check
])
def test_the_exit_code_follows_its_stated_precedence(status, analysis, gate, code):
    assert exit_code(status, analysis, gate) == code
