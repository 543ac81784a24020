"""GPU telemetry: an NVML (or emulated) sampler feeding the run directory and the store.

Start here: :func:`harness.telemetry.select.open_source` picks the source,
:class:`harness.telemetry.sampler.Sampler` samples it on a drift-free schedule and measures
energy per window. See docs/energy.md.
"""

from harness.telemetry.records import GpuGap, GpuProcessSample, WindowEnergy
from harness.telemetry.sampler import Sampler
from harness.telemetry.select import Selected, open_source
from harness.telemetry.sinks import RunDirSink, Sink, StoreSink
from harness.telemetry.source import SourceError, SourceUnavailable

__all__ = ["GpuGap", "GpuProcessSample", "RunDirSink", "Sampler", "Selected", "Sink",
           "SourceError", "SourceUnavailable", "StoreSink", "WindowEnergy", "open_source"]
