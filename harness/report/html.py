"""report.html: one self-contained file (inline CSS, figures as data: URIs, no scripts or fetches)."""

from __future__ import annotations

import datetime as _dt
import html

from harness.analysis.metrics import STEADY_TOLERANCE
from harness.analysis.slo import describe
from harness.analysis.summary import DEFINITIONS, RunAnalysis
from harness.hostinfo import describe as describe_hw
from harness.report import plots
from harness.report.figure import latency_label
from harness.report.auto_table import html_table as auto_search_table
from harness.report.fmt import energy_source_short, interval, ms, num, pct
from harness.report.sessions import html_section
from harness.report.timeline import build_timeline
from harness.report.timeseries import no_server_figure_reason

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1360px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.meta{color:#555;font-size:13px}
.rec{padding:12px 16px;border-radius:6px;font-size:15px;margin:14px 0}
.rec.ok{background:#e8f5e9;border:1px solid #66bb6a}.rec.bad{background:#ffebee;border:1px solid #e57373}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
.scroll{overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 5px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0} td.l,th.l{text-align:left}
td.wrap{white-space:normal;min-width:70px;max-width:120px}
tr.frontier td{background:#fffde7} tr.rec td{background:#fff3c4;font-weight:600}
tr.excluded td{color:#999} .no{color:#c62828;font-weight:600} .yes{color:#2e7d32}
.figs{display:flex;flex-wrap:wrap;gap:12px} .figs img{max-width:100%;border:1px solid #eee}
figure{margin:0} figcaption{color:#555;font-size:12px;text-align:center}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:11px;font-weight:600;color:#fff}
.badge.valid{background:#2e7d32}.badge.warn{background:#ef6c00}.badge.invalid{background:#c62828}
tr.invalid td{color:#999;text-decoration:line-through}
.note{color:#555;font-size:12.5px} dl{font-size:12.5px} dt{font-weight:600;margin-top:4px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _img(b64: str | None, alt: str) -> str:
    if b64 is None:
        return f'<p class="note">({_e(alt)}: nothing to plot)</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _tradeoffs(a: RunAnalysis) -> str:
    """The frontier's three objectives, two at a time, the third as colour; then interactivity."""
    figs = [(plots.throughput_vs_latency(a), "throughput vs latency", "colour: J/token"),
            (plots.energy_vs_throughput(a), "J/token vs throughput", "colour: latency"),
            (plots.energy_vs_latency(a), "J/token vs latency", "colour: throughput"),
            (plots.interactivity(a), "interactivity", "colour: J/token")]
    return (
        '<div class="figs" id="tradeoffs">'
        + "".join(f"<figure>{_img(b, alt)}<figcaption>{_e(alt)}; frontier as a black line; "
                  f"{_e(colour)}</figcaption></figure>" if b else _img(b, alt)
                  for b, alt, colour in figs)
        + "</div>"
        '<p class="note">Black line: the Pareto frontier over throughput, latency and J/token, '
        "through its cells in the order of the x axis (a frontier cell may look beaten in one "
        "plane by a cell it beats on the third objective, the colour). Bars: 95% intervals. Red "
        "cross: an invalid cell, never on the frontier. Star: the recommendation. Latency in ms; "
        "an SLO far outside the cells is a note above the plot, its arrow pointing where it lies.</p>"
    )


def _server_metrics(a: RunAnalysis, tl) -> str:
    fig = plots.server_metrics_plot(a.run, tl)
    if fig is None:
        return f'<p class="note" id="server-metrics">{_e(no_server_figure_reason(a.run))}.</p>'
    return f'<div class="figs">{_img(fig, "server metrics per replica")}</div>'


def _cells_table(a: RunAnalysis) -> str:
    lat = a.latency_key
    kinds = {c.level_kind for c in a.cells}
    level_head = (
        "streams" if kinds == {"concurrency"} else "req/s in" if kinds == {"rate"} else "level"
    )
    head = [
        "cell",
        "verdict",
        "SLO",
        level_head,
        "out tok/s",
        "tok/s 95% CI",
        "req/s",
        "goodput req/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "ITL p50 ms",
        "ITL p99 ms",
        "TPOT p50 ms",
        "e2e p99 ms",
        f"{latency_label(lat, 'ms').replace(' (ms)', '')} 95% CI ms",
        "errors",
        "power W",
        "energy J",
        "source",
        "J/token",
        "J/token 95% CI",
        "tok/J",
        "GPU util %",
        "frontier",
    ]
    rows = []
    for c in a.cells:
        cls = c.frontier + (" rec" if c.cell == a.recommendation.cell else "")
        slo = (
            "–"
            if c.slo_ok is None
            else (
                '<span class="yes">yes</span>'
                if c.slo_ok
                else f'<span class="no" title="{_e("; ".join(c.slo_failures))}">NO</span>'
            )
        )
        fr = c.frontier + (f" by {', '.join(c.dominated_by)}" if c.dominated_by else "")
        unsteady = c.steadiness is not None and abs(c.steadiness) > STEADY_TOLERANCE
        flag = (
            f' <span class="no" title="tokens/s changed {c.steadiness:+.0%} within the window">~</span>'
            if unsteady
            else ""
        )
        vals = [
            f'<td class="l">{_e(c.cell)}</td>',
            f'<td class="l">{badge(c)}</td>',
            f"<td>{slo}</td>",
            f"<td>{c.level:g}</td>",
            f"<td>{num(c.output_tokens_per_s, 4)}{flag}</td>",
            f"<td>{ci_text(c, 'output_tokens_per_s', lambda v: num(v, 4))}</td>",
            f"<td>{num(c.request_throughput_rps)}</td>",
            f"<td>{num(c.goodput_rps)}</td>",
            f"<td>{ms(c.ttft_p50_s)}</td>",
            f"<td>{ms(c.ttft_p99_s)}</td>",
            f"<td>{ms(c.itl_p50_s)}</td>",
            f"<td>{ms(c.itl_p99_s)}</td>",
            f"<td>{ms(c.tpot_p50_s)}</td>",
            f"<td>{ms(c.e2e_p99_s)}</td>",
            f"<td>{ci_text(c, lat, ms)}</td>",
            f"<td>{pct(c.error_rate)}</td>",
            f"<td>{num(c.mean_power_w)}</td>",
            f"<td>{num(c.energy_j, 4)}</td>",
            f'<td title="{_e(c.energy_source or c.energy_note)}">{_e(energy_source_short(c.energy_source))}</td>',
            f"<td>{num(c.j_per_token)}</td>",
            f"<td>{ci_text(c, 'j_per_token', num)}</td>",
            f"<td>{num(c.tokens_per_j)}</td>",
            f"<td>{num(c.gpu_util_pct)}</td>",
            f'<td class="l wrap">{_e(fr)}</td>',
        ]
        rows.append(f'<tr class="{_e(cls)}">' + "".join(vals) + "</tr>")
    ths = "".join(
        f'<th class="l">{h}</th>' if h in ("cell", "verdict", "frontier") else f"<th>{h}</th>"
        for h in head
    )
    return (
        f'<div class="scroll"><table id="cells"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        f'<p class="note">Frontier latency objective: {_e(lat)}; objectives: '
        f'{_e(", ".join(a.frontier.objectives))}. Highlighted: frontier cells; bold: recommended; '
        f'~ after tokens/s: not steady within the window (see notes). Intervals: 95%; rates by the '
        f'percentile bootstrap, {_e(_methods(a))}; latency percentiles by order statistics of the '
        f'requests (distribution-free); ≥: an open upper end, too few requests for the percentile '
        f'(the true value may lie above the slowest request); a cell better only inside the '
        f'intervals is a tie, not a win.</p>'
    )


def _methods(a: RunAnalysis) -> str:
    ms_ = sorted({c.interval_method for c in a.cells if c.interval_method})
    words = {"requests": "over the requests of one window",
             "repeats+requests": "over repeats, then the requests within each"}
    return "; ".join(words.get(m, m) for m in ms_) or "none computed"


def ci_text(c, key: str, fmt) -> str:
    """'low–high' of a figure's 95% interval, '–' without one, '≥max' at an open end."""
    return interval(c, key, fmt)


def badge(c) -> str:
    """The cell's verdict as a coloured badge; its reasons in the tooltip."""
    tip = "; ".join(r for r in c.verdict_reasons if not r.startswith("note:")) or "every check passed"
    return f'<span class="badge {_e(c.verdict)}" title="{_e(tip)}">{_e(c.verdict)}</span>'


def _verdicts(a: RunAnalysis) -> str:
    rows = []
    for c in a.cells:
        reasons = [r for r in c.verdict_reasons if not r.startswith("note:")]
        text = "<br>".join(_e(r) for r in reasons) or "every check passed"
        rows.append(f'<tr><td class="l">{_e(c.cell)}</td><td class="l">{badge(c)}</td>'
                    f'<td class="l wrap" style="max-width:900px">{text}</td></tr>')
    return (
        '<table id="verdicts"><thead><tr><th class="l">cell</th><th class="l">verdict</th>'
        f'<th class="l">reasons</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Invalid cells are left off the frontier and the recommendation; the '
        "thresholds are the scenario's <code>validity:</code> section (docs/trust.md).</p>"
    )


def _energy_table(a: RunAnalysis) -> str:
    rows = []
    for c in a.cells:
        ea = c.energy_attribution
        if not ea:
            continue
        for cls, d in sorted(ea["by_class"].items()):
            rows.append(
                f'<tr><td class="l">{_e(c.cell)}</td><td>{num(ea["measured_j"], 4)}</td>'
                f'<td>{num(ea["idle_j"], 4)}</td><td>{num(ea["attributed_j"], 4)}</td>'
                f'<td>{num(ea.get("idle_power_w"))}</td><td class="l">{_e(cls)}</td>'
                f'<td>{d["requests"]}</td><td>{num(d["j_per_request"])}</td>'
                f'<td>{num(d["j_per_output_token"])}</td></tr>'
            )
    if not rows:
        return '<p class="note">No energy measured: nothing to attribute.</p>'
    w = next(c.energy_attribution["weights"] for c in a.cells if c.energy_attribution)
    return (
        '<table id="energy"><thead><tr><th class="l">cell</th><th>measured J</th><th>idle J</th>'
        '<th>requests J</th><th>idle W</th><th class="l">request class</th><th>whole requests</th>'
        f'<th>J/request</th><th>J/output token</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Each 100 ms of the window: the idle baseline\'s power is idle energy, the '
        f'rest is split over the requests in flight by their work (prompt tokens x {w["prefill"]:g} + '
        f'output tokens x {w["decode"]:g}); requests J + idle J = measured J. J/request: requests '
        'sent and finished inside the window.</p>'
    )


def _errors_table(a: RunAnalysis) -> str:
    classes = sorted({k for c in a.cells for k in c.errors})
    if not classes:
        return '<p class="note">No failed requests in any measured window.</p>'
    head = "".join(f"<th>{_e(k)}</th>" for k in classes)
    rows = []
    for c in a.cells:
        tds = "".join(f"<td>{c.errors.get(k, 0)}</td>" for k in classes)
        rows.append(
            f'<tr><td class="l">{_e(c.cell)}</td><td>{c.requests_started}</td><td>{pct(c.error_rate)}</td>{tds}</tr>'
        )
    return (
        f'<table id="errors"><thead><tr><th class="l">cell</th><th>started</th><th>error rate</th>{head}'
        f'</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _replica_table(a: RunAnalysis) -> str:
    head = [
        "cell",
        "replica",
        "started",
        "ok",
        "failed",
        "req/s",
        "goodput req/s",
        "out tok/s",
        "token share",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "TPOT p50 ms",
        "e2e p99 ms",
        "breaker opened",
        "sent elsewhere",
    ]
    rows = []
    for c in a.windows or a.cells:   # with repeats: each window's replicas
        for r in c.per_replica:
            rows.append(
                "<tr>"
                + "".join(
                    [
                        f'<td class="l">{_e(c.cell)}</td>',
                        f'<td class="l">{_e(r.replica)}</td>',
                        f"<td>{r.requests_started}</td>",
                        f"<td>{r.requests_ok}</td>",
                        f"<td>{r.requests_failed}</td>",
                        f"<td>{num(r.request_throughput_rps)}</td>",
                        f"<td>{num(r.goodput_rps)}</td>",
                        f"<td>{num(r.output_tokens_per_s, 4)}</td>",
                        f"<td>{pct(r.token_share)}</td>",
                        f"<td>{ms(r.ttft_p50_s)}</td>",
                        f"<td>{ms(r.ttft_p99_s)}</td>",
                        f"<td>{ms(r.tpot_p50_s)}</td>",
                        f"<td>{ms(r.e2e_p99_s)}</td>",
                        f"<td>{_count(r.breaker_opened)}</td>",
                        f"<td>{_count(r.breaker_skipped)}</td>",
                    ]
                )
                + "</tr>"
            )
    ths = "".join(
        f'<th class="l">{h}</th>' if h in ("cell", "replica") else f"<th>{h}</th>" for h in head
    )
    return (
        f'<table id="replicas"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Replicas share one GPU, so energy and power are per cell, not per replica. '
        "Breaker opened: times the replica's circuit breaker opened in the window; sent elsewhere: "
        "requests the balancer sent to another replica while it was open.</p>"
    )


def _count(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _notes(a: RunAnalysis) -> str:
    items = list(a.notes) + list(a.frontier.notes)
    for c in a.cells:
        for n in c.notes:
            items.append(f"{c.cell}: {n}")
        if c.energy_note:
            items.append(f"{c.cell}: energy {c.energy_note}")
    srcs = sorted({c.itl_source for c in a.cells if c.itl_source})
    if srcs:
        items.append("ITL percentiles from: " + ", ".join(srcs))
    srcs = sorted({str(c.energy_source) for c in a.cells if c.energy_source})
    if srcs:
        items.append("energy sources: " + ", ".join(srcs))
    if a.run.manifest.get("telemetry_note"):
        items.append(str(a.run.manifest["telemetry_note"]))
    for n, kv in sorted((a.run.manifest.get("kv_budgets") or {}).items()):
        if kv.get("warning"):     # replicas of unequal KV budgets (harness/launch/memory.py)
            items.append(f"{n} replicas: {kv['warning']}")
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>" if items else ""


def _levels(levels) -> str:
    return levels if isinstance(levels, str) else ", ".join(f"{x:g}" for x in levels)


def render_html(a: RunAnalysis) -> str:
    mf = a.run.manifest
    sc = a.run.scenario
    title = f"slm-harness report: {sc.name if sc else a.run_id}"
    rec = a.recommendation
    tl = build_timeline(a.run)
    versions = ", ".join(f"{k} {v}" for k, v in (mf.get("versions") or {}).items())
    gpu = mf.get("gpu") or mf.get("gpus") or ""
    meta = [
        f"run <b>{_e(a.run_id)}</b>",
        f"status {_e(mf.get('status', '?'))}",
        f"host {_e(mf.get('host', '?'))}",
        f"started {_e(mf.get('started_at', '?'))}",
    ]
    if gpu:
        meta.append(f"GPU {_e(gpu)}")
    hw = describe_hw(mf.get("hardware"))
    if hw:
        meta.append(f"hardware: {_e(hw)}")
    versions_seen = sorted({str(v.get("version")) for v in (mf.get("servers") or {}).values()
                            if isinstance(v, dict) and v.get("version")})
    if versions_seen:
        meta.append(f"server version {_e(', '.join(versions_seen))}")
    if mf.get("emulated") is not None:
        meta.append("emulated replicas" if mf.get("emulated") else "real replicas")
    desc = f"<p>{_e(sc.description)}</p>" if sc and sc.description else ""
    workload = ""
    if sc is not None:
        workload = (
            f"<p class=\"meta\">{_e(sc.target.protocol)} via {_e(sc.target.launcher.kind)}, "
            f"model {_e(sc.target.model)}; load {_e(sc.load.mode)}, levels {_e(_levels(sc.load.levels))}, "
            f"replicas {_e(', '.join(map(str, sc.load.replicas)))}; warm-up {sc.load.warmup_s:g} s, measured "
            f"{sc.load.duration_s:g} s, cool-down {sc.load.cooldown_s:g} s per cell.</p>"
        )
    defs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in DEFINITIONS.items())
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class="meta">{" · ".join(meta)}</p>{desc}{workload}
<div class="rec {'ok' if rec.meets_slo else 'bad'}" id="recommendation">{_e(rec.sentence)}</div>
<p class="meta">SLO: {_e(describe(a.slo))}</p>
<h2>Throughput, latency and energy</h2>
{_tradeoffs(a)}
<h2>Cells (measured windows only)</h2>
{_cells_table(a)}
{auto_search_table(a)}{html_section(a.sessions)}<h2>Latency distributions</h2>
<div class="figs">{_img(plots.latency_cdfs(a), "latency CDFs per cell")}</div>
<h2>Verdicts: can each cell's numbers be trusted?</h2>
{_verdicts(a)}
<h2>Timeline</h2>
<div class="figs">{_img(plots.timeline_plot(tl), "power and tokens/s timeline")}</div>
<h2>Server metrics per replica</h2>
{_server_metrics(a, tl)}
<h2>Energy per request</h2>
{_energy_table(a)}
<h2>Errors by class</h2>
{_errors_table(a)}
<h2>Per replica</h2>
{_replica_table(a)}
<h2>Notes</h2>
{_notes(a)}
<h2>Definitions</h2>
<dl>{defs}</dl>
<p class="meta">Generated {generated} by slm-harness from the run directory {_e(a.run.path)}; versions: {_e(versions)}.</p>
</body></html>
"""
