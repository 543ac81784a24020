"""The one simulated GPU that every replica of an emulator shares.

Replicas report the GPU utilisation of their current step (GPU time / step time) and the rate of
attention work it does; the sum is the GPU's utilisation, which with the attention rate drives the
modeled power (:func:`power_w`), the energy integral and the contention the next step of every other
replica sees. Everything here is a model and is labelled ``emulated`` wherever it leaves the process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Iterable

from harness.emulator.profile import GpuSpec, Profile


def power_w(spec: GpuSpec, util: float, attention_mpairs_s: float = 0.0) -> float:
    """Modeled draw: idle + active * util**exponent + attention_w * (10^6 attention pairs a second),
    capped at the power limit."""
    p = spec.idle_w + spec.active_w * (util ** spec.power_exponent if util > 0 else 0.0)
    return min(p + spec.attention_w * attention_mpairs_s, spec.power_limit_w)


def temperature_c(spec: GpuSpec, temp_c: float, power: float, dt_s: float) -> float:
    """The die temperature ``dt_s`` later: first order towards idle + temp_per_w * (power - idle), 30 s."""
    target = spec.temp_idle_c + spec.temp_per_w * (power - spec.idle_w)
    return target + (temp_c - target) * math.exp(-dt_s / 30.0)


def other_load(rates: Iterable[tuple[Hashable, float]], mine: Hashable) -> tuple[float, int]:
    """Summed GPU busy fraction of every replica but ``mine`` and how many of them are busy;
    ``rates`` pairs each replica's key with its rate (in-process index or shared-file slot)."""
    total = 0.0
    busy = 0
    for key, rate in rates:
        if key != mine and rate > 0.0:
            total += rate
            busy += 1
    return total, busy


class SharedGpu:
    def __init__(self, profile: Profile, replicas: int):
        self.spec = profile.gpu
        self.model = profile.model
        self.replicas = replicas
        self.rates = [0.0] * replicas          # GPU busy fraction per replica (current step)
        self.attention = [0.0] * replicas      # 10^6 attention pairs a second per replica (current step)
        self.kv_tokens = [0] * replicas        # tokens held in each replica's KV cache
        self._last_ns = time.monotonic_ns()
        self._wall_offset_ns = time.time_ns() - self._last_ns
        self._energy_j = 0.0
        self._temp_c = self.spec.temp_idle_c
        self._util = 0.0

    # -- replicas report -------------------------------------------------------------------
    def set_rate(self, replica: int, rate: float, now_ns: int, attention: float = 0.0) -> None:
        self._advance(now_ns)
        self.rates[replica] = rate
        self.attention[replica] = attention
        self._util = min(1.0, sum(self.rates))

    def others(self, replica: int) -> tuple[float, int]:
        """Utilisation of the other replicas and how many of them are busy."""
        return other_load(enumerate(self.rates), replica)

    # -- the model -------------------------------------------------------------------------
    @property
    def util(self) -> float:
        return self._util

    def power_w(self, util: float | None = None) -> float:
        return power_w(self.spec, self._util if util is None else util, sum(self.attention))

    def _advance(self, now_ns: int) -> None:
        dt = (now_ns - self._last_ns) / 1e9
        if dt <= 0:
            return
        p = self.power_w()
        self._energy_j += p * dt
        self._temp_c = temperature_c(self.spec, self._temp_c, p, dt)
        self._last_ns = now_ns

    def mem_used_bytes(self) -> int:
        per = self.model.weight_bytes + self.spec.replica_overhead_bytes
        kv = sum(self.kv_tokens) * self.model.kv_bytes_per_token
        return min(self.spec.memory_bytes, self.replicas * per + kv)

    def snapshot(self, replica: int, now_ns: int | None = None) -> dict:
        now = time.monotonic_ns() if now_ns is None else now_ns
        self._advance(now)
        return {
            "emulated": True,
            "ts_ns": now + self._wall_offset_ns,
            "power_w": round(self.power_w(), 3),
            "energy_j": round(self._energy_j, 6),
            "gpu_util_pct": round(100.0 * self._util, 3),
            "mem_used_bytes": self.mem_used_bytes(),
            "mem_total_bytes": self.spec.memory_bytes,
            "sm_clock_mhz": self.spec.sm_clock_mhz,
            "temperature_c": round(self._temp_c, 2),
            "replica": replica,
            "replicas": self.replicas,
            "name": self.spec.name,
        }
