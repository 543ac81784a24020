"""The records every part exchanges: one per request, one per GPU sample, one per cell window.

Absolute times are wall-clock nanoseconds (``time.time_ns()``) so that request records and GPU
samples from different processes join on one axis; durations are float seconds (``*_s``).
A failed request is a record with ``error_class`` set, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

Phase = Literal["warmup", "measure", "cooldown", "ramp"]

# Error classes, shared by the load generator (which assigns them) and analysis (which counts them).
ERROR_CLASSES = (
    "connect",          # connection refused / DNS / connect timeout
    "reset",            # connection reset or closed mid-stream
    "timeout",          # no byte within the request timeout
    "http_4xx",         # 4xx other than 429
    "http_429",         # overloaded (TGI max_concurrent_requests)
    "http_5xx",         # 5xx, including TGI's 424 generation error mapped here
    "sse_error",        # an SSE event carrying {"error": ...}
    "malformed",        # an event that is not valid JSON / not the protocol's shape
    "incomplete",       # the stream ended without the final event
    "other",
)


@dataclass(slots=True)
class RequestRecord:
    run_id: str
    cell: str                    # e.g. "r2-c64" (replicas 2, concurrency 64) or "r1-q8.0" (rate)
    replicas: int
    level: float
    phase: str                   # Phase
    replica: str                 # the replica's base URL (per-replica attribution)
    worker: str                  # host:pid of the generating process
    request_id: int
    intended_ns: int             # when the schedule wanted it sent (open loop: coordinated-omission safe)
    start_ns: int                # when it was actually sent
    end_ns: int
    first_token_ns: int | None = None
    ttft_s: float | None = None  # from intended_ns in open loop, from start_ns in closed loop
    e2e_s: float | None = None
    tpot_s: float | None = None  # (e2e - ttft) / (output_tokens - 1)
    itl_mean_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    itl_max_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int = 0
    finish_reason: str | None = None
    status: int | None = None    # HTTP status; None when no response
    error_class: str | None = None
    error: str | None = None     # short message, never secrets
    protocol: str = "tgi"
    attempt: int | None = None   # the cell's attempt (a resumed cell's retry is 2); the run dir stamps it
    session: int | None = None   # multi-turn sessions: the conversation's id ...
    turn: int | None = None      # ... and this request's turn in it (1, 2, ...)

    @property
    def ok(self) -> bool:
        return self.error_class is None

    def to_dict(self) -> dict:
        # every field is a scalar: a plain getattr per field equals asdict() at a tenth of its cost
        return {f: getattr(self, f) for f in _REQUEST_FIELDS}


_REQUEST_FIELDS = tuple(f.name for f in fields(RequestRecord))


@dataclass(slots=True)
class GpuSample:
    ts_ns: int
    gpu: int
    source: str                  # "nvml-instant" | "nvml-power" | "emulated"
    power_w: float | None = None
    energy_j: float | None = None  # hardware counter (since driver load) when read at this sample
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    mem_used_bytes: int | None = None
    temperature_c: float | None = None
    throttle_reasons: int | None = None
    host: str = ""
    run_id: str = ""


@dataclass(slots=True)
class CellWindow:
    """One phase of one cell: the boundaries analysis windows its metrics and energy on."""

    run_id: str
    cell: str
    replicas: int
    level: float
    level_kind: str              # "concurrency" | "rate"
    phase: str
    start_ns: int
    end_ns: int
    energy_j: float | None = None        # hardware counter delta over the window, when read
    energy_source: str | None = None     # "nvml-counter" | None
    note: str = ""
    attempt: int | None = None           # the cell's attempt, stamped by the run directory


def arrow_schema(cls):
    """pyarrow schema from a record dataclass, so Parquet columns keep their types when all-null."""
    import pyarrow as pa

    mapping = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(),
               "str | None": pa.string(), "int | None": pa.int64(), "float | None": pa.float64(),
               "bool": pa.bool_()}
    return pa.schema([pa.field(f.name, mapping[str(f.type)]) for f in fields(cls)])


_SCHEMA_OF = {"REQUEST_SCHEMA": RequestRecord, "GPU_SCHEMA": GpuSample, "WINDOW_SCHEMA": CellWindow}


def __getattr__(name: str):
    """REQUEST_SCHEMA / GPU_SCHEMA / WINDOW_SCHEMA, built on first use: the records themselves
    need no pyarrow (the GPU check runs with only nvidia-ml-py and torch)."""
    if name in _SCHEMA_OF:
        value = globals()[name] = arrow_schema(_SCHEMA_OF[name])
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
