"""Records and the run directory they are written to.

The record classes import nothing heavy; the Arrow schemas and the run directory (pyarrow) load
on first use, so telemetry can run where only nvidia-ml-py is installed (the GPU check).
"""

from harness.records.schema import ERROR_CLASSES, CellWindow, GpuSample, RequestRecord

_LAZY = {"GPU_SCHEMA": "harness.records.schema", "REQUEST_SCHEMA": "harness.records.schema",
         "WINDOW_SCHEMA": "harness.records.schema", "ParquetAppender": "harness.records.rundir",
         "RunDir": "harness.records.rundir", "new_run_id": "harness.records.rundir",
         "read_table": "harness.records.rundir"}

__all__ = ["ERROR_CLASSES", "CellWindow", "GpuSample", "RequestRecord", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
