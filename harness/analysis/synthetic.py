"""Synthetic run directories with answers known in advance: for tests and for trying the report.

Times are given in seconds after ``T0_NS`` so that hand-computed cases stay readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from harness.records.rundir import RunDir
from harness.records.schema import CellWindow, GpuSample, RequestRecord

T0_NS = 1_700_000_000 * 10**9


def ns(t_s: float) -> int:
    return T0_NS + int(round(t_s * 1e9))


def request(
    cell: str,
    replicas: int,
    level: float,
    *,
    start_s: float,
    ttft_s: float | None,
    e2e_s: float,
    tokens: int,
    replica: str = "http://127.0.0.1:9000",
    error: str | None = None,
    itl_s: float | None = None,
    request_id: int = 0,
    phase: str = "measure",
    run_id: str = "synthetic",
) -> RequestRecord:
    """One record; TPOT and ITL follow from ttft/e2e/tokens unless ``itl_s`` is given."""
    first = ns(start_s + ttft_s) if ttft_s is not None else None
    tpot = (e2e_s - ttft_s) / (tokens - 1) if ttft_s is not None and tokens > 1 else None
    itl = itl_s if itl_s is not None else tpot
    return RequestRecord(
        run_id=run_id,
        cell=cell,
        replicas=replicas,
        level=level,
        phase=phase,
        replica=replica,
        worker="test:1",
        request_id=request_id,
        intended_ns=ns(start_s),
        start_ns=ns(start_s),
        end_ns=ns(start_s + e2e_s),
        first_token_ns=first,
        ttft_s=ttft_s if error is None else (ttft_s if first else None),
        e2e_s=e2e_s if error is None else None,
        tpot_s=tpot if error is None else None,
        itl_mean_s=itl,
        itl_p50_s=itl,
        itl_p99_s=itl,
        itl_max_s=itl,
        input_tokens=16,
        output_tokens=tokens,
        finish_reason="length" if error is None else None,
        status=200 if error is None else 500,
        error_class=error,
        error="synthetic failure" if error else None,
    )


def window(
    cell: str,
    replicas: int,
    level: float,
    start_s: float,
    end_s: float,
    *,
    phase: str = "measure",
    kind: str = "concurrency",
    energy_j: float | None = None,
    energy_source: str | None = None,
    run_id: str = "synthetic",
) -> CellWindow:
    return CellWindow(
        run_id=run_id,
        cell=cell,
        replicas=replicas,
        level=level,
        level_kind=kind,
        phase=phase,
        start_ns=ns(start_s),
        end_ns=ns(end_s),
        energy_j=energy_j,
        energy_source=energy_source,
    )


def samples_at(
    points: Iterable[tuple[float, float]],
    *,
    gpu: int = 0,
    util: Callable[[float], float] | None = None,
    counter_j: Sequence[float] | None = None,
    run_id: str = "synthetic",
) -> list[GpuSample]:
    """Samples at given (t_s, power_w) points, so hand-computed energy cases read as a table;
    ``counter_j`` gives each sample's energy counter reading (free to disagree with the power)."""
    return [
        GpuSample(
            ts_ns=ns(t),
            gpu=gpu,
            source="emulated",
            power_w=p,
            energy_j=counter_j[i] if counter_j is not None else None,
            gpu_util_pct=float(util(t)) if util else None,
            mem_used_bytes=10**9,
            host="test",
            run_id=run_id,
        )
        for i, (t, p) in enumerate(points)
    ]


def power_samples(
    t0_s: float,
    t1_s: float,
    rate_hz: float,
    power: Callable[[float], float],
    *,
    gpu: int = 0,
    util: Callable[[float], float] | None = None,
    counter: bool = False,
    run_id: str = "synthetic",
) -> list[GpuSample]:
    """Samples every 1/rate_hz from t0 to t1 inclusive; ``counter`` adds a trapezoidal energy counter."""
    points = [
        (float(t), float(power(float(t)))) for t in np.arange(t0_s, t1_s + 1e-9, 1.0 / rate_hz)
    ]
    energy = _trapezoid_j(points) if counter else None
    return samples_at(points, gpu=gpu, util=util, counter_j=energy, run_id=run_id)


