"""Fit a profile's step-time, prefill, contention and power parameters to a real run directory.

``slm-harness emulate --calibrate RUN_DIR -o PROFILE.yaml`` reads the run's cells (``cells.csv``:
replicas x closed-loop concurrency, measured output tok/s, TTFT p50, TPOT p50, mean power) and its
workload (``scenario.yaml``: prompt and output lengths, warm-up and window), replays every cell
in virtual time through the very engine the emulator serves with (:mod:`harness.emulator.engine`,
seconds of CPU per cell), and searches the timing parameters that minimise the squared log error
of tok/s, TTFT and TPOT over all cells (Nelder-Mead); power is then a least-squares fit of
``idle + active * util**exponent`` to the cells' mean power at the modeled utilisation. It prints
the per-cell prediction error and writes the fitted profile.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from harness.emulator.engine import Seq, make_replica
from harness.emulator.gpu import SharedGpu
from harness.emulator.profile import Profile, RooflineTiming
from harness.emulator.simulate import VirtualTimer
from harness.errors import InputError
from harness.records.rundir import read_table

METRICS = ("tok_s", "ttft_p50_ms", "tpot_p50_ms", "power_w")
LABELS = {"tok_s": "output tok/s", "ttft_p50_ms": "TTFT p50 ms", "tpot_p50_ms": "TPOT p50 ms",
          "power_w": "mean power W"}
#: timing parameters the fit moves (RooflineTiming fields), with their search bounds
TIMING = {"host_step_ms": (0.0, 200.0), "host_per_seq_ms": (0.0, 5.0), "host_per_seq2_ms": (0.0, 0.05),
          "host_per_prefill_token_ms": (0.0, 2.0), "gpu_step_ms": (0.0, 200.0), "gpu_per_seq_ms": (0.0, 5.0),
          "gpu_per_prefill_token_ms": (0.0, 2.0), "gpu_per_mpair_ms": (0.0, 10.0), "switch_overhead": (0.0, 2.0), "admission_ms": (0.0, 500.0),
          "frontend_ms": (0.0, 100.0), "frontend_per_seq": (0.0, 1.0), "step_jitter": (0.0, 1.0),
          "graph_capture_ms": (0.0, 2000.0), "host_speed": (0.05, 20.0)}
#: limits the fit moves (step token budget; the KV cache's size where admission is paged), with bounds
LIMITS = {"max_batch_prefill_tokens": (16, 65536), "max_batch_total_tokens": (1024, 10_000_000)}


@dataclass
class Cell:
    """One measured cell: its load and what the real server gave."""

    name: str
    replicas: int
    streams: int
    prompt: int
    output: int
    warmup_s: float
    duration_s: float
    measured: dict[str, float]
    repeats: int = 1              # windows pooled into this cell (``--repeats``), each ``duration_s`` long


# -- the run directory ---------------------------------------------------------------------------
def _fixed_tokens(spec, field: str, file: Path) -> int:
    if isinstance(spec, (int, float)):
        return int(spec)
    if isinstance(spec, dict):
        for k in ("value", "mean", "median"):
            if k in spec:
                return int(spec[k])
    raise InputError(f"cannot read a token count from {spec!r}", file=str(file), field=field)


def load_run(run_dir: str | Path) -> list[Cell]:
    """The closed-loop cells of a run directory (``cells.csv`` + ``scenario.yaml``)."""
    d = Path(run_dir)
    cells_csv, scen = d / "cells.csv", d / "scenario.yaml"
    for p in (cells_csv, scen):
        if not p.is_file():
            raise InputError("not a run directory: missing " + p.name, file=str(d))
    s = yaml.safe_load(scen.read_text()) or {}
    wl, load = s.get("workload") or {}, s.get("load") or {}
    prompt = _fixed_tokens(wl.get("prompt_tokens", 128), "workload.prompt_tokens", scen)
    output = _fixed_tokens(wl.get("output_tokens", 128), "workload.output_tokens", scen)
    warmup = float(load.get("warmup_s", 0.0))
    out = []
    with cells_csv.open() as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            if row.get("level_kind", "concurrency") != "concurrency":
                raise InputError("calibration replays closed-loop (concurrency) cells only",
                                 file=str(cells_csv), line=i, field="level_kind")

            def num(k):
                try:
                    return float(row[k])
                except (KeyError, ValueError):
                    return float("nan")
            # pooled repeats (``--repeats``): one repeat's window is what a replay reproduces
            n_rep = max(1, len((row.get("repeats") or "").split()))
            measured = {"tok_s": num("output_tokens_per_s"), "ttft_p50_ms": num("ttft_p50_s") * 1e3,
                        "tpot_p50_ms": num("tpot_p50_s") * 1e3, "power_w": num("mean_power_w")}
            out.append(Cell(row["cell"], int(row["replicas"]), int(float(row["level"])), prompt, output, warmup,
                            num("duration_s") / n_rep, measured, n_rep))
    if not out:
        raise InputError("no cells in cells.csv", file=str(cells_csv))
    return out


# -- replay in virtual time ----------------------------------------------------------------------
class _Loop:
    """Closed loop as the load generator runs it: stream i stays on replica i % n, all start at 0;
    a request belongs to the window its start falls in; tokens are counted where they land."""

    def __init__(self, reps, timer, cell: Cell):
        self.reps, self.timer, self.cell = reps, timer, cell
        self.rid = itertools.count()
        self.t0 = int(cell.warmup_s * 1e9)
        self.t1 = self.t0 + int(cell.duration_s * 1e9)
        self.first: dict[int, int] = {}
        self.ttft: list[float] = []
        self.tpot: list[float] = []
        self.tokens = 0
        self.open = 0                # window requests not finished yet

    def start(self, stream: int, now: int) -> None:
        s = Seq(next(self.rid), self.cell.prompt, self.cell.output, self, now)
        s.replica = stream       # (overwritten by submit; kept in sid)
        s.sid = stream
        if self.t0 <= now < self.t1:
            self.open += 1
        self.reps[stream % len(self.reps)].submit(s, now)

    def token(self, s, due, last):
        if self.t0 <= due < self.t1:
            self.tokens += 1
        inside = self.t0 <= s.received_ns < self.t1
        if s.generated == 1:
            self.first[s.rid] = due
            if inside:
                self.ttft.append((due - s.received_ns) / 1e6)
        if last:
            f = self.first.pop(s.rid)
            if inside:
                self.open -= 1
                if s.max_new > 1:
                    self.tpot.append((due - f) / 1e6 / (s.max_new - 1))
            if due < self.t1:
                stream = s.sid
                self.timer.at(due, lambda _a, t: self.start(stream, t), None)


def _replay(profile: Profile, cell: Cell, graphs: list[set] | None = None) -> dict:
    """One window of ``cell`` in virtual time: its samples, tokens, energy and GPU utilisation.

    ``graphs`` are the replicas' captured CUDA graph shapes, carried from the windows the same
    server processes ran before (updated in place)."""
    timer = VirtualTimer()
    gpu = SharedGpu(profile, cell.replicas)
    gpu._last_ns = 0
    reps = [make_replica(i, profile, gpu, timer) for i in range(cell.replicas)]
    if graphs is not None:
        for r, g in zip(reps, graphs):
            r.graphs = g
    loop = _Loop(reps, timer, cell)
    for i in range(cell.streams):
        loop.start(i, 0)
    timer.run_until(loop.t0)
    e0 = gpu.snapshot(0, loop.t0)["energy_j"]
    util, attention, t = [], [], loop.t0
    while t < loop.t1:
        t += 50_000_000
        timer.run_until(t)
        util.append(gpu.util)
        attention.append(sum(gpu.attention))
    e1 = gpu.snapshot(0, loop.t1)["energy_j"]
    limit = loop.t1 + int(600e9)
    while loop.open > 0 and timer.heap and timer.now < limit:     # window requests run to their end
        timer.run_until(timer.now + 1_000_000_000)
    return {"tokens": loop.tokens, "ttft": loop.ttft, "tpot": loop.tpot, "energy_j": e1 - e0, "util": util,
            "attention": attention, "duration_s": cell.duration_s}


def _summary(windows: list[dict]) -> dict[str, float]:
    """Pooled figures of one cell's windows, as the harness pools repeats."""
    dur = sum(w["duration_s"] for w in windows)
    ttft = [x for w in windows for x in w["ttft"]]
    tpot = [x for w in windows for x in w["tpot"]]
    util = [x for w in windows for x in w["util"]]
    attention = [x for w in windows for x in w["attention"]]
    return {"tok_s": sum(w["tokens"] for w in windows) / dur,
            "ttft_p50_ms": statistics.median(ttft) if ttft else float("nan"),
            "tpot_p50_ms": statistics.median(tpot) if tpot else float("nan"),
            "power_w": sum(w["energy_j"] for w in windows) / dur,
            "util": statistics.fmean(util) if util else 0.0,
            "attention": statistics.fmean(attention) if attention else 0.0}


