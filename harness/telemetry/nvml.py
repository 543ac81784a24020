"""GPU readings through NVML (``import pynvml`` from nvidia-ml-py, or a fake with its names).

Power comes from the ``NVML_FI_DEV_POWER_INSTANT`` field where the driver serves it, else from
``nvmlDeviceGetPowerUsage``; both change only about every 100 ms (measured on an H100, driver
580), so ``refresh_period_s`` is 0.1 and sub-100 ms power resolution must never be claimed.
The total-energy counter costs ~3-4 ms per read, so it is read only at window edges.
"""

from __future__ import annotations

import time
from typing import Any

from harness.errors import InputError
from harness.records.schema import GpuSample
from harness.telemetry.source import SourceError, SourceUnavailable

NVML_REFRESH_PERIOD_S = 0.1


def _field_value(v: Any) -> float:
    """The number inside an nvmlFieldValue_t, whatever its declared type."""
    t = int(v.valueType)
    u = v.value
    return {0: lambda: u.dVal, 1: lambda: u.uiVal, 2: lambda: u.ulVal, 3: lambda: u.ullVal,
            4: lambda: u.sllVal, 5: lambda: u.siVal, 6: lambda: u.usVal}.get(t, lambda: u.uiVal)()


class NvmlSource:
    """Reads every selected GPU through an NVML binding (the ``pynvml`` module by default)."""

    blocking_calls = True   # C calls that block the caller: the sampler makes them off the event loop

    def __init__(self, gpus: list[int] | None = None, binding: Any = None):
        if binding is None:
            try:
                import pynvml as binding  # type: ignore[no-redef]
            except ImportError as e:
                raise SourceUnavailable(f"nvidia-ml-py is not installed ({e})") from e
        self.nv = binding
        self._err = binding.NVMLError
        try:
            binding.nvmlInit()
        except self._err as e:
            raise SourceUnavailable(f"NVML could not start: {e}") from e
        except OSError as e:  # a broken libnvidia-ml
            raise SourceUnavailable(f"NVML could not start: {e}") from e
        try:
            count = binding.nvmlDeviceGetCount()
            if count == 0:
                raise SourceUnavailable("NVML sees no GPU")
            if gpus is not None:
                bad = [g for g in gpus if not 0 <= g < count]
                if bad:
                    raise InputError(f"GPU {bad[0]} not present (NVML sees {count} GPU(s): "
                                     f"0-{count - 1})", field="telemetry.gpus")
            self.gpus = list(range(count)) if gpus is None else list(gpus)
            self._h = {g: binding.nvmlDeviceGetHandleByIndex(g) for g in self.gpus}
            self._instant = {g: self._probe_instant(g) for g in self.gpus}
            self._counter = {g: self._probe_counter(g) for g in self.gpus}
            self._throttle_fn = getattr(binding, "nvmlDeviceGetCurrentClocksEventReasons", None) \
                or getattr(binding, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
            self._unsupported: dict[tuple[int, str], bool] = {}
        except self._err as e:
            self.close()
            if int(getattr(e, "value", -1)) == getattr(binding, "NVML_ERROR_NO_PERMISSION", 4):
                raise SourceUnavailable(f"no permission to read the GPU through NVML: {e}") from e
            raise SourceUnavailable(f"NVML error while opening the GPUs: {e}") from e
        except BaseException:
            self.close()
            raise
        self.refresh_period_s = NVML_REFRESH_PERIOD_S

    # -- probing ----------------------------------------------------------------------------
    def _probe_instant(self, g: int) -> bool:
        fid = getattr(self.nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if fid is None:
            return False
        try:
            v = self.nv.nvmlDeviceGetFieldValues(self._h[g], [fid])[0]
        except self._err:
            return False
        return int(v.nvmlReturn) == 0

    def _probe_counter(self, g: int) -> bool:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(self._h[g])
            return True
        except self._err:
            return False

    # -- GpuSource --------------------------------------------------------------------------
    def power_source(self, gpu: int) -> str:
        return "nvml-instant" if self._instant[gpu] else "nvml-power"

    def counter_source(self, gpu: int) -> str | None:
        return "nvml-counter" if self._counter[gpu] else None

    def _power_w(self, h: Any, gpu: int) -> float:
        if self._instant[gpu]:
            v = self.nv.nvmlDeviceGetFieldValues(h, [self.nv.NVML_FI_DEV_POWER_INSTANT])[0]
            if int(v.nvmlReturn) == 0:
                return _field_value(v) / 1000.0
            raise self._err(int(v.nvmlReturn))
        return self.nv.nvmlDeviceGetPowerUsage(h) / 1000.0

    def _optional(self, gpu: int, name: str, fn, *args):
        """A reading some GPUs do not support: None, and not asked again, when NOT_SUPPORTED."""
        if self._unsupported.get((gpu, name)):
            return None
        try:
            return fn(*args)
        except self._err as e:
            if int(getattr(e, "value", -1)) == getattr(self.nv, "NVML_ERROR_NOT_SUPPORTED", 3):
                self._unsupported[(gpu, name)] = True
                return None
            raise

    def read(self, gpu: int, detail: bool = True) -> GpuSample:
        h = self._h[gpu]
        nv = self.nv
        if not detail:   # power only: the fast path between full readings
            try:
                ts = time.time_ns()
                return GpuSample(ts_ns=ts, gpu=gpu, source=self.power_source(gpu),
                                 power_w=self._power_w(h, gpu))
            except self._err as e:
                raise SourceError(type(e).__name__ + f" ({e})") from e
        try:
            ts = time.time_ns()
            power = self._power_w(h, gpu)
            util = self._optional(gpu, "util", nv.nvmlDeviceGetUtilizationRates, h)
            sm = self._optional(gpu, "sm", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
            mem_clk = self._optional(gpu, "memclk", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM)
            mem = self._optional(gpu, "mem", nv.nvmlDeviceGetMemoryInfo, h)
            temp = self._optional(gpu, "temp", nv.nvmlDeviceGetTemperature, h,
                                  nv.NVML_TEMPERATURE_GPU)
            thr = self._optional(gpu, "throttle", self._throttle_fn, h) if self._throttle_fn else None
        except self._err as e:
            raise SourceError(type(e).__name__ + f" ({e})") from e
        return GpuSample(
            ts_ns=ts, gpu=gpu, source=self.power_source(gpu), power_w=power,
            gpu_util_pct=float(util.gpu) if util is not None else None,
            mem_util_pct=float(util.memory) if util is not None else None,
            sm_clock_mhz=float(sm) if sm is not None else None,
            mem_clock_mhz=float(mem_clk) if mem_clk is not None else None,
            mem_used_bytes=int(mem.used) if mem is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            throttle_reasons=int(thr) if thr is not None else None)

    def read_energy_j(self, gpu: int) -> float:
        try:
            return self.nv.nvmlDeviceGetTotalEnergyConsumption(self._h[gpu]) / 1000.0
        except self._err as e:
            raise SourceError(type(e).__name__ + f" ({e})") from e

    def processes(self, gpu: int) -> list[tuple[int, int | None]]:
        try:
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self._h[gpu])
        except self._err as e:
            raise SourceError(type(e).__name__ + f" ({e})") from e
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            # NVML reports "not available" as a huge sentinel (NVML_VALUE_NOT_AVAILABLE)
            out.append((int(p.pid), int(used) if used is not None and used < 1 << 62 else None))
        return out

    def describe(self) -> dict:
        def s(x):
            return x.decode() if isinstance(x, bytes) else str(x)

        info: dict = {"kind": "nvml", "refresh_period_s": self.refresh_period_s, "gpus": {}}
        try:
            info["driver"] = s(self.nv.nvmlSystemGetDriverVersion())
        except self._err:
            pass
        for g in self.gpus:
            d = {"power_source": self.power_source(g), "counter_source": self.counter_source(g)}
            for key, fn in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
                try:
                    d[key] = s(getattr(self.nv, fn)(self._h[g]))
                except (self._err, AttributeError):
                    pass
            try:
                d["power_limit_w"] = self.nv.nvmlDeviceGetPowerManagementLimit(self._h[g]) / 1000.0
            except (self._err, AttributeError):
                pass
            info["gpus"][str(g)] = d
        return info

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down an NVML that half-opened
            pass