def _trapezoid_j(points: list[tuple[float, float]]) -> list[float]:
    """The energy counter a sampler would read at each point: the running trapezoidal integral."""
    out, e = [0.0], 0.0
    for (t0, p0), (t1, p1) in pairwise(points):
        e += 0.5 * (p1 + p0) * (t1 - t0)
        out.append(e)
    return out[: len(points)]


SCENARIO_YAML = """name: synthetic
target: {launcher: {kind: emulator}}
load: {mode: concurrency, levels: [4, 16], replicas: [1, 2], duration_s: 10, warmup_s: 1, cooldown_s: 1}
slo:
  ttft_s: {p99: 0.5}
  max_error_rate: 0.05
telemetry: {rate_hz: 10}
"""


def write_run(
    path: Path,
    *,
    requests: Iterable[RequestRecord] = (),
    windows: Iterable[CellWindow] = (),
    samples: Iterable[GpuSample] = (),
    scenario_yaml: str | None = SCENARIO_YAML,
    run_id: str = "synthetic",
    status: str = "complete",
) -> Path:
    rd = RunDir(path, run_id)
    if scenario_yaml is not None:
        rd.write_scenario(scenario_yaml)
    rd.requests.extend(requests)
    rd.windows.extend(windows)
    rd.gpu_samples.extend(samples)
    rd.close(status)
    return rd.path


@dataclass(frozen=True)
class ModelCell:
    """A modeled cell for a plausible multi-cell run: closed loop at ``level`` streams."""

    replicas: int
    level: int
    tokens_per_s: float
    ttft_s: float
    power_w: float


def plausible_run(
    path: Path,
    cells: list[ModelCell],
    *,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    cooldown_s: float = 1.0,
    tokens: int = 64,
    seed: int = 0,
    scenario_yaml: str | None = SCENARIO_YAML,
    counter_windows: bool = False,
    run_id: str = "synthetic",
) -> Path:
    """A run whose cells deliver roughly the modeled throughput/latency/power (for report work)."""
    rng = np.random.default_rng(seed)
    reqs, wins, samples = [], [], []
    t = 0.0
    rid = 0
    for mc in cells:
        cell = f"r{mc.replicas}-c{mc.level}"
        tpot = max(mc.level / mc.tokens_per_s, 1e-4)  # each stream gets tokens_per_s/level tok/s
        seg = [("warmup", warmup_s), ("measure", duration_s), ("cooldown", cooldown_s)]
        c_t = t
        bounds = {}
        for ph, d in seg:
            bounds[ph] = (c_t, c_t + d)
            c_t += d
        for s in range(mc.level):
            st = t + rng.uniform(0, 0.2)
            while st < bounds["measure"][1]:
                ttft = float(mc.ttft_s * rng.lognormal(0, 0.3))
                e2e = ttft + tpot * (tokens - 1) * float(rng.uniform(0.9, 1.1))
                phase = next(ph for ph, (a, b) in bounds.items() if a <= st < b)
                err = "http_5xx" if rng.random() < 0.005 else None
                reqs.append(
                    request(
                        cell,
                        mc.replicas,
                        mc.level,
                        start_s=st,
                        ttft_s=ttft,
                        e2e_s=e2e,
                        tokens=tokens,
                        error=err,
                        request_id=rid,
                        phase=phase,
                        replica=f"http://127.0.0.1:{9000 + s % mc.replicas}",
                    )
                )
                rid += 1
                st += e2e
        for ph, (a, b) in bounds.items():
            ej = mc.power_w * (b - a) if (counter_windows and ph == "measure") else None
            wins.append(
                window(
                    cell,
                    mc.replicas,
                    mc.level,
                    a,
                    b,
                    phase=ph,
                    energy_j=ej,
                    energy_source="nvml-counter" if ej is not None else None,
                )
            )
        samples += power_samples(
            t,
            c_t - 1e-6,
            10,
            lambda x, p=mc.power_w: p * (1 + 0.02 * np.sin(x)),
            util=lambda x, u=min(99.0, mc.level * 3.0): u,
        )
        t = c_t
    return write_run(
        path,
        requests=reqs,
        windows=wins,
        samples=samples,
        scenario_yaml=scenario_yaml,
        run_id=run_id,
    )
