"""The hardware a run measured, for the manifest and the report: this engine is bound by the
host's CPU on some servers, so the host decides part of the answer.

Everything is read defensively (a missing file, no NVML, a server without ``/info``: the field
is left out), and nothing here is a secret: model names, counts, clocks, versions.
"""

from __future__ import annotations

import json
import os
import platform
import urllib.request
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_info() -> dict:
    """CPU model, logical cores (and those this process may use), frequency governor."""
    out: dict = {"machine": platform.machine(), "logical_cores": os.cpu_count()}
    try:
        out["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            out["model"] = line.split(":", 1)[1].strip()
            break
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov:
        out["governor"] = gov
    mhz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if mhz and mhz.isdigit():
        out["max_mhz"] = int(mhz) / 1000
    return out


def gpu_info() -> list[dict]:
    """Per GPU from NVML: name, driver, power limit, max and application clocks; [] without it."""
    try:
        import pynvml as nv
    except ImportError:
        return []
    try:
        nv.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return []
    out = []
    try:
        driver = nv.nvmlSystemGetDriverVersion()
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            d: dict = {"index": i, "driver": _s(driver)}
            for key, fn, args in (
                ("name", nv.nvmlDeviceGetName, ()),
                ("power_limit_w", nv.nvmlDeviceGetPowerManagementLimit, ()),
                ("max_sm_clock_mhz", nv.nvmlDeviceGetMaxClockInfo, (nv.NVML_CLOCK_SM,)),
                ("max_mem_clock_mhz", nv.nvmlDeviceGetMaxClockInfo, (nv.NVML_CLOCK_MEM,)),
                ("app_sm_clock_mhz", nv.nvmlDeviceGetApplicationsClock, (nv.NVML_CLOCK_SM,)),
                ("memory_bytes", lambda h: nv.nvmlDeviceGetMemoryInfo(h).total, ()),
            ):
                try:
                    v = fn(h, *args)
                except Exception:  # noqa: BLE001 - a field the GPU or driver lacks
                    continue
                d[key] = _s(v) if key != "power_limit_w" else v / 1000.0
            out.append(d)
    except Exception:  # noqa: BLE001
        pass
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def server_info(urls: list[str], timeout_s: float = 1.0, access=None) -> dict:
    """Each replica's ``/info`` (TGI: model, version, sha; others: whatever it says) by URL;
    a replica without one is left out. ``access``: the target's TLS settings and headers."""
    out = {}
    for u in urls:
        try:
            if access is not None:
                status, body = access.get(u.rstrip("/") + "/info", timeout_s)
                if status != 200:
                    continue
                data = json.loads(body[:65536])
            else:
                with urllib.request.urlopen(u.rstrip("/") + "/info", timeout=timeout_s) as r:
                    data = json.loads(r.read(65536))
        except Exception:  # noqa: BLE001 - many servers have no /info
            continue
        if isinstance(data, dict):
            keep = ("model_id", "version", "sha", "model_dtype", "max_concurrent_requests",
                    "max_batch_total_tokens", "router", "docker_label")
            out[u] = {k: data[k] for k in keep if k in data} or {
                k: v for k, v in list(data.items())[:12] if isinstance(v, (str, int, float))}
    return out


def host_info() -> dict:
    return {"host": platform.node(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_info(), "gpus": gpu_info()}


def describe(hw: dict | None) -> str:
    """One line for the report: 'CPU <model> (N cores, governor) · GPU <name> (driver, W)'."""
    if not hw:
        return ""
    parts = []
    cpu = hw.get("cpu") or {}
    if cpu:
        bits = [f"{cpu.get('usable_cores') or cpu.get('logical_cores')} cores"]
        if cpu.get("governor"):
            bits.append(f"governor {cpu['governor']}")
        parts.append(f"CPU {cpu.get('model', cpu.get('machine', '?'))} ({', '.join(bits)})")
    for g in hw.get("gpus") or []:
        bits = [f"driver {g.get('driver', '?')}"]
        if g.get("power_limit_w"):
            bits.append(f"power limit {g['power_limit_w']:.0f} W")
        if g.get("max_sm_clock_mhz"):
            bits.append(f"SM clock max {g['max_sm_clock_mhz']} MHz")
        parts.append(f"GPU {g.get('index', '')} {g.get('name', '?')} ({', '.join(bits)})")
    return " · ".join(parts)
