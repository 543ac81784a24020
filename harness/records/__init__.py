"""Records and the run directory they are written to."""

from harness.records.schema import (ERROR_CLASSES, GPU_SCHEMA, REQUEST_SCHEMA, WINDOW_SCHEMA,
                                    CellWindow, GpuSample, RequestRecord)

__all__ = ["ERROR_CLASSES", "GPU_SCHEMA", "REQUEST_SCHEMA", "WINDOW_SCHEMA", "CellWindow",
           "GpuSample", "RequestRecord"]

from harness.records.rundir import ParquetAppender, RunDir, new_run_id, read_table  # noqa: E402

__all__ += ["ParquetAppender", "RunDir", "new_run_id", "read_table"]
