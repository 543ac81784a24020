"""compare.html: two runs side by side in one self-contained page (the run report's CSS and
helpers; inline CSS, the figure as a data: URI, no scripts or fetches)."""

from __future__ import annotations

import datetime as _dt

from harness.analysis.compare import CellDiff, Comparison, verdict
from harness.analysis.summary import RunAnalysis
from harness.report import plots
from harness.report.fmt import change, compared, yes_no
from harness.report.console import NOISE_TEXT
from harness.report.html import CSS, _e, _img

# B better / worse than A on a metric, by at least compare.SIGNIFICANT
COMPARE_CSS = (
    CSS + "td.good{color:#2e7d32;font-weight:600} td.bad{color:#c62828;font-weight:600}\n"
    "caption{text-align:left;font-size:13px;padding:2px 0}\n"
    "span.ci{color:#666;font-size:11px}\n"
)


def _slo(ok: bool | None) -> str:
    cls = "" if ok is None else ' class="yes"' if ok else ' class="no"'
    return f"<td{cls}>{yes_no(ok)}</td>"


def _cell_table(d: CellDiff) -> str:
    rows = []
    for col, label, higher_better, va, vb, ch, noise in d.rows():
        good = verdict(ch, higher_better, noise)
        cls = "" if good is None else ' class="good"' if good else ' class="bad"'
        ia, ib = d.intervals.get(col, (None, None))
        oa, ob = d.open_ends.get(col, ("", ""))
        rows.append(
            f'<tr><td class="l">{_e(label)}</td><td>{compared(col, va)}{_ci(col, ia, oa)}</td>'
            f"<td>{compared(col, vb)}{_ci(col, ib, ob)}</td><td{cls}>{change(ch)}</td>"
            f'<td class="noise">{_e(NOISE_TEXT.get(noise, ""))}</td></tr>'
        )
    rows.append(f'<tr><td class="l">SLO met</td>{_slo(d.slo_a)}{_slo(d.slo_b)}<td></td><td></td></tr>')
    rows.append(
        f'<tr><td class="l">frontier</td><td>{_e(d.frontier_a or "–")}</td>'
        f"<td>{_e(d.frontier_b or '–')}</td><td></td><td></td></tr>"
    )
    rows.append(
        f'<tr><td class="l">verdict</td><td>{_e(d.verdict_a or "–")}</td>'
        f"<td>{_e(d.verdict_b or '–')}</td><td></td><td></td></tr>"
    )
    return (
        f'<table class="cmp" id="cell-{_e(d.cell)}"><caption><b>{_e(d.cell)}</b></caption>'
        '<thead><tr><th class="l">metric</th><th>A</th><th>B</th><th>change</th>'
        '<th>95% CIs</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _ci(col: str, ci, how: str = "") -> str:
    """' (low–high)'; an open end (too few requests for the percentile) as '≥high' / '≤low'."""
    if ci is None:
        return ""
    lo = ("≤" if how in ("lower", "both") else "") + compared(col, ci[0])
    hi = ("≥" if how in ("upper", "both") else "") + compared(col, ci[1])
    return f' <span class="ci">({lo}–{hi})</span>'


def _differences(cmp: Comparison) -> str:
    if not cmp.differences:
        return ('<p id="differences" class="meta">Like for like: same workload, SLO, target, '
                "harness version and host hardware.</p>")
    rows = "".join(
        f'<tr><td class="l">{_e(d.aspect)}</td><td class="l">{_e(d.field)}</td>'
        f'<td class="l">{_e(_show(d.a))}</td><td class="l">{_e(_show(d.b))}</td></tr>'
        for d in cmp.differences
    )
    return (
        f'<div class="rec bad" id="not-like-for-like"><b>Not like for like</b>: the runs differ in '
        f"{_e(', '.join(cmp.differing_aspects()))}; a change below may come from that.</div>"
        '<table class="cmp" id="differences"><thead><tr><th class="l">aspect</th>'
        '<th class="l">field</th><th class="l">A</th><th class="l">B</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _show(v) -> str:
    return "(none)" if v is None else str(v)


def _rec(tag: str, run_id: str, sentence: str, meets_slo: bool) -> str:
    return (
        f'<div class="rec {"ok" if meets_slo else "bad"}" id="recommendation-{tag.lower()}">'
        f"<b>{tag}</b> ({_e(run_id)}): {_e(sentence)}</div>"
    )


def _only(tag: str, names: list[str]) -> str:
    shown = _e(", ".join(names)) if names else "none"
    return f'<p id="only-{tag.lower()}">Cells only in {tag}: {shown}</p>'


def render_compare_html(cmp: Comparison, a: RunAnalysis, b: RunAnalysis) -> str:
    """The page for ``compare(a, b)``: ``a`` and ``b`` give the figure and the SLO verdicts."""
    title = f"slm-harness comparison: {cmp.run_a} vs {cmp.run_b}"
    notes = "".join(f"<li>{_e(n)}</li>" for n in cmp.notes)
    tables = "".join(_cell_table(d) for d in cmp.cells)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{COMPARE_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="meta">A: run <b id="run-a">{_e(cmp.run_a)}</b> ({_e(a.run.path)}) · B: run
<b id="run-b">{_e(cmp.run_b)}</b> ({_e(b.run.path)}) · change is B relative to A;
green: B better, red: B worse: beyond both runs' 95% intervals (they do not overlap), or by
5% or more where a figure has no interval; a change within the intervals is not coloured</p>
{_differences(cmp)}
{_rec("A", cmp.run_a, cmp.recommendation_a, a.recommendation.meets_slo)}
{_rec("B", cmp.run_b, cmp.recommendation_b, b.recommendation.meets_slo)}
{f'<ul class="note" id="notes">{notes}</ul>' if notes else ""}
{_only("A", cmp.only_a)}
{_only("B", cmp.only_b)}
<h2>Throughput vs latency</h2>
<div class="figs">{_img(plots.compare_tradeoff(a, b), "throughput vs latency, both runs")}</div>
<h2>Common cells</h2>
<div class="figs">{tables or '<p class="note">The runs share no cell.</p>'}</div>
<p class="meta">Generated {generated} by slm-harness.</p>
</body></html>
"""
