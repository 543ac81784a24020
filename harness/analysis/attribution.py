"""Per-request energy: a cell's measured energy split into idle and each request's share.

The measured window is cut into bins of ``BIN_S`` (NVML refreshes power every ~100 ms, so finer
bins would only repeat values). A bin's energy is the power summed over GPUs (interpolated between
samples) x its length, scaled so the bins add up to the cell's measured energy (the counter's where
it has one). Of each bin, the idle baseline's power x its length is *idle* (all of the bin when it
drew less); the rest is split across the requests in flight by their share of the work done in
the bin: ``prefill_weight`` x prompt tokens (spread evenly from the send to the first token) +
``decode_weight`` x output tokens (spread evenly from the first token to the end). A bin above
idle with no work in flight counts as idle. So, by construction, attributed + idle = measured.

Requests are grouped into classes by prompt and output length (each rounded up to a power of
two: ``in128-out128``): J per output token is the class's attributed energy over its output
tokens inside the window; J per request is the mean over the class's requests that were sent and
finished inside the window (whole requests only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BIN_S = 0.1


def _pow2(n: float) -> int:
    n = max(int(n), 1)
    return 1 << (n - 1).bit_length()


def request_class(input_tokens, output_tokens) -> str:
    i = 0 if input_tokens is None or not np.isfinite(input_tokens) else input_tokens
    o = 0 if output_tokens is None or not np.isfinite(output_tokens) else output_tokens
    return f"in{_pow2(i)}-out{_pow2(o)}"


def _overlap(lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|[lo, hi] ∩ [a, b]| for every request (rows) and bin (columns)."""
    return np.clip(np.minimum(hi[:, None], b[None, :]) - np.maximum(lo[:, None], a[None, :]), 0, None)


def _spread(amount: np.ndarray, lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``amount`` per request spread evenly over [lo, hi], per bin; a point span lands in its bin."""
    span = hi - lo
    ov = _overlap(lo, hi, a, b)
    out = np.where(span[:, None] > 0, ov / np.where(span > 0, span, 1.0)[:, None], 0.0)
    point = span <= 0
    if point.any():
        inside = (lo[:, None] >= a[None, :]) & (lo[:, None] < b[None, :])
        out[point] = inside[point].astype(float)
    return out * amount[:, None]


def bin_energy(gpu: pd.DataFrame, a_ns: int, b_ns: int, measured_j: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges in s since a_ns, energy per bin in J) summing to ``measured_j``."""
    dur = (b_ns - a_ns) / 1e9
    n = max(1, int(np.ceil(dur / BIN_S - 1e-9)))
    edges = np.minimum(np.arange(n + 1) * BIN_S, dur)
    mids = (edges[:-1] + edges[1:]) / 2
    power = np.zeros(n)
    if not gpu.empty:
        for _, g in gpu.dropna(subset=["power_w"]).groupby("gpu"):
            g = g.sort_values("ts_ns")
            t = (g["ts_ns"].to_numpy(dtype=float) - a_ns) / 1e9
            power += np.interp(mids, t, g["power_w"].to_numpy(dtype=float))
    e = power * np.diff(edges)
    total = e.sum()
    e = e * (measured_j / total) if total > 0 else np.full(n, measured_j / n)
    return edges, e


def attribute(req: pd.DataFrame, gpu: pd.DataFrame, a_ns: int, b_ns: int, measured_j: float,
              idle_power_w: float | None, *, prefill_weight: float = 1.0,
              decode_weight: float = 1.0) -> dict:
    """The split of ``measured_j`` over [a_ns, b_ns] (see the module docstring); ``req``: the
    cell's request records."""
    edges, e = bin_energy(gpu, a_ns, b_ns, measured_j)
    a, b = edges[:-1], edges[1:]
    idle = np.minimum(e, (idle_power_w or 0.0) * (b - a))
    above = e - idle
    work = np.zeros((0, len(e)))
    r = req
    if not req.empty:
        start = (req["start_ns"].to_numpy(dtype=float) - a_ns) / 1e9
        first = (pd.to_numeric(req["first_token_ns"], errors="coerce").to_numpy(dtype=float) - a_ns) / 1e9
        end = (req["end_ns"].to_numpy(dtype=float) - a_ns) / 1e9
        has = np.isfinite(first)
        first = np.where(has, first, end)
        n_in = pd.to_numeric(req["input_tokens"], errors="coerce").fillna(0).to_numpy(dtype=float)
        n_out = pd.to_numeric(req["output_tokens"], errors="coerce").fillna(0).to_numpy(dtype=float)
        n_out = np.where(has, n_out, 0.0)
        keep = (end > 0) & (start < edges[-1])
        r = req[keep]
        start, first, end, n_in, n_out = start[keep], first[keep], end[keep], n_in[keep], n_out[keep]
        prefill = _spread(n_in, start, first, a, b)
        decode = _spread(n_out, first, end, a, b)
        work = prefill_weight * prefill + decode_weight * decode
    total_work = work.sum(axis=0) if len(work) else np.zeros(len(e))
    idle = np.where(total_work > 0, idle, e)          # nothing in flight: all of the bin is idle
    above = e - idle
    share = np.divide(work, total_work, out=np.zeros_like(work), where=total_work > 0)
    per_req = (share * above).sum(axis=1) if len(work) else np.zeros(0)
    out = {
        "measured_j": float(measured_j),
        "idle_j": float(idle.sum()),
        "attributed_j": float(per_req.sum()),
        "idle_power_w": idle_power_w,
        "weights": {"prefill": prefill_weight, "decode": decode_weight},
        "by_class": {},
    }
    if len(work):
        tokens_in = decode.sum(axis=1)
        classes = [request_class(i, o) for i, o in zip(r["input_tokens"], r["output_tokens"])]
        whole = (start >= 0) & (end <= edges[-1]) & r["error_class"].isna().to_numpy()
        df = pd.DataFrame({"cls": classes, "j": per_req, "tok": tokens_in, "whole": whole})
        for cls, g in df.groupby("cls"):
            w = g[g["whole"]]
            out["by_class"][cls] = finish_class({"j": float(g["j"].sum()), "tokens": float(g["tok"].sum()),
                                                 "whole_requests": int(len(w)),
                                                 "whole_j": float(w["j"].sum())})
    return out


def finish_class(d: dict) -> dict:
    """The derived figures of a class from its sums (so repeats can add the sums up)."""
    d["requests"] = d["whole_requests"]
    d["j_per_request"] = d["whole_j"] / d["whole_requests"] if d["whole_requests"] else None
    d["j_per_output_token"] = d["j"] / d["tokens"] if d["tokens"] > 0 else None
    return d


def pool(parts: list[dict]) -> dict | None:
    """One attribution for a configuration's repeats: sums added, figures recomputed."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = {k: sum(p[k] for p in parts) for k in ("measured_j", "idle_j", "attributed_j")}
    idle = [p["idle_power_w"] for p in parts if p.get("idle_power_w") is not None]
    out["idle_power_w"] = float(np.mean(idle)) if idle else None
    out["weights"] = parts[0]["weights"]
    classes: dict[str, dict] = {}
    for p in parts:
        for cls, d in p["by_class"].items():
            c = classes.setdefault(cls, {"j": 0.0, "tokens": 0.0, "whole_requests": 0, "whole_j": 0.0})
            for k in c:
                c[k] += d[k]
    out["by_class"] = {cls: finish_class(d) for cls, d in classes.items()}
    return out
