"""How a run ends: the analysis, the report files and the exit code, the same for every door.

:func:`exit_code` is the one place the exit code is decided. Precedence, first match wins:

====  ========================================================================================
2     bad input: a scenario, dataset or flag is wrong (raised before any load is sent)
3     the target could not be reached: replicas never became healthy, or no ``--url`` answers
130   stopped early: Ctrl-C, SIGTERM, a stop from the web UI or Locust's ``-t``; the cell under
      way is ``partial`` and never counted as meeting the SLO
4     a cell's measurement is invalid (its verdict, :mod:`harness.analysis.verdict`): its
      numbers cannot be trusted, whatever the SLO says
1     the SLO gate failed (``every``: a measured cell violates the SLO, or none was measured;
      ``recommended``: the recommended configuration does not meet it)
0     otherwise
====  ========================================================================================

``run`` and ``locust -f`` gate on every cell (a CI check of one configuration); ``sweep`` gates
on the recommended configuration (a search where some cells are expected to fail).

``compare A B --strict`` uses the same codes in the same sense (:func:`strict_compare_code`):
2 the runs are not like for like (or share no cell), 4 a common cell is invalid in either run,
1 B is worse than A on a figure beyond the intervals, else 0. Without ``--strict`` it exits 0.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SLO, EXIT_INPUT, EXIT_TARGET, EXIT_STOPPED = 0, 1, 2, 3, 130
EXIT_INVALID = 4
STOPPED = ("interrupted", "stopped")


def exit_code(status: str, analysis=None, gate: str = "every") -> int:
    """The run's exit code from its status and analysis; see the module docstring."""
    if status == "bad-input":
        return EXIT_INPUT
    if status == "launch-failed":
        return EXIT_TARGET
    if status in STOPPED:
        return EXIT_STOPPED
    if analysis is None or not analysis.cells:
        return EXIT_SLO
    if getattr(analysis, "invalid_cells", None):
        return EXIT_INVALID
    if gate == "recommended":
        return EXIT_OK if analysis.recommendation.meets_slo else EXIT_SLO
    return EXIT_OK if all(c.slo_ok is not False for c in analysis.cells) else EXIT_SLO


def strict_compare_code(cmp) -> tuple[int, str]:
    """``compare --strict``'s exit code and why, for a
    :class:`~harness.analysis.compare.Comparison`.
    Precedence, first match wins: 2 not like for like (workload, SLO, target, harness version or
    host hardware differ; or no common cell), 4 a common cell's measurement is invalid in A or B,
    1 a figure of a common cell is worse in B beyond the two runs' 95% intervals (where either
    side has none: by 5% or more), 0 otherwise."""
    if not cmp.comparable:
        aspects = ", ".join(cmp.differing_aspects())
        return EXIT_INPUT, f"not like for like: the runs differ in {aspects}"
    if not cmp.cells:
        return EXIT_INPUT, "the runs share no cell"
    bad = cmp.invalid_cells()
    if bad:
        return EXIT_INVALID, "invalid measurement (its verdict) in " + ", ".join(bad)
    worse = cmp.regressions()
    if worse:
        return EXIT_SLO, f"B is worse on {len(worse)} figure(s): " + "; ".join(map(str, worse))
    return EXIT_OK, "like for like, nothing worse beyond the intervals"


def write_outputs(run_dir: Path, *, latency_key: str | None = None):
    """summary.json, cells.csv and report.html for ``run_dir``; (analysis, paths) or (None, None)
    when the analysis fails (the run directory is kept and ``slm-harness report`` can retry)."""
    from harness.report.render import write_report

    try:
        return write_report(run_dir, latency_key=latency_key)
    except Exception as e:  # noqa: BLE001 - the records are safe; the report can be redone
        log.exception("the report could not be written")
        print(f"slm-harness: the report could not be written ({type(e).__name__}: {e}); "
              f"retry with: slm-harness report {run_dir}", file=sys.stderr)
        return None, None


def partial_line(result) -> str | None:
    if not result.cells_partial and not result.message:
        return None
    cells = ", ".join(result.cells_partial) or "none"
    return (f"run stopped: {result.message or result.status}; partial cell(s): {cells}; "
            f"{len(result.cells_done)} finished cell(s) kept")
