"""The multi-turn tables (harness/analysis/sessions.py) for the console and the HTML report."""

from __future__ import annotations

import html

from rich.table import Table

from harness.analysis.sessions import SessionReport
from harness.report.fmt import ms, num


def _tok(v) -> str:
    return "–" if v is None else f"{v:.0f}"


def _s(v) -> str:
    return "–" if v is None else f"{v:.2f}"


_TURN_HEAD = ("cell", "turn", "requests", "ok", "input tok (mean)", "TTFT p50 ms", "TTFT p99 ms",
              "e2e p50 ms", "e2e p99 ms")
_SESSION_HEAD = ("cell", "sessions", "complete", "turns (mean)", "duration p50 s", "duration p99 s",
                 "input tok (mean)", "output tok (mean)", "latency p50 s", "latency p99 s")


def _turn_rows(rep: SessionReport) -> list[tuple[str, ...]]:
    return [(t.cell, str(t.turn), str(t.requests), str(t.requests_ok), _tok(t.input_tokens_mean),
             ms(t.ttft_p50_s), ms(t.ttft_p99_s), ms(t.e2e_p50_s), ms(t.e2e_p99_s)) for t in rep.turns]


def _session_rows(rep: SessionReport) -> list[tuple[str, ...]]:
    return [(s.cell, str(s.sessions), str(s.complete), num(s.turns_mean), _s(s.duration_p50_s),
             _s(s.duration_p99_s), _tok(s.input_tokens_mean), _tok(s.output_tokens_mean),
             _s(s.latency_p50_s), _s(s.latency_p99_s)) for s in rep.sessions]


def console_tables(rep: SessionReport) -> list[Table]:
    out = []
    for title, head, rows in (("By turn (measured window)", _TURN_HEAD, _turn_rows(rep)),
                              ("Per session (started in the measured window)", _SESSION_HEAD,
                               _session_rows(rep))):
        t = Table(title=title)
        for h in head:
            t.add_column(h, justify="left" if h == "cell" else "right")
        for r in rows:
            t.add_row(*r)
        out.append(t)
    return out


def html_section(rep: SessionReport | None) -> str:
    """The report's multi-turn section ('' for a run without sessions)."""
    if rep is None:
        return ""

    def table(head, rows) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    return ("<h2 id=\"sessions\">Multi-turn sessions</h2>\n"
            "<p class=\"meta\">By turn: the measured window's requests of each turn (the input carries "
            "the conversation so far). Per session: conversations whose first turn was sent in the "
            "window, with all their turns; duration from the first intended send to the last answer; "
            "latency: the sum of the turns' end-to-end times (think times left out). Also in "
            "turns.csv, sessions.csv and summary.json.</p>\n"
            + table(_TURN_HEAD, _turn_rows(rep)) + "\n" + table(_SESSION_HEAD, _session_rows(rep)) + "\n")
