"""What each request asks for and when: lengths, prompts, datasets, arrivals, the run's timeline."""

from harness.workload.arrivals import Arrivals
from harness.workload.lengths import length_sampler
from harness.workload.plan import Plan, Segment, build_plan, cell_name
from harness.workload.prompts import synthetic_prompt
from harness.workload.requests import RequestFactory

__all__ = ["Arrivals", "Plan", "RequestFactory", "Segment", "build_plan", "cell_name",
           "length_sampler", "synthetic_prompt"]
