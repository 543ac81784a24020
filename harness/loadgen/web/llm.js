// The LLM tab's history and live charts, added under Locust's LLM table (served as /llm/charts.js).
// Polls /llm/stats once a second: every finished cell in a table, and tokens/s, TTFT and ITL
// percentiles and GPU power over the run as SVG line charts.
(function () {
  "use strict";
  var CHARTS = [
    {title: "Output tokens/s (last 5 s)", lines: [["tokens_per_s", "tokens/s", "#2e7d32"]]},
    {title: "TTFT (ms), current cell", lines: [["ttft_p50_ms", "p50", "#1565c0"], ["ttft_p99_ms", "p99", "#c62828"]]},
    {title: "ITL (ms), current cell", lines: [["itl_p50_ms", "p50", "#1565c0"], ["itl_p99_ms", "p99", "#c62828"]]},
    {title: "GPU power (W)", lines: [["power_w", "W", "#ef6c00"]]}
  ];
  var CELL_COLS = [["cell", "Finished cell"], ["status", "Status"], ["output_tokens_per_s", "Output tok/s"],
    ["ttft_p50_ms", "TTFT p50 ms"], ["ttft_p99_ms", "TTFT p99 ms"], ["itl_p50_ms", "ITL p50 ms"],
    ["itl_p99_ms", "ITL p99 ms"], ["error_rate", "Errors"], ["mean_power_w", "Power W"],
    ["j_per_token", "J/token"]];

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function fmt(k, v) {
    if (v === null || v === undefined) return "";
    if (k === "error_rate") return (v * 100).toFixed(2) + "%";
    if (typeof v === "number") return k === "j_per_token" ? v.toFixed(4) : v.toFixed(1);
    return esc(v);
  }
  function cellsTable(cells) {
    var h = "<h3 style='margin:16px 0 4px'>Finished cells</h3><table id='slm-cells' " +
      "style='border-collapse:collapse;font:13px sans-serif'><tr>";
    CELL_COLS.forEach(function (c) { h += "<th style='text-align:left;padding:3px 10px;border-bottom:1px solid #888'>" + c[1] + "</th>"; });
    h += "</tr>";
    if (!cells.length) h += "<tr><td colspan='" + CELL_COLS.length + "' style='padding:3px 10px'>none finished yet</td></tr>";
    cells.forEach(function (r) {
      h += "<tr>";
      CELL_COLS.forEach(function (c) { h += "<td style='padding:3px 10px'>" + fmt(c[0], r[c[0]]) + "</td>"; });
      h += "</tr>";
    });
    return h + "</table>";
  }
  function chart(spec, series) {
    var W = 420, H = 170, L = 48, B = 22, T = 22;
    var t0 = series.length ? series[0].t : 0, t1 = series.length ? series[series.length - 1].t : 1;
    var vmax = 0;
    spec.lines.forEach(function (l) {
      series.forEach(function (p) { if (p[l[0]] != null && p[l[0]] > vmax) vmax = p[l[0]]; });
    });
    vmax = vmax > 0 ? vmax * 1.1 : 1;
    var sx = function (t) { return L + (W - L - 8) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0); };
    var sy = function (v) { return T + (H - T - B) * (1 - v / vmax); };
    var s = "<svg class='slm-chart' width='" + W + "' height='" + H + "' style='background:#fff;border:1px solid #ccc;margin:4px'>";
    s += "<text x='" + L + "' y='15' font-size='12' font-family='sans-serif'>" + esc(spec.title) + "</text>";
    s += "<line x1='" + L + "' y1='" + (H - B) + "' x2='" + (W - 8) + "' y2='" + (H - B) + "' stroke='#888'/>";
    s += "<line x1='" + L + "' y1='" + T + "' x2='" + L + "' y2='" + (H - B) + "' stroke='#888'/>";
    s += "<text x='4' y='" + (T + 10) + "' font-size='10' font-family='sans-serif'>" + vmax.toFixed(vmax < 10 ? 2 : 0) + "</text>";
    s += "<text x='4' y='" + (H - B) + "' font-size='10' font-family='sans-serif'>0</text>";
    s += "<text x='" + L + "' y='" + (H - 6) + "' font-size='10' font-family='sans-serif'>" + (t1 - t0).toFixed(0) + " s shown</text>";
    spec.lines.forEach(function (l, i) {
      var pts = series.filter(function (p) { return p[l[0]] != null; })
        .map(function (p) { return sx(p.t).toFixed(1) + "," + sy(p[l[0]]).toFixed(1); });
      s += "<polyline data-series='" + l[0] + "' fill='none' stroke='" + l[2] + "' stroke-width='1.5' points='" + pts.join(" ") + "'/>";
      s += "<text x='" + (W - 70) + "' y='" + (15 + 12 * i) + "' font-size='10' fill='" + l[2] + "' font-family='sans-serif'>" + esc(l[1]) + "</text>";
    });
    return s + "</svg>";
  }
  function anchor() {
    var ths = document.querySelectorAll("th");
    for (var i = 0; i < ths.length; i++) {
      if (ths[i].textContent.trim() === "Metric") {
        var t = ths[i].closest("table");
        return t.closest(".MuiTableContainer-root") || t.parentElement;
      }
    }
    return null;
  }
  function render(data) {
    var at = anchor();
    var box = document.getElementById("slm-llm-extra");
    if (!at) { if (box) box.remove(); return; }
    if (!box || box.previousElementSibling !== at) {
      if (box) box.remove();
      box = document.createElement("div");
      box.id = "slm-llm-extra";
      at.insertAdjacentElement("afterend", box);
    }
    var charts = "<div id='slm-charts' style='display:flex;flex-wrap:wrap'>";
    CHARTS.forEach(function (c) { charts += chart(c, data.series || []); });
    box.innerHTML = cellsTable(data.cells || []) + "<h3 style='margin:16px 0 4px'>Over the run</h3>" + charts + "</div>";
  }
  function poll() {
    fetch("/llm/stats").then(function (r) { return r.json(); }).then(render)
      .catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
