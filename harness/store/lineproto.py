"""InfluxDB line protocol for the harness's records: the measurement/tag/field schema.

Tags are only low-cardinality labels (run, host, GPU, cell, phase, replica URL, worker, error
class); everything per-request or per-sample is a field. See docs/store.md for the full table.

| measurement   | tags                                                    | time          |
|---------------|---------------------------------------------------------|---------------|
| gpu           | run_id, host, gpu, source                               | ts_ns         |
| gpu_process   | run_id, host, gpu, pid                                  | ts_ns         |
| gpu_gap       | run_id, host, gpu                                       | start_ns      |
| request       | run_id, cell, phase, replica, worker, protocol, error_class | start_ns (+n) |
| window        | run_id, cell, phase, level_kind                         | start_ns      |
| marker        | run_id, kind, event                                     | ts_ns         |

A point is identified by measurement + tag set + time; writing the same point again overwrites
it. That is what makes replaying a spooled batch safe (exactly once in the database), and why
two requests of one series started in the same nanosecond are kept apart by :class:`UniqueTime`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, fields as dc_fields, is_dataclass
from functools import lru_cache
from typing import Any, Iterable

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})


def _fstr(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def field_value(v: Any) -> str | None:
    """Line-protocol field value, or None to leave the field out (None, NaN, inf)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else None
    return _fstr(str(v))


def line(measurement: str, tags: dict[str, Any], fields: dict[str, Any], ts_ns: int) -> str | None:
    """One point; tags with empty values and fields with no value are left out; None if no field."""
    fs = []
    for k, v in fields.items():
        s = field_value(v)
        if s is not None:
            fs.append(f"{k.translate(_TAG)}={s}")
    if not fs:
        return None
    ts = "".join(f",{k.translate(_TAG)}={str(v).translate(_TAG)}"
                 for k, v in sorted(tags.items()) if v is not None and str(v) != "")
    return f"{measurement.translate(_MEAS)}{ts} {','.join(fs)} {int(ts_ns)}"


class UniqueTime:
    """Nudges a timestamp by +1 ns while (series, time) was already used recently (bounded)."""

    def __init__(self, keep: int = 200_000):
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._keep = keep

    def __call__(self, series: str, ts_ns: int) -> int:
        while (series, ts_ns) in self._seen:
            ts_ns += 1
        self._seen[(series, ts_ns)] = None
        if len(self._seen) > self._keep:
            self._seen.popitem(last=False)
        return ts_ns


@lru_cache(maxsize=None)
def _types(cls) -> dict[str, type]:
    out = {}
    for f in dc_fields(cls):
        t = str(f.type)
        if t.startswith("float"):
            out[f.name] = float
        elif t.startswith("int"):
            out[f.name] = int
    return out


def _record_dict(r) -> dict:
    """A record as a dict with every number of its declared type: a float field that arrives
    as a Python int would otherwise be written as an integer and rejected by InfluxDB
    (field type conflict) once the series holds floats."""
    if not is_dataclass(r):
        return dict(r)
    d = asdict(r)
    for k, typ in _types(type(r)).items():
        v = d.get(k)
        if v is not None and not isinstance(v, typ):
            d[k] = typ(v)
    return d


# ---- encoders, one per record kind ----------------------------------------------------------
GPU_FIELDS = ("power_w", "energy_j", "gpu_util_pct", "mem_util_pct", "sm_clock_mhz",
              "mem_clock_mhz", "mem_used_bytes", "temperature_c", "throttle_reasons")


def gpu_sample(s) -> str | None:
    d = _record_dict(s)
    return line("gpu", {"run_id": d["run_id"], "host": d["host"], "gpu": d["gpu"],
                        "source": d["source"]},
                {k: d.get(k) for k in GPU_FIELDS}, d["ts_ns"])


def gpu_process(p) -> str | None:
    return line("gpu_process", {"run_id": p.run_id, "host": p.host, "gpu": p.gpu, "pid": p.pid},
                {"used_bytes": p.used_bytes, "present": True}, p.ts_ns)


def gpu_gap(g) -> str | None:
    return line("gpu_gap", {"run_id": g.run_id, "host": g.host, "gpu": g.gpu},
                {"end_ns": g.end_ns, "duration_s": g.duration_s, "errors": g.errors,
                 "error": g.error}, g.start_ns)


REQUEST_TAGS = ("run_id", "cell", "phase", "replica", "worker", "protocol", "error_class")


def request(r, unique: UniqueTime | None = None) -> str | None:
    d = _record_dict(r)
    tags = {k: d.pop(k, None) for k in REQUEST_TAGS}
    ts = d.pop("start_ns")
    fields = d  # request_id, replicas, level, intended_ns, end_ns, ttft_s, ... as fields
    if unique is not None:
        series = ",".join(f"{k}={tags[k]}" for k in REQUEST_TAGS)
        ts = unique(series, ts)
    return line("request", tags, fields, ts)


def window(w) -> str | None:
    d = _record_dict(w)
    tags = {k: d.pop(k, None) for k in ("run_id", "cell", "phase", "level_kind")}
    d["duration_s"] = (d["end_ns"] - d["start_ns"]) / 1e9
    return line("window", tags, d, d["start_ns"])


def marker(run_id: str, kind: str, event: str, ts_ns: int, **fields: Any) -> str | None:
    """Run and level boundaries (``kind`` run|cell|level, ``event`` start|end|...)."""
    fields.setdefault("event_name", event)
    return line("marker", {"run_id": run_id, "kind": kind, "event": event}, fields, ts_ns)


def lines(encode, items: Iterable) -> list[str]:
    out = []
    for it in items:
        s = encode(it)
        if s is not None:
            out.append(s)
    return out
