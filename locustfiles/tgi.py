"""Locust entry for TGI-style servers (``POST /generate_stream``).

    locust -f locustfiles/tgi.py --scenario scenarios/demo.yaml --host http://127.0.0.1:8081 --headless

The scenario decides the protocol, workload, levels and SLO; this file only wires slm-harness into
Locust (users, the plan-driven shape, merged histograms, the LLM web UI tab).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loadgen.plugin import install  # noqa: E402
from harness.loadgen.users import ClosedLoopUser, OpenLoopUser  # noqa: E402,F401

LLMPlanShape = install("tgi")
