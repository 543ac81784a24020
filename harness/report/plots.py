"""The report's figures by name, each a base64 PNG string or None when there is nothing to plot
(each family lives in its own module: trade-off planes, distributions, time series)."""

from __future__ import annotations

from harness.report.distributions import latency_cdfs
from harness.report.figure import latency_label
from harness.report.timeseries import server_metrics_plot, timeline_plot
from harness.report.tradeoffs import (
    compare_tradeoff,
    energy_vs_latency,
    energy_vs_throughput,
    interactivity,
    throughput_vs_latency,
)

__all__ = ["compare_tradeoff", "energy_vs_latency", "energy_vs_throughput", "interactivity",
           "latency_cdfs", "latency_label", "server_metrics_plot", "throughput_vs_latency",
           "timeline_plot"]
