"""Whether two runs measured the same thing: what differs in their workload, SLO, target,
harness version or host hardware. A comparison across such a difference measures the difference
too; ``compare`` lists it before any number."""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.rundata import RunData

ASPECTS = ("workload", "slo", "target", "harness version", "host hardware")

# a replica's or a host's own name is not what was measured: ports, host names and OS builds differ
_TARGET_SKIP = {"headers"}                 # header values name env variables; not the target
_HOST_KEEP_CPU = ("model", "machine", "usable_cores", "logical_cores", "governor")
_HOST_KEEP_GPU = ("name", "driver", "power_limit_w", "max_sm_clock_mhz", "max_mem_clock_mhz",
                  "app_sm_clock_mhz", "memory_bytes")
_SERVER_KEEP = ("model_id", "version", "sha", "model_dtype", "max_batch_total_tokens",
                "max_concurrent_requests")


@dataclass(frozen=True)
class Difference:
    aspect: str          # one of ASPECTS
    field: str           # dotted path, e.g. "workload.output_tokens.value"
    a: object
    b: object

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.a)} vs {_show(self.b)}"

    def to_dict(self) -> dict:
        return {"aspect": self.aspect, "field": self.field, "a": self.a, "b": self.b}


def _show(v) -> str:
    return "(none)" if v is None else str(v)


def _flat(prefix: str, v, out: dict) -> dict:
    if isinstance(v, dict):
        for k in sorted(v):
            _flat(f"{prefix}.{k}" if prefix else str(k), v[k], out)
    elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
        for i, x in enumerate(v):
            _flat(f"{prefix}[{i}]", x, out)
    else:
        out[prefix] = v
    return out


def _diff(aspect: str, prefix: str, a, b) -> list[Difference]:
    fa, fb = _flat(prefix, a, {}), _flat(prefix, b, {})
    return [Difference(aspect, k, fa.get(k), fb.get(k))
            for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _section(run: RunData, name: str):
    sc = run.scenario
    if sc is not None:
        return getattr(sc, name).model_dump(mode="json")
    return (run.manifest.get("scenario") or {}).get(name)


def _target(run: RunData) -> dict:
    t = dict(_section(run, "target") or {})
    for k in _TARGET_SKIP:
        t.pop(k, None)
    m = run.manifest
    if m.get("protocol"):           # what protocol auto found, the model it named
        t["protocol"] = m["protocol"]
    if m.get("model"):
        t["model"] = m["model"]
    servers = m.get("servers") or {}
    seen = sorted({tuple((k, s.get(k)) for k in _SERVER_KEEP if s.get(k) is not None)
                   for s in servers.values() if isinstance(s, dict)})
    if seen:   # the servers' own word (version, model); which port they listened on is not
        t["servers"] = [dict(x) for x in seen]
    t["emulated"] = m.get("emulated")
    return t


def _hardware(run: RunData) -> dict:
    hw = run.manifest.get("hardware") or {}
    cpu = hw.get("cpu") or {}
    return {"cpu": {k: cpu.get(k) for k in _HOST_KEEP_CPU if cpu.get(k) is not None},
            "gpus": [{k: g.get(k) for k in _HOST_KEEP_GPU if g.get(k) is not None}
                     for g in hw.get("gpus") or []]}


def differences(a: RunData, b: RunData) -> list[Difference]:
    """Every field in which run B's setup differs from run A's, grouped by :data:`ASPECTS`."""
    out = _diff("workload", "workload", _section(a, "workload"), _section(b, "workload"))
    out += _diff("slo", "slo", _section(a, "slo"), _section(b, "slo"))
    out += _diff("target", "target", _target(a), _target(b))
    va = (a.manifest.get("versions") or {}).get("slm-harness")
    vb = (b.manifest.get("versions") or {}).get("slm-harness")
    if va != vb:
        out.append(Difference("harness version", "versions.slm-harness", va, vb))
    if a.manifest.get("hardware") is None or b.manifest.get("hardware") is None:
        if (a.manifest.get("hardware") is None) != (b.manifest.get("hardware") is None):
            out.append(Difference("host hardware", "hardware", "recorded" if a.manifest.get("hardware")
                                  else None, "recorded" if b.manifest.get("hardware") else None))
    else:
        out += _diff("host hardware", "hardware", _hardware(a), _hardware(b))
    return out
