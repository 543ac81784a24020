"""Where samples go: the run directory (always), the store (optional), listeners (web UI).

A sink that raises is counted and logged once; it never stops sampling or the other sinks.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import TYPE_CHECKING

from harness.records.schema import GpuSample
from harness.telemetry.records import GpuGap, GpuProcessSample, process_schema

if TYPE_CHECKING:
    from harness.records.rundir import RunDir


class Sink:
    """Base: every hook is optional."""

    def samples(self, batch: list[GpuSample]) -> None: ...

    def processes(self, batch: list[GpuProcessSample]) -> None: ...

    def gap(self, gap: GpuGap) -> None: ...

    def close(self, summary: dict) -> None: ...


_SAMPLE_NAMES = tuple(f.name for f in fields(GpuSample))
_sample_values = attrgetter(*_SAMPLE_NAMES)


def sample_row(s: GpuSample) -> dict:
    """A sample as a flat dict (``dataclasses.asdict`` deep-copies: 5x slower at 100 Hz)."""
    return dict(zip(_SAMPLE_NAMES, _sample_values(s)))


class RunDirSink(Sink):
    """``gpu_samples.parquet``, ``gpu_processes.parquet`` and the manifest's ``telemetry`` part."""

    def __init__(self, run_dir: "RunDir", flush_rows: int = 4096):
        self.run_dir = run_dir
        # Shared through the RunDir: a sweep starts one sampler per replica count, and each must
        # append to the run's one file rather than start it anew.
        self._procs = run_dir.appender("gpu_processes", process_schema())
        self._gaps: list[dict] = []

    def samples(self, batch: list[GpuSample]) -> None:
        self.run_dir.gpu_samples.extend(sample_row(x) for x in batch)

    def processes(self, batch: list[GpuProcessSample]) -> None:
        self._procs.extend(batch)

    def gap(self, gap: GpuGap) -> None:
        self._gaps.append({"gpu": gap.gpu, "start_ns": gap.start_ns, "end_ns": gap.end_ns,
                           "duration_s": round(gap.duration_s, 6), "errors": gap.errors,
                           "error": gap.error})

    def close(self, summary: dict) -> None:
        self._procs.flush()
        self.run_dir.gpu_samples.flush()
        # Gaps of earlier samplers of the same run are kept, not overwritten.
        earlier = self.run_dir.manifest.get("telemetry", {}).get("gaps", [])
        self.run_dir.write_manifest(telemetry={**summary, "gaps": earlier + self._gaps})


class StoreSink(Sink):
    """Hands samples to a :class:`harness.store.writer.InfluxWriter` (which never blocks on the DB)."""

    def __init__(self, writer, run_id: str = ""):
        self.writer = writer
        self.run_id = run_id

    def samples(self, batch: list[GpuSample]) -> None:
        self.writer.write_gpu_samples(batch)

    def processes(self, batch: list[GpuProcessSample]) -> None:
        self.writer.write_gpu_processes(batch)

    def gap(self, gap: GpuGap) -> None:
        self.writer.write_gpu_gap(gap)

    def close(self, summary: dict) -> None:
        self.writer.flush_async()
