"""The ``levels: auto`` search as a table in the HTML report: per replica count, each level in
run order with its throughput, TTFT p50 and the knee signals it fired, under the sentence that
says why the search stopped (``summary.json: auto_search``)."""

from __future__ import annotations

import html

from harness.analysis.knee import KneeSearch, LevelResult
from harness.analysis.summary import RunAnalysis, auto_search
from harness.report.fmt import ms, num

HEAD = ("replicas", "level", "output tokens/s", "TTFT p50 ms", "signals")


def _words(ks: KneeSearch, r: LevelResult, lower: list[LevelResult]) -> str:
    said = {
        "slo": "SLO broken",
        "saturated": "over-saturated" + (f" ({r.saturation})" if r.saturation else ""),
        "plateau": f"throughput gain under {ks.min_gain:.0%}",
    }
    out = []
    for sig in ks.signals(r, lower):
        if sig == "latency":
            ratio = ks.latency_ratio(max(lower, key=lambda x: x.level), r)
            out.append(f"latency super-linear ({ratio[1]})" if ratio else "latency super-linear")
        else:
            out.append(said[sig])
    return "; ".join(out) or "–"


def rows(a: RunAnalysis, found: dict) -> list[tuple[str, ...]]:
    """One row per level of each replica count, in the order the search ran them; ``found``:
    :func:`~harness.analysis.summary.auto_search` of the run."""
    sc = a.run.scenario
    if sc is None or not found:
        return []
    ks = KneeSearch.for_load(sc.load)
    unit = "streams" if sc.load.mode == "concurrency" else "req/s"
    out = []
    for r, got in found.items():
        res = [LevelResult.from_json(x) for x in got["levels"]]
        for i, x in enumerate(res):
            lower = [y for y in res[:i] if y.level < x.level]
            out.append((str(r), f"{x.level:g} {unit}", num(x.throughput, 4), ms(x.ttft_p50_s),
                        _words(ks, x, lower)))
    return out


def html_table(a: RunAnalysis) -> str:
    """The search's section (heading, table, stop sentences); "" for a run without
    ``levels: auto``."""
    found = auto_search(a.run)
    body = rows(a, found)
    if not body:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEAD)
    trs = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in body)
    why = "".join(f"<li>{e(r)} replica(s): {e(got['stopped'])}</li>"
                  for r, got in found.items())
    return (f'<h2>The knee search (levels: auto)</h2>\n<table id="auto-search"><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>'
            f"<ul>{why}</ul>\n")
