"""Write a run's outputs: summary.json, cells.csv, replicas.csv and report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.analysis.rundata import RunData
from harness.analysis.summary import RunAnalysis, analyze
from harness.report.html import render_html


@dataclass
class ReportPaths:
    html: Path
    summary: Path
    csv: Path


def write_report(
    run: RunAnalysis | RunData | str | Path,
    *,
    out_dir: Path | None = None,
    latency_key: str | None = None,
) -> tuple[RunAnalysis, ReportPaths]:
    a = run if isinstance(run, RunAnalysis) else analyze(run, latency_key=latency_key)
    d = Path(out_dir or a.run.path)
    summary, csv = a.write(d)
    html_path = d / "report.html"
    tmp = d / "report.html.tmp"
    tmp.write_text(render_html(a), encoding="utf-8")
    tmp.replace(html_path)
    return a, ReportPaths(html_path, summary, csv)
