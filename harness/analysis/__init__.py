"""Per-cell metrics, energy, goodput, Pareto frontier, knee search and run comparison.

Reads a run directory only (see :mod:`harness.analysis.rundata`); nothing here talks to servers.
"""

from harness.analysis.compare import Comparison, compare
from harness.analysis.knee import KneeSearch, LevelResult
from harness.analysis.metrics import CellMetrics, ReplicaMetrics, compute_cells
from harness.analysis.pareto import Frontier, Point, pareto_frontier
from harness.analysis.recommend import Recommendation, recommend
from harness.analysis.rundata import RunData, load_run
from harness.analysis.summary import RunAnalysis, analyze, default_latency_key

__all__ = [
    "CellMetrics",
    "Comparison",
    "Frontier",
    "KneeSearch",
    "LevelResult",
    "Point",
    "Recommendation",
    "ReplicaMetrics",
    "RunAnalysis",
    "RunData",
    "analyze",
    "compare",
    "compute_cells",
    "default_latency_key",
    "load_run",
    "pareto_frontier",
    "recommend",
]