def predict(profile: Profile, cell: Cell) -> dict[str, float]:
    """What the profile predicts for one window of one cell on fresh server processes: tok/s, TTFT
    p50, TPOT p50 (ms), mean power, GPU util."""
    return _summary([_replay(profile, cell)])


def predict_run(profile: Profile, cells: list[Cell]) -> list[dict[str, float]]:
    """What the profile predicts for every cell of a run, replayed as the sweep ran it.

    A sweep starts the replicas once per replica count and runs that count's levels in order, its
    repeats interleaved (level 1, 2, 3, then level 1 again, ...); state that lives in the server
    processes (the CUDA graphs captured so far) carries from one window to the next."""
    out: dict[str, list[dict]] = {c.name: [] for c in cells}
    for n in dict.fromkeys(c.replicas for c in cells):
        group = [c for c in cells if c.replicas == n]
        graphs: list[set] = [set() for _ in range(n)]
        for rep in range(max(c.repeats for c in group)):
            for c in group:
                if rep < c.repeats:
                    out[c.name].append(_replay(profile, c, graphs))
    return [_summary(out[c.name]) for c in cells]


# -- the fit -------------------------------------------------------------------------------------
def with_params(profile: Profile, x: dict[str, float]) -> Profile:
    """``profile`` with timing fields, ``max_batch_prefill_tokens`` and power fields from ``x``."""
    timing = profile.timing if isinstance(profile.timing, RooflineTiming) else RooflineTiming()
    t_upd = {k: float(v) for k, v in x.items() if k in RooflineTiming.model_fields}
    l_upd = {k: int(round(v)) for k, v in x.items() if k in LIMITS}
    g_upd = {k: float(v) for k, v in x.items() if k in ("idle_w", "active_w", "power_exponent", "attention_w")}
    return profile.model_copy(update={"timing": timing.model_copy(update=t_upd),
                                      "limits": profile.limits.model_copy(update=l_upd),
                                      "gpu": profile.gpu.model_copy(update=g_upd)})


