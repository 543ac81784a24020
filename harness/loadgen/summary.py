"""Console table and machine-readable summary of cells run by the load generator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.loadgen.result import CellResult


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def print_table(results: list[CellResult], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=160)
    t = Table(title="slm-harness: measured window per cell (latency in ms)")
    for col in ("cell", "req", "err", "tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "TPOT p50",
                "e2e p99", "SLO"):
        t.add_column(col, justify="right" if col not in ("cell", "SLO") else "left")
    for r in results:
        h = r.measure.hist
        errs = r.measure.requests - r.measure.ok
        failed = [c.name for c in r.slo.checks if not c.ok]
        slo = "-" if not r.slo.checks else ("met" if not failed else "VIOLATED " + ",".join(failed))
        t.add_row(r.cell, str(r.measure.requests), str(errs), f"{r.output_tokens_per_s:.0f}",
                  _ms(h.percentile_s("ttft", 50)), _ms(h.percentile_s("ttft", 99)),
                  _ms(h.percentile_s("itl", 50)), _ms(h.percentile_s("itl", 99)),
                  _ms(h.percentile_s("tpot", 50)), _ms(h.percentile_s("e2e", 99)), slo)
    console.print(t)
    print_diagnostics(results, console)


def print_diagnostics(results: list[CellResult], console=None) -> None:
    """What the load generator saw beyond the analysis: errors by class, a reader that fell behind."""
    from rich.console import Console

    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=160)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.measure.errors.items():
            errors[k] = errors.get(k, 0) + v
    if errors:
        console.print("errors by class: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    behind = [r for r in results if r.measure.reader_late]
    if behind:
        worst = max(r.measure.reader_lag_max_ns for r in behind) / 1e6
        console.print(f"the load generator fell behind in {', '.join(r.cell for r in behind)} "
                      f"({sum(r.measure.reader_late for r in behind)} read passes found data that had waited "
                      f">= 5 ms, up to {worst:.1f} ms): token times are the kernel's arrival stamps, but "
                      "tokens of one stream that queued together share one; use more generator "
                      "processes (--processes N) if ITL matters at this load")


def summary_dict(results: list[CellResult], run_dir: str | None = None, *, analysis=None,
                 partial: list[str] | None = None) -> dict:
    """The generator's figures per cell; the SLO verdict is the analysis's (the exit code's) when
    given, each cell's ``slo.checks`` the histogram-based detail."""
    cells = [r.summary() for r in results]
    verdict = {c.cell: c for c in analysis.cells} if analysis is not None else {}
    for c in cells:
        m = verdict.get(c["cell"])
        if m is not None:
            c["slo"]["ok"] = m.slo_ok is not False
            c["slo"]["failures"] = list(m.slo_failures)
        c["status"] = "done"
    for name in partial or []:
        cells.append({"cell": name, "status": "partial"})
    if analysis is not None:
        ok = bool(analysis.cells) and all(m.slo_ok is not False for m in analysis.cells)
    else:
        ok = all(r.slo.ok for r in results)
    return {"run_dir": run_dir, "slo_ok": ok and not partial, "cells": cells,
            "cells_partial": list(partial or [])}


def write_json(path: str | Path, results: list[CellResult], run_dir: str | None = None, *,
               analysis=None, partial: list[str] | None = None) -> None:
    Path(path).write_text(json.dumps(summary_dict(results, run_dir, analysis=analysis,
                                                  partial=partial), indent=2, default=str))
