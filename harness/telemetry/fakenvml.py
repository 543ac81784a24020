"""A stand-in for the ``pynvml`` module, for machines with no GPU (tests and the benchmark).

It has the names :class:`harness.telemetry.nvml.NvmlSource` calls and behaves like the H100
measured in docs/energy.md where it matters: power changes only every ``refresh_s`` (100 ms),
the energy counter is the exact integral of that stepped power and costs ``counter_cost_s`` per
read, and a GPU can be made to fail (``NVMLError_GPUIsLost``) for a stretch of time. It uses
pynvml's own error classes so the code under test catches exactly what it would on a GPU.
Never used when real NVML works: the sampler takes it only when handed it explicitly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import pynvml as _real

NVMLError = _real.NVMLError
NVML_FI_DEV_POWER_INSTANT = _real.NVML_FI_DEV_POWER_INSTANT
NVML_CLOCK_SM = _real.NVML_CLOCK_SM
NVML_CLOCK_MEM = _real.NVML_CLOCK_MEM
NVML_TEMPERATURE_GPU = _real.NVML_TEMPERATURE_GPU
NVML_ERROR_NOT_SUPPORTED = _real.NVML_ERROR_NOT_SUPPORTED
NVML_ERROR_NO_PERMISSION = _real.NVML_ERROR_NO_PERMISSION
NVML_ERROR_GPU_IS_LOST = _real.NVML_ERROR_GPU_IS_LOST
NVML_ERROR_LIBRARY_NOT_FOUND = _real.NVML_ERROR_LIBRARY_NOT_FOUND


def square_wave(low_w: float = 80.0, high_w: float = 400.0, period_s: float = 1.0) -> Callable[[float], float]:
    """Power in watts at time t: on/off load like the GPU check's matmul phases."""
    return lambda t: high_w if (t % period_s) < period_s / 2 else low_w


@dataclass
class FakeGpu:
    power_w: Callable[[float], float] = field(default_factory=square_wave)
    instant_field: bool = True
    counter: bool = True
    fail_between: tuple[float, float] | None = None   # seconds since init: reads raise GPUIsLost
    processes: list[tuple[int, int]] = field(default_factory=list)


class FakeNvml:
    """Module-like fake NVML. ``init_error`` makes ``nvmlInit`` fail with that NVML error code."""

    NVMLError = NVMLError
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION

    def __init__(self, gpus: list[FakeGpu] | None = None, *, refresh_s: float = 0.1,
                 counter_cost_s: float = 0.0035, init_error: int | None = None):
        self.devices = gpus if gpus is not None else [FakeGpu()]
        self.refresh_s = refresh_s
        self.counter_cost_s = counter_cost_s
        self.init_error = init_error
        self.t0 = time.time()
        self.calls: dict[str, int] = {}
        self.initialised = False

    # -- helpers ----------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _dev(self, h: int) -> FakeGpu:
        g = self.devices[h]
        if g.fail_between:
            t = time.time() - self.t0
            if g.fail_between[0] <= t < g.fail_between[1]:
                raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return g

    def _stepped_w(self, g: FakeGpu, t: float) -> float:
        return g.power_w(math.floor(t / self.refresh_s) * self.refresh_s)

    def energy_j(self, h: int, t: float) -> float:
        """Exact integral of the stepped power from init to ``t`` seconds."""
        g = self.devices[h]
        steps = math.floor(t / self.refresh_s)
        e = sum(g.power_w(k * self.refresh_s) for k in range(steps)) * self.refresh_s
        return e + g.power_w(steps * self.refresh_s) * (t - steps * self.refresh_s)

    # -- the pynvml surface -----------------------------------------------------------------
    def nvmlInit(self):
        self._count("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self):
        self.initialised = False

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlSystemGetDriverVersion(self):
        return "fake-nvml"

    def nvmlDeviceGetName(self, h):
        return "Fake GPU (no hardware)"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-fake-{h}"

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return 700_000

    def nvmlDeviceGetFieldValues(self, h, ids):
        self._count("nvmlDeviceGetFieldValues")
        g = self._dev(h)
        out = []
        for fid in ids:
            v = _real.c_nvmlFieldValue_t()
            v.fieldId = fid
            if fid == NVML_FI_DEV_POWER_INSTANT and g.instant_field:
                v.nvmlReturn = 0
                v.valueType = 1
                v.value.uiVal = int(self._stepped_w(g, time.time() - self.t0) * 1000)
            else:
                v.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
            out.append(v)
        return out

    def nvmlDeviceGetPowerUsage(self, h):
        self._count("nvmlDeviceGetPowerUsage")
        return int(self._stepped_w(self._dev(h), time.time() - self.t0) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        g = self._dev(h)
        if not g.counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        t = time.time() - self.t0
        if self.counter_cost_s:
            time.sleep(self.counter_cost_s)
        return int(self.energy_j(h, t) * 1000)

    def nvmlDeviceGetUtilizationRates(self, h):
        g = self._dev(h)
        busy = self._stepped_w(g, time.time() - self.t0) > 150
        return SimpleNamespace(gpu=97 if busy else 0, memory=40 if busy else 0)

    def nvmlDeviceGetClockInfo(self, h, kind):
        self._dev(h)
        return 1980 if kind == NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMemoryInfo(self, h):
        g = self._dev(h)
        used = sum(b for _, b in g.processes) + (500 << 20)
        return SimpleNamespace(used=used, total=80 << 30, free=(80 << 30) - used)

    def nvmlDeviceGetTemperature(self, h, kind):
        self._dev(h)
        return 41

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._dev(h)
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        g = self._dev(h)
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in g.processes]
