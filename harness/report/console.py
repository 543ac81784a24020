"""Rich tables for the terminal (plain text when the output is not a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.analysis.compare import Comparison, verdict
from harness.analysis.summary import RunAnalysis
from harness.report.fmt import change, compared, interval, ms, num, pct, yes_no


def cells_table(a: RunAnalysis) -> Table:
    t = Table(title=f"{a.run_id}: measured windows", show_lines=False)
    for h in (
        "cell",
        "out tok/s",
        "95% CI",
        "req/s",
        "goodput",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "objective CI ms",
        "ITL p99 ms",
        "TPOT p50 ms",
        "errors",
        "power W",
        "J/token",
        "SLO",
        "verdict",
        "frontier",
    ):
        t.add_column(h, justify="left" if h in ("cell", "frontier") else "right")
    for c in a.cells:
        star = " *" if c.cell == a.recommendation.cell else ""
        t.add_row(
            c.cell + star,
            num(c.output_tokens_per_s, 4),
            _ci(c, "output_tokens_per_s"),
            num(c.request_throughput_rps),
            num(c.goodput_rps),
            ms(c.ttft_p50_s),
            ms(c.ttft_p99_s),
            _ci(c, a.latency_key, ms),
            ms(c.itl_p99_s),
            ms(c.tpot_p50_s),
            pct(c.error_rate),
            num(c.mean_power_w),
            num(c.j_per_token),
            yes_no(c.slo_ok),
            {"valid": "valid", "warn": "[yellow]warn[/]", "invalid": "[red]INVALID[/]"}.get(
                c.verdict, c.verdict
            ),
            c.frontier,
        )
    return t


def _ci(c, key: str, fmt=lambda v: num(v, 4)) -> str:
    return interval(c, key, fmt)


def make_console() -> Console:
    """A console that does not squeeze wide tables into 80 columns when output is a file or pipe."""
    con = Console()
    return con if con.is_terminal else Console(width=180)


def print_analysis(a: RunAnalysis, console: Console | None = None) -> None:
    con = console or make_console()
    if a.cells:
        con.print(cells_table(a))
    if a.sessions is not None:
        from harness.report.sessions import console_tables

        for t in console_tables(a.sessions):
            con.print(t)
    from harness.hostinfo import describe

    hw = describe(a.run.manifest.get("hardware"))
    if hw:
        con.print(f"hardware: {hw}", markup=False, highlight=False)
    for n in a.notes + a.frontier.notes:
        con.print(f"note: {n}")
    methods = sorted({c.interval_method for c in a.cells if c.interval_method})
    if methods:
        con.print("intervals: 95%; rates: bootstrap over " + " / ".join(
            "the requests of one window" if m == "requests" else "repeats, then requests"
            for m in methods) + "; latency percentiles: order statistics of the requests"
            + (" (pooled, widened to each repeat's own)" if "repeats+requests" in methods else "")
            + ("; ≥: open upper end, too few requests for the percentile"
               if any(c.intervals_open for c in a.cells) else ""))
    for c in a.cells:
        ea = c.energy_attribution
        if ea:
            parts = [f"{cls} {num(d['j_per_request'])} J/request, {num(d['j_per_output_token'])} "
                     f"J/output token" for cls, d in sorted(ea["by_class"].items())]
            con.print(f"energy {c.cell}: {num(ea['measured_j'], 4)} J = idle {num(ea['idle_j'], 4)} J"
                      f" + requests {num(ea['attributed_j'], 4)} J; " + "; ".join(parts),
                      markup=False, highlight=False)
    for c in a.cells:
        for r in c.verdict_reasons:
            if not r.startswith("note:"):
                con.print(f"{c.cell}: {r}", markup=False, highlight=False)


def compare_table(cmp: Comparison) -> Table:
    t = Table(title=f"B vs A   A={cmp.run_a}   B={cmp.run_b}")
    t.add_column("cell")
    t.add_column("metric")
    for h in ("A", "B", "change"):
        t.add_column(h, justify="right")
    t.add_column("95% CIs")
    for d in cmp.cells:
        first = True
        for col, label, higher_better, va, vb, ch, noise in d.rows():
            text = change(ch)
            good = verdict(ch, higher_better, noise)
            if good is not None:
                text = f"[{'green' if good else 'red'}]{text}[/]"
            t.add_row(d.cell if first else "", label, compared(col, va), compared(col, vb), text,
                      NOISE_TEXT.get(noise, ""))
            first = False
        t.add_row("", "SLO met", yes_no(d.slo_a), yes_no(d.slo_b), "", "")
        t.add_row("", "verdict", d.verdict_a, d.verdict_b, "", "", end_section=True)
    return t


# how a change compares with the two runs' 95% intervals
NOISE_TEXT = {"within": "within (overlap)", "beyond": "beyond"}


def print_differences(cmp: Comparison, con: Console) -> None:
    """What differs between the runs' setups, before any number."""
    if not cmp.differences:
        con.print("The runs are comparable: same workload, SLO, target, harness version and host hardware.")
        return
    con.print(f"[bold yellow]Not like for like[/]: the runs differ in {', '.join(cmp.differing_aspects())}:")
    for d in cmp.differences:
        con.print(f"  {d.aspect}: {d}", markup=False, highlight=False)


def print_comparison(cmp: Comparison, console: Console | None = None) -> None:
    con = console or make_console()
    print_differences(cmp, con)
    con.print(compare_table(cmp))
    if cmp.only_a:
        con.print("only in A: " + ", ".join(cmp.only_a))
    if cmp.only_b:
        con.print("only in B: " + ", ".join(cmp.only_b))
    con.print(f"A: {cmp.recommendation_a}")
    con.print(f"B: {cmp.recommendation_b}")
    for n in cmp.notes:
        con.print(f"note: {n}")
