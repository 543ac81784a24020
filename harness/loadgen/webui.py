"""The LLM tab in Locust's web UI: live TTFT/ITL/TPOT/e2e percentiles, tokens/s, errors, power.

Locust's UI renders extra tabs from ``template_args["extended_tabs"]``/``["extended_tables"]`` and
fills them from ``extended_stats`` in its ``/stats/requests`` poll; this module adds both, plus
``GET /llm/stats`` (the same rows as JSON) and ``POST /llm/power`` (``{"power_w": W}``) so a
telemetry process can post GPU power. In-process telemetry calls :func:`report_power`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gevent

from harness.engine.hooks import Hook

TAB_KEY = "llm"
_CHARTS_JS = Path(__file__).with_name("web") / "llm.js"
_SCRIPT_TAG = '<script src="/llm/charts.js"></script>'

_STRUCTURE = [{"key": "metric", "title": "Metric"}, {"key": "value", "title": "Value"},
              {"key": "p50", "title": "p50"}, {"key": "p90", "title": "p90"},
              {"key": "p99", "title": "p99"}, {"key": "mean", "title": "Mean"},
              {"key": "count", "title": "Count"}]
_LABELS = (("ttft", "TTFT (ms)"), ("itl", "ITL (ms)"), ("tpot", "TPOT (ms)"), ("e2e", "E2E latency (ms)"))


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v * 1000:.2f}"


def _cell_figures(m) -> dict:
    def ms(v):
        return None if v is None else round(v * 1000, 2)

    return {"output_tokens_per_s": round(m.output_tokens_per_s, 1), "ttft_p50_ms": ms(m.ttft_p50_s),
            "ttft_p99_ms": ms(m.ttft_p99_s), "itl_p50_ms": ms(m.itl_p50_s),
            "itl_p99_ms": ms(m.itl_p99_s), "error_rate": m.error_rate,
            "mean_power_w": m.mean_power_w, "j_per_token": m.j_per_token}


class LlmTab(Hook):
    """Holds what the tab shows; ``collector`` is the master's (or single process's) collector.

    As a run hook it keeps one row per finished cell (``cells``) and a time series sampled once
    a second while the page polls (``series``: tokens/s, TTFT/ITL percentiles, power) for the
    live charts. ``power`` (the run's telemetry) supplies ``last_power_w`` when it samples.
    """

    def __init__(self, collector, scenario=None, power=None):
        self.collector = collector
        self.scenario = scenario
        self.power = power
        self.power_w: float | None = None
        self.power_ts_ns: int | None = None
        self.power_source: str = ""
        self.cells: list[dict] = []
        self.series: list[dict] = []
        self._last_point_ns = 0

    # -- run hooks -----------------------------------------------------------------------------
    def on_cell_done(self, cell, metrics, partial: bool) -> None:
        name = getattr(cell, "name", str(cell))
        row = {"cell": name, "status": "partial" if partial else "done"}
        if metrics is not None:
            row.update(_cell_figures(metrics))
            if not partial and metrics.slo_ok is not None:
                row["status"] = "SLO met" if metrics.slo_ok else "SLO violated"
        self.cells = [c for c in self.cells if c["cell"] != name] + [row]

    def sample(self) -> None:
        """Add a point to the live series (at most one a second)."""
        now = time.time_ns()
        if now - self._last_point_ns < 900_000_000:
            return
        self._last_point_ns = now
        col = self.collector
        if getattr(self.power, "sampler", None) is not None and \
                self.power.last_power_w is not None:      # while the run's telemetry samples
            self.set_power(self.power.last_power_w, source="telemetry")
        point = {"t": now / 1e9, "cell": None, "tokens_per_s": None, "power_w": self.power_w}
        if col is not None and col.current_cell is not None:
            cell = col.current_cell
            h = col.cell_stats(cell, ("ramp", "warmup", "measure", "cooldown")).hist
            point.update(cell=cell, tokens_per_s=round(col.tokens_per_s(5.0), 2))
            for metric in ("ttft", "itl"):
                for q in (50, 99):
                    v = h.percentile_s(metric, q) if h.h[metric].get_total_count() else None
                    point[f"{metric}_p{q}_ms"] = None if v is None else round(v * 1000, 3)
        self.series.append(point)
        del self.series[:-3600]

    def set_power(self, power_w: float, ts_ns: int | None = None, source: str = "") -> None:
        self.power_w = float(power_w)
        self.power_ts_ns = ts_ns or time.time_ns()
        self.power_source = source

    def rows(self) -> list[dict]:
        col = self.collector
        if col is None or col.current_cell is None:
            return [{"metric": "Cell", "value": "waiting for the first request"}]
        cell = col.current_cell
        measure = col.cell_stats(cell, ("measure",))
        shown = measure if measure.requests else col.cell_stats(cell, ("ramp", "warmup", "measure", "cooldown"))
        phase = "measured window" if measure.requests else "all phases so far"
        rows = [{"metric": "Cell", "value": f"{cell} ({phase})"}]
        h = shown.hist
        for metric, label in _LABELS:
            hh = h.h[metric]
            n = hh.get_total_count()
            rows.append({"metric": label, "value": "", "count": str(n),
                         "p50": _ms(h.percentile_s(metric, 50)), "p90": _ms(h.percentile_s(metric, 90)),
                         "p99": _ms(h.percentile_s(metric, 99)),
                         "mean": _ms(hh.get_mean_value() / 1e6 if n else None)})
        now = time.time_ns()
        all_phases = col.cell_stats(cell, ("ramp", "warmup", "measure", "cooldown"))
        since = (now - all_phases.first_start_ns) / 1e9 if all_phases.first_start_ns else 10.0
        live = col.tokens_per_s(min(10.0, max(1.0, since)))
        rows.append({"metric": "Output tokens/s (last 10 s)", "value": f"{live:.1f}"})
        measured = None
        win = self._measure_s()
        if measure.requests and win and measure.first_start_ns:
            elapsed = min(win, max(1e-3, (now - measure.first_start_ns) / 1e9))
            measured = measure.output_tokens / elapsed
            rows.append({"metric": "Output tokens/s (measured window)", "value": f"{measured:.1f}"})
        rows.append({"metric": "Requests", "value": str(shown.requests), "count": str(shown.requests)})
        rows.append({"metric": "Error rate", "value": f"{shown.error_rate() * 100:.2f}%"})
        for cls, n in sorted(shown.errors.items()):
            rows.append({"metric": f"Errors: {cls}", "value": str(n), "count": str(n)})
        if self.power_w is None:
            rows.append({"metric": "GPU power (W)", "value": "no telemetry"})
        else:
            rows.append({"metric": "GPU power (W)", "value": f"{self.power_w:.1f}"})
            basis = measured or live     # the cell's measured window once it has one: stable
            if basis:
                rows.append({"metric": "Energy per output token (J/token)",
                             "value": f"{self.power_w / basis:.4f}", "count": f"at {basis:.1f} tok/s"})
        return rows

    def _measure_s(self) -> float | None:
        if self.scenario is None:
            return None
        return self.scenario.load.duration_s


def report_power(environment, power_w: float, ts_ns: int | None = None, source: str = "") -> None:
    """Hook for telemetry: the latest GPU power (W) shown in the LLM tab, with J/token."""
    tab = getattr(environment, "slm_ui", None)
    if tab is not None:
        tab.set_power(power_w, ts_ns, source)


def install_llm_tab(environment, collector, scenario=None, tab: LlmTab | None = None) -> LlmTab:
    """Add the LLM tab and its routes to ``environment.web_ui`` (created beforehand); ``tab``
    carries the run's history when the web UI is recreated for each cell."""
    from flask import request

    if tab is None:
        tab = LlmTab(collector, scenario)
    else:
        tab.collector = collector
    environment.slm_ui = tab
    web_ui = environment.web_ui
    app = web_ui.app
    web_ui.template_args["extended_tabs"] = [{"title": "LLM", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": _STRUCTURE}]

    @app.after_request
    def _extend_stats(response):
        if request.path == "/" and response.status_code == 200 and \
                response.mimetype == "text/html":
            # the cells table and live charts, drawn under the LLM tab's table
            response.direct_passthrough = False
            page = response.get_data(as_text=True)
            response.set_data(page.replace("</body>", _SCRIPT_TAG + "</body>", 1))
            return response
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        try:
            body = response.get_json()
        except Exception:  # noqa: BLE001 - not JSON: leave Locust's answer alone
            return response
        if isinstance(body, dict):
            body["extended_stats"] = [{"key": TAB_KEY, "data": tab.rows()}]
            response.set_data(json.dumps(body))
        return response

    @app.route("/llm/charts.js")
    def _llm_charts():
        return app.response_class(_CHARTS_JS.read_text(), mimetype="application/javascript")

    def _sampler():
        while not getattr(getattr(web_ui, "greenlet", None), "dead", False):
            tab.sample()
            gevent.sleep(1.0)

    gevent.spawn(_sampler)

    @app.route("/llm/stats")
    def _llm_stats():
        return {"rows": tab.rows(), "power_w": tab.power_w, "cells": tab.cells,
                "series": tab.series}

    @app.route("/llm/power", methods=["POST"])
    def _llm_power():
        data = request.get_json(silent=True) or {}
        try:
            power = float(data["power_w"])
        except (KeyError, TypeError, ValueError):
            return {"error": "expected JSON {\"power_w\": number}"}, 400
        tab.set_power(power, data.get("ts_ns"), str(data.get("source", ""))[:40])
        return {"ok": True}

    return tab
