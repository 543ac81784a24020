"""The short probe before ``levels: auto`` explores: two brief closed-loop windows whose latency
growth tells the search where to start (:func:`harness.analysis.knee.estimate_start`).

The probe's requests never enter the run directory or the store, so it is no cell and never on
the frontier; what it measured and estimated goes into ``manifest.json: auto_probe`` and the
run's notes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.knee import ProbeEstimate, ProbePoint, estimate_start, min_level_for

#: the probe's streams: one (no batching) and a few (the batch's cost per sequence shows)
PROBE_STREAMS = (1, 8)


class _Records(list):
    """A record sink the load generator can append to and flush."""

    def append(self, rec) -> None:
        super().append(rec.to_dict() if hasattr(rec, "to_dict") else dict(rec))

    def flush(self) -> None:
        pass


class _ProbeDir:
    """What the load generator writes a run into, kept in memory."""

    def __init__(self, run_id: str, path: Path):
        self.run_id, self.path = run_id, path
        self.requests = _Records()
        self.windows: list = []

    def write_histograms(self, cell: str, hist: dict) -> None:
        pass


def probe_scenario(scenario, window_s: float):
    """The scenario in closed loop, with brief windows and no ramp (validation is skipped on
    purpose: open-loop knobs of the original stay, unused)."""
    load = scenario.load.model_copy(update={
        "mode": "concurrency", "warmup_s": min(1.0, window_s), "duration_s": window_s,
        "cooldown_s": 0.0, "stages": [], "max_requests": None, "repeats": 1})
    return scenario.model_copy(update={"load": load})


def run_probe(scenario, urls: list[str], replicas: int, *, run_id: str, run_dir: Path,
              processes: int = 0) -> ProbeEstimate | None:
    """Run the probe against ``urls`` and estimate the start; None when it measured nothing
    (worker processes, if any, log under ``run_dir``/logs like the cells' do)."""
    from harness.loadgen.driver import run_plan

    ld = scenario.load
    window_s = float(ld.auto_probe_s)
    cap = ld.auto_max_level if ld.mode == "concurrency" else max(PROBE_STREAMS)
    streams = sorted({int(min(s, cap)) for s in PROBE_STREAMS if s >= 1})
    sc = probe_scenario(scenario, window_s)
    pdir = _ProbeDir(run_id, run_dir)
    results = run_plan(sc, list(urls), replicas, [float(s) for s in streams], pdir,
                       run_id=run_id, processes=processes)
    df = pd.DataFrame(list(pdir.requests))
    points = []
    for res, s in zip(results, streams):
        if df.empty:
            break
        ok = df[(df["cell"] == res.cell) & (df["phase"] == "measure") & df["error_class"].isna()]
        if len(ok):
            points.append(ProbePoint.from_requests(s, ok, res.measure_s))
    if not points:
        return None
    return estimate_start(points, scenario.slo, mode=ld.mode, min_gain=ld.auto_min_gain,
                          max_level=float(ld.auto_max_level), min_level=min_level_for(ld.mode),
                          window_s=window_s)
