"""slm-harness: token-level load testing, energy telemetry and Pareto sweeps for SLM serving."""

__version__ = "0.1.0"
