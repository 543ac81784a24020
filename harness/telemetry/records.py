"""Telemetry records beside ``GpuSample``: per-process GPU memory, gaps, and window energy.

Kept here (not in ``harness.records.schema``) because only telemetry produces them; they are
written to the run directory as ``gpu_processes.parquet`` and into the manifest's ``telemetry``
section, and to the store as the ``gpu_process`` and ``gpu_gap`` measurements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.records.schema import CellWindow, arrow_schema


@dataclass(slots=True)
class GpuProcessSample:
    """GPU memory one process holds on one GPU: maps a replica's PID to its share."""

    ts_ns: int
    gpu: int
    pid: int
    used_bytes: int | None = None    # None where the driver hides it (no permission, MIG)
    host: str = ""
    run_id: str = ""


@dataclass(slots=True)
class GpuGap:
    """A stretch in which one GPU could not be read; sampling went on and resumed after it."""

    gpu: int
    start_ns: int                    # first failed read
    end_ns: int                      # first good read after it (or the sampler's stop)
    errors: int                      # failed reads in the gap
    error: str                       # the first error, e.g. "NVMLError_GPUIsLost"
    host: str = ""
    run_id: str = ""

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(slots=True)
class WindowEnergy:
    """Energy over one window, per GPU and in total, with where the number came from.

    ``source`` is ``nvml-counter`` / ``emulated-counter`` (hardware or modeled energy counter read
    at both edges) or ``integral:<power source>`` (trapezoid over power samples); several GPUs
    with different sources give the sorted sources joined by ``+``.
    """

    name: str
    start_ns: int
    end_ns: int
    energy_j: float | None
    source: str | None
    per_gpu: dict[int, tuple[float | None, str | None]] = field(default_factory=dict)
    samples: int = 0                 # power samples inside the window (all GPUs)
    integral_j: float | None = None  # trapezoid of power over the window, beside the counter

    @property
    def mean_power_w(self) -> float | None:
        if self.energy_j is None or self.end_ns <= self.start_ns:
            return None
        return self.energy_j / ((self.end_ns - self.start_ns) / 1e9)

    def fill(self, window: CellWindow) -> CellWindow:
        """The cell window with this energy written in (``CellWindow.energy_j/energy_source``)."""
        return dataclasses.replace(window, energy_j=self.energy_j, energy_source=self.source)


def process_schema():
    """Arrow schema of ``gpu_processes.parquet`` (pyarrow loads only here)."""
    return arrow_schema(GpuProcessSample)
