"""Locust entry for OpenAI-compatible servers (``/v1/completions``, ``/v1/chat/completions``).

    locust -f locustfiles/openai.py --scenario scenarios/chat.yaml --host http://127.0.0.1:8081 --headless

The scenario decides the protocol, workload, levels and SLO; this file only wires slm-harness into
Locust (users, the plan-driven shape, merged histograms, the LLM web UI tab).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.loadgen.plugin import install  # noqa: E402
from harness.loadgen.users import ClosedLoopUser, OpenLoopUser  # noqa: E402,F401

LLMPlanShape = install("openai-completions")
