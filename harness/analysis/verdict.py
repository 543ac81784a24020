"""Each cell's verdict: ``valid``, ``warn`` or ``invalid``, with the reasons, from what the run
recorded about its own measurement (not about the server: the SLO judges the server).

Checks (thresholds in the scenario's ``validity:`` section, defaults in
:class:`harness.scenario.models.Validity`):
- the load generator: the stream reader's longest wait for data in the kernel, the share of the
  window its thread waited for a CPU (a starved generator) or ran on one (a saturated one), and in
  an open loop the p99 of send time minus intended send time;
- energy: the hardware counter against the power integral over the same window, the power
  samples' coverage, windows spanning few power readings (NVML refreshes every ~100 ms), the SM
  clock's drift and throttling inside the window, whether an idle baseline was measured;
- sample size: requests beyond the latency objective's percentile (a p99 of 50 requests is
  nearly the maximum);
- steadiness: tokens/s of the window's two halves;
- the share of failed or partial requests.
A cell is ``invalid`` when one check says so, ``warn`` when one warns, else ``valid``. Invalid
cells are never on the frontier nor recommended, and ``run``/``sweep`` exit 4 when one exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.energy import window_energy
from harness.scenario.models import Validity

ORDER = {"valid": 0, "warn": 1, "invalid": 2}
# NVML throttle reasons that change the work per joule: SW power cap, HW slowdown, SW/HW thermal,
# power brake (idle and application-clock settings are left out)
THROTTLE_BITS = {0x4: "power cap", 0x8: "hardware slowdown", 0x20: "thermal (software)",
                 0x40: "thermal (hardware)", 0x80: "power brake"}
PARTIAL_CLASSES = ("incomplete", "reset", "timeout")


@dataclass
class Verdict:
    status: str = "valid"
    reasons: list[str] = field(default_factory=list)   # "invalid: ..." / "warn: ..." / "note: ..."
    checks: dict = field(default_factory=dict)         # the measured values the checks used

    def add(self, level: str, text: str) -> None:
        self.reasons.append(f"{level}: {text}")
        if level in ORDER and ORDER[level] > ORDER[self.status]:
            self.status = level


def _gate(v: Verdict, value: float | None, warn: float | None, invalid: float | None, text: str) -> None:
    """Add ``text`` (formatted with the value) as invalid above ``invalid``, warn above ``warn``."""
    if value is None:
        return
    if invalid is not None and value > invalid:
        v.add("invalid", text.format(value=value, limit=invalid))
    elif warn is not None and value > warn:
        v.add("warn", text.format(value=value, limit=warn))


def generator_checks(v: Verdict, gen: dict | None, th: Validity) -> None:
    if not gen:
        v.add("note", "no load-generator health recorded for this cell")
        return
    lag = gen.get("reader_lag_max_ms")
    v.checks["reader_lag_max_ms"] = lag
    v.checks["late_read_passes"] = gen.get("late_read_passes")
    _gate(v, lag, th.reader_lag_warn_ms, th.reader_lag_invalid_ms,
          "the stream reader fell behind: data waited up to {value:.1f} ms in the kernel (limit "
          "{limit:g} ms); token times are kernel stamps, but tokens of a stream that queued "
          "together share one")
    wait, busy = gen.get("wait_share"), gen.get("cpu_share")
    v.checks["generator_cpu_wait_share"], v.checks["generator_cpu_share"] = wait, busy
    _gate(v, wait, th.cpu_wait_warn, th.cpu_wait_invalid,
          "the load generator waited for a CPU {value:.0%} of the window (limit {limit:.0%}): "
          "the host starved it, so sends and reads were late")
    _gate(v, busy, th.cpu_busy_warn, None,
          "the load generator ran {value:.0%} of the window (limit {limit:.0%}): near its "
          "limit, use more processes (--processes N)")


def send_lag_checks(v: Verdict, started: pd.DataFrame, mode: str, th: Validity) -> None:
    if mode != "rate" or started.empty or "intended_ns" not in started:
        return   # a closed loop sends when the previous request ends: intended = sent
    lag = (started["start_ns"] - started["intended_ns"].fillna(started["start_ns"])).to_numpy(float)
    p99 = float(np.percentile(lag, 99)) / 1e6 if lag.size else None
    v.checks["send_lag_p99_ms"] = p99
    _gate(v, p99, th.send_lag_warn_ms, th.send_lag_invalid_ms,
          "requests went out late: send lag p99 {value:.1f} ms (limit {limit:g} ms)")


def refresh_period_s(gpu: pd.DataFrame) -> float | None:
    """Median time between changes of a GPU's power value (NVML: ~0.1 s), or None.

    Only hardware readings have a refresh period: emulated power is modeled from the requests in
    flight, so it stays flat while the load does and the gaps between its changes say nothing
    about how finely energy was measured (on a busy host they read over a second).
    """
    if gpu.empty or "power_w" not in gpu:
        return None
    if "source" in gpu:
        gpu = gpu[gpu["source"] != "emulated"]
    periods = []
    for _, g in gpu.dropna(subset=["power_w"]).sort_values("ts_ns").groupby("gpu"):
        p = g["power_w"].to_numpy(float)
        t = g["ts_ns"].to_numpy(float)[np.r_[True, p[1:] != p[:-1]]]
        if t.size >= 3:
            periods.append(float(np.median(np.diff(t))) / 1e9)
    return float(np.median(periods)) if periods else None


def energy_checks(v: Verdict, c, gpu: pd.DataFrame, windows: pd.DataFrame, th: Validity,
                  max_gap_s: float) -> None:
    a, b = c.start_ns, c.end_ns
    inside = gpu[(gpu["ts_ns"] >= a) & (gpu["ts_ns"] <= b)] if not gpu.empty else gpu
    if c.energy_j is None:
        if not inside.empty:
            v.add("warn", f"energy not measured ({c.energy_note or 'no source'})")
        return
    if c.energy_coverage < 0.999:
        v.add("warn", f"power samples cover {c.energy_coverage:.0%} of the window (energy scaled)")
    if (c.energy_source or "").startswith("window:") and not gpu.empty:
        integ = window_energy(gpu, a, b, max_gap_s=max_gap_s)
        if integ.energy_j:
            d = (integ.energy_j - c.energy_j) / c.energy_j if c.energy_j else None
            v.checks["energy_integral_vs_counter"] = d
            if d is not None and abs(d) > th.energy_disagree_warn:
                v.add("warn", f"the power integral differs from the energy counter by {d:+.1%} "
                              f"(limit {th.energy_disagree_warn:.0%})")
    period = refresh_period_s(gpu)
    v.checks["power_refresh_s"] = period
    if period:
        n = c.duration_s / period
        v.checks["power_refreshes"] = n
        if n < 1:
            v.add("invalid", f"the window ({c.duration_s:.2f} s) is shorter than the power "
                             f"refresh period ({period * 1000:.0f} ms): its energy is not measured")
        elif n < th.min_power_refreshes:
            v.add("warn", f"the window spans only {n:.0f} power readings (one every "
                          f"{period * 1000:.0f} ms)")
    if not inside.empty:
        clk = inside["sm_clock_mhz"].dropna() if "sm_clock_mhz" in inside else pd.Series([], dtype=float)
        if len(clk) >= 2 and clk.median() > 0:
            drift = float((clk.max() - clk.min()) / clk.median())
            v.checks["sm_clock_drift"] = drift
            if drift > th.clock_drift_warn:
                v.add("warn", f"SM clock moved {drift:.0%} inside the window "
                              f"({clk.min():.0f}-{clk.max():.0f} MHz)")
        if "throttle_reasons" in inside:
            bits = 0
            for x in inside["throttle_reasons"].dropna():
                bits |= int(x)
            named = [n for bit, n in THROTTLE_BITS.items() if bits & bit]
            if named:
                v.add("warn", "the GPU was throttled inside the window: " + ", ".join(named))
        if "temperature_c" in inside:
            t = inside["temperature_c"].dropna()
            if len(t) >= 2:
                v.checks["temperature_rise_c"] = float(t.max() - t.min())
    idle = windows[windows["phase"] == "idle"] if not windows.empty and "phase" in windows else None
    if idle is not None and not idle.empty:
        w = idle[idle["replicas"] == c.replicas] if "replicas" in idle else idle
        w = w if not w.empty else idle
        row = w.iloc[-1]
        e = window_energy(gpu, int(row["start_ns"]), int(row["end_ns"]), max_gap_s=max_gap_s)
        if e.mean_power_w is not None:
            v.checks["idle_power_w"] = e.mean_power_w


def sample_checks(v: Verdict, c, q: float, th: Validity) -> None:
    n = c.requests_ok
    tail = n * (1 - q / 100.0)
    v.checks["tail_requests"] = tail
    if n == 0:
        v.add("warn", "no successful request in the window: no latency figures")
    elif tail < 1:
        v.add("warn", f"{n} requests: the p{q:g} is the slowest request (needs "
                      f"{int(np.ceil(th.min_tail_requests / (1 - q / 100)))} for "
                      f"{th.min_tail_requests} beyond it)")
    elif tail < th.min_tail_requests:
        v.add("warn", f"{n} requests leave {tail:.1f} beyond the p{q:g} (at least "
                      f"{th.min_tail_requests} wanted: "
                      f"{int(np.ceil(th.min_tail_requests / (1 - q / 100)))} requests)")


def steady_checks(v: Verdict, c, th: Validity) -> None:
    if c.steadiness is None:
        return
    v.checks["steadiness"] = c.steadiness
    _gate(v, abs(c.steadiness), th.steadiness_warn, th.steadiness_invalid,
          "output tokens/s changed by {value:.0%} between the window's halves (limit "
          "{limit:.0%}): not steady; a longer warm-up or window helps")


def error_checks(v: Verdict, c, started: pd.DataFrame, th: Validity) -> None:
    if not c.requests_started:
        return
    share = c.requests_failed / c.requests_started
    partial = 0
    if not started.empty:
        err = started[started["error_class"].notna()]
        partial = int((err["error_class"].isin(PARTIAL_CLASSES) | err["first_token_ns"].notna()).sum())
    v.checks["error_share"], v.checks["partial_requests"] = share, partial
    _gate(v, share, th.error_share_warn, th.error_share_invalid,
          "{value:.1%} of the window's requests failed or were cut short (" + f"{partial} partial"
          + "; limit {limit:.0%}): latency covers the survivors only")


def judge(c, *, gen: dict | None, started: pd.DataFrame, gpu: pd.DataFrame, windows: pd.DataFrame,
          th: Validity, q: float, max_gap_s: float = 1.0) -> Verdict:
    """The verdict of one computed cell (``c``: CellMetrics)."""
    v = Verdict()
    generator_checks(v, gen, th)
    send_lag_checks(v, started, c.level_kind, th)
    energy_checks(v, c, gpu, windows, th, max_gap_s)
    sample_checks(v, c, q, th)
    steady_checks(v, c, th)
    error_checks(v, c, started, th)
    return v
