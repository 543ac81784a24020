"""Per-cell figures from the replicas' own ``/metrics`` (``server_metrics.parquet``): mean and max
queue size, running batch and KV-cache use per replica over the measured window(s), where the
server exposes gauges the harness knows (TGI's ``tgi_*``, vLLM's ``vllm:*``)."""

from __future__ import annotations

import pandas as pd

from harness.telemetry.server_metrics import KV_CACHE, QUEUE, RUNNING

FIGURES = (("queue", QUEUE), ("running", RUNNING), ("kv_cache", KV_CACHE))

#: cells.csv columns: the replicas' means averaged, the replicas' maxima's maximum
CSV_COLUMNS = ("server_queue_mean", "server_queue_max", "server_running_mean",
               "server_running_max", "server_kv_cache_mean", "server_kv_cache_max")


def replica_figures(samples: pd.DataFrame, spans: list[tuple[int, int]]) -> dict[str, dict]:
    """{replica: {queue_mean, queue_max, running_mean, ...}} over the samples inside ``spans``
    ([start_ns, end_ns] windows); a figure whose gauge the server lacks is left out."""
    if samples is None or samples.empty or not spans:
        return {}
    ts = samples["ts_ns"]
    inside = pd.Series(False, index=samples.index)
    for a, b in spans:
        inside |= (ts >= a) & (ts <= b)
    s = samples[inside]
    out: dict[str, dict] = {}
    for replica, rs in s.groupby("replica", sort=True):
        figs: dict = {"scrapes": int(rs["ts_ns"].nunique())}
        for fig, names in FIGURES:
            for n in names:   # the first known name the server has; its unlabelled or summed series
                g = rs[rs["name"] == n]
                if not g.empty:
                    per_scrape = g.groupby("ts_ns")["value"].sum()
                    figs[f"{fig}_mean"] = float(per_scrape.mean())
                    figs[f"{fig}_max"] = float(per_scrape.max())
                    break
        out[str(replica)] = figs
    return out


def attach(run, cells: list, windows: list) -> None:
    """Set ``server_metrics`` (per replica) and the cells.csv figures on every cell; a pooled
    cell (repeats) covers the windows of each of its repeats."""
    if run.server is None or run.server.empty:
        return
    by_name = {w.cell: w for w in windows}
    for c in cells:
        spans = [(by_name[r].start_ns, by_name[r].end_ns) for r in c.repeats if r in by_name] \
            or [(c.start_ns, c.end_ns)]
        per = replica_figures(run.server, spans)
        c.server_metrics = per
        for fig, _ in FIGURES:
            means = [v[f"{fig}_mean"] for v in per.values() if f"{fig}_mean" in v]
            maxes = [v[f"{fig}_max"] for v in per.values() if f"{fig}_max" in v]
            if means:
                setattr(c, f"server_{fig}_mean", sum(means) / len(means))
                setattr(c, f"server_{fig}_max", max(maxes))