#: relative error beyond which a cell's miss costs a hundred times more (``HINGE_WEIGHT``): the fit
#: aims at every cell within a target (15%), not only at a small mean
HINGE = math.log(1.12)
HINGE_WEIGHT = 100.0


def _loss(pred: dict, meas: dict, keys=("tok_s", "ttft_p50_ms", "tpot_p50_ms")) -> float:
    out = 0.0
    for k in keys:
        p, m = pred[k], meas[k]
        if not (m > 0 and math.isfinite(m)):
            continue
        if not (p > 0 and math.isfinite(p)):
            out += 25.0
            continue
        e = abs(math.log(p / m))
        out += e * e + HINGE_WEIGHT * max(0.0, e - HINGE) ** 2
    return out


def nelder_mead(f, x0: np.ndarray, step: np.ndarray, iters: int, tol: float = 1e-4):
    """A small Nelder-Mead (no SciPy here): the best point and its value."""
    n = len(x0)
    pts = [x0] + [x0 + np.eye(n)[i] * step[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < tol * (abs(vals[0]) + tol):
            break
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                for i in range(1, len(pts)):
                    pts[i] = pts[0] + 0.5 * (pts[i] - pts[0])
                    vals[i] = f(pts[i])
    i = int(np.argmin(vals))
    return pts[i], vals[i]


def fit_power(profile: Profile, cells: list[Cell], preds: list[dict]) -> dict[str, float]:
    """Least squares of measured mean power on idle + active * util**exponent + attention_w * rate
    (exponent on a grid; both coefficients non-negative), at each cell's modeled utilisation and
    attention rate (10^6 query x cache token pairs a second).

    Idle stays the profile's (the GPU's idle draw; ``load_idle_w`` reads a run's own idle window):
    loaded cells rarely reach low utilisation, so an idle fitted to them would be an extrapolation.
    The attention term is fitted only where the profile's engine attends through a dense mask
    (``attention_w`` > 0 in the base profile)."""
    rows = [(p["util"], p.get("attention", 0.0), c.measured["power_w"]) for c, p in zip(cells, preds)
            if math.isfinite(c.measured["power_w"]) and p["util"] > 0]
    if len(rows) < 2:
        return {}
    idle = profile.gpu.idle_w
    y = np.array([w - idle for _, _, w in rows])
    a = np.array([r for _, r, _ in rows]) if profile.gpu.attention_w > 0 else np.zeros(len(rows))
    best = None
    for e in np.linspace(0.05, 2.0, 79):
        x = np.column_stack([[u ** e for u, _, _ in rows], a])
        coef = _nonneg_lstsq(x, y)
        if coef[0] <= 0:
            continue
        pred = idle + x @ coef
        err = float(np.sum(np.log(np.maximum(pred, 1e-9) / (y + idle)) ** 2))
        if best is None or err < best[0]:
            best = (err, coef, e)
    if best is None:
        return {}
    out = {"active_w": round(float(best[1][0]), 2), "power_exponent": round(float(best[2]), 3)}
    if profile.gpu.attention_w > 0:
        out["attention_w"] = round(float(best[1][1]), 4)
    return out


def _nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (two columns: try both, then each alone)."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]       # a column of zeros gets 0 (the minimum-norm solution)
    if np.all(coef >= 0):
        return coef
    cands = []
    for j in range(x.shape[1]):
        col = x[:, j]
        if col @ col > 0:
            c = np.zeros(x.shape[1])
            c[j] = max(0.0, col @ y / (col @ col))
            cands.append(c)
    return min(cands, key=lambda c: float(np.sum((x @ c - y) ** 2))) if cands else np.zeros(x.shape[1])


def load_idle_w(run_dir: str | Path) -> float | None:
    """The run's own idle draw: energy over duration of its idle windows (replicas up, no load), when
    it measured one (``windows.parquet``, phase ``idle``)."""
    w = read_table(run_dir, "windows")
    if w.empty:
        return None
    idle = w[(w.phase == "idle") & w.energy_j.notna() & (w.end_ns > w.start_ns)]
    if idle.empty:
        return None
    return float(idle.energy_j.sum() / ((idle.end_ns - idle.start_ns).sum() / 1e9))


def fit(profile: Profile, cells: list[Cell], iters: int = 120, names: tuple[str, ...] | None = None,
        log=None, starts: int = 0, seed: int = 1, keep: tuple[str, ...] = (),
        power: bool = True) -> tuple[Profile, list[dict]]:
    """Fit timing (and the prefill budget), then power; the fitted profile and its predictions.

    ``names``: the parameters to fit (default: all but ``host_speed``). ``keep``: parameters left as
    ``profile`` has them (a term the engine is known not to have). ``power=False`` leaves the power
    model as it is (a profile carried to another host: ``names=("host_speed",)``)."""
    t = profile.timing if isinstance(profile.timing, RooflineTiming) else RooflineTiming()
    # the cache's size is the server's setting (its memory share), not a fitted figure: fitted only when named
    # (a graph's capture time only where the profile's engine captures graphs as it meets new shapes; the
    # host's speed only when named, since it scales the host terms a full fit already moves)
    # (the dense-mask attention time only where the profile's engine attends through one: attention power
    # or attention time already in the profile)
    dense = profile.gpu.attention_w > 0 or t.gpu_per_mpair_ms > 0
    names = names or tuple(k for k in TIMING if k != "host_speed" and (
        k != "graph_capture_ms" or profile.limits.graph_q_interval) and (
        k != "gpu_per_mpair_ms" or dense)) + ("max_batch_prefill_tokens",)
    names = tuple(k for k in names if k not in keep)
    start = {k: getattr(t, k) if k in TIMING else getattr(profile.limits, k) for k in names}
    bounds = {**TIMING, **LIMITS}
    # search in log space (a parameter at 0 starts from a small positive value)
    floor = {"host_per_seq2_ms": 2e-4, "gpu_per_mpair_ms": 0.02, "admission_ms": 10.0, "frontend_ms": 1.0, "frontend_per_seq": 0.01,
             "graph_capture_ms": 50.0, "step_jitter": 0.02}
    x0 = np.array([math.log(min(max(start[k], floor.get(k, 1e-3) if k in TIMING else 16.0), bounds[k][1]))
                   for k in names])
    evals = itertools.count(1)

    def decode(x):
        return {k: min(max(math.exp(v), bounds[k][0]), bounds[k][1]) for k, v in zip(names, x)}

    def f(x):
        prof = with_params(profile, decode(x))
        loss = sum(_loss(p, c.measured) for p, c in zip(predict_run(prof, cells), cells)) / len(cells)
        n = next(evals)
        if log is not None and n % 10 == 0:
            log(f"  fit: {n} evaluations, loss {loss:.4f}")
        return loss

    if starts:     # random starts around the profile (x/÷ 3 per parameter): the simplex begins at the best
        rng = np.random.default_rng(seed)
        cands = [x0] + [x0 + rng.uniform(-1.1, 1.1, len(names)) for _ in range(starts)]
        x0 = min(cands, key=f)
    best, _ = nelder_mead(f, x0, np.full(len(names), 0.7), iters)
    best, _ = nelder_mead(f, best, np.full(len(names), 0.3), iters // 2)   # a restart: percentiles are
    # step-quantised, so the simplex stalls on plateaus
    params = decode(best)
    fitted = with_params(profile, params)
    preds = predict_run(fitted, cells)
    watts = fit_power(fitted, cells, preds) if power else {}
    if watts:
        fitted = with_params(fitted, watts)
        preds = predict_run(fitted, cells)
    return fitted, preds


def error_table(cells: list[Cell], preds: list[dict]) -> tuple[str, dict[str, float]]:
    """Markdown table of measured vs predicted per cell, and the worst relative error per metric."""
    head = "| cell | " + " | ".join(f"{LABELS[k]} real / emulated (err)" for k in METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    worst = {k: 0.0 for k in METRICS}
    for c, p in zip(cells, preds):
        parts = []
        for k in METRICS:
            m, q = c.measured[k], p[k]
            if m > 0 and math.isfinite(m) and math.isfinite(q):
                e = (q - m) / m
                worst[k] = max(worst[k], abs(e))
                parts.append(f"{m:.4g} / {q:.4g} ({e:+.0%})")
            else:
                parts.append("n/a")
        lines.append(f"| {c.name} | " + " | ".join(parts) + " |")
    return "\n".join(lines), worst


def profile_yaml(profile: Profile, source: str, worst: dict[str, float]) -> str:
    """The fitted profile as YAML, with a comment that says where its numbers come from."""
    data = profile.model_dump(mode="json", exclude_none=True)
    for k in ("power_exponent", "idle_w", "active_w", "attention_w"):
        data["gpu"][k] = round(data["gpu"][k], 3)
    data["timing"] = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in data["timing"].items()}
    errs = ", ".join(f"{LABELS[k]} {worst[k]:.0%}" for k in METRICS)
    head = (f"# Fitted by `slm-harness emulate --calibrate {source}` to that run's cells; worst per-cell "
            f"error in sample: {errs}.\n")
    return head + yaml.safe_dump(data, sort_keys=False)
