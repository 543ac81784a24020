"""Scenario files: the one input that says what a run does."""

from harness.scenario.loader import load_scenario, parse_scenario, scenario_json_schema
from harness.scenario.models import Scenario

__all__ = ["Scenario", "load_scenario", "parse_scenario", "scenario_json_schema"]
