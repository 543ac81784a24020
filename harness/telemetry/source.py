"""What a GPU source gives the sampler: one reading per GPU, an energy counter, processes.

Two sources exist: :class:`harness.telemetry.nvml.NvmlSource` (a real GPU through NVML) and
:class:`harness.telemetry.emulated.EmulatedSource` (the emulator's modeled GPU over HTTP).
A read that fails raises :class:`SourceError`; the sampler records the gap and keeps going.
"""

from __future__ import annotations

from typing import Protocol

from harness.records.schema import GpuSample


class SourceError(Exception):
    """One read failed (GPU lost, driver error, emulator unreachable); the next may succeed."""


class SourceUnavailable(Exception):
    """The source cannot be opened at all (no NVML library, driver, GPU, permission, emulator)."""


class GpuSource(Protocol):
    gpus: list[int]                  # the GPUs read, by NVML index
    refresh_period_s: float | None   # how often the power value really changes (None: unknown)

    def power_source(self, gpu: int) -> str:
        """``nvml-instant`` | ``nvml-power`` | ``emulated``: what ``power_w`` is."""

    def counter_source(self, gpu: int) -> str | None:
        """``nvml-counter`` | ``emulated-counter`` | None when there is no energy counter."""

    def read(self, gpu: int, detail: bool = True) -> GpuSample:
        """One sample, stamped with ``time.time_ns()`` at the read. Raises SourceError.
        ``detail=False``: power only (the sampler asks for the rest at most ``detail_hz``)."""

    def read_energy_j(self, gpu: int) -> float:
        """The cumulative energy counter in joules (slow on NVML: read at window edges only)."""

    def processes(self, gpu: int) -> list[tuple[int, int | None]]:
        """(pid, used GPU memory bytes) of the compute processes on the GPU."""

    def describe(self) -> dict:
        """Manifest facts: names, driver, power source and refresh period per GPU (no secrets)."""

    def close(self) -> None: ...
