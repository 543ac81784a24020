"""The optional InfluxDB store: batched writes (v2 / v1), disk spool and replay, InfluxQL reads.

The run directory is always written; the store is the live, shared copy beside it. See
docs/outputs.md for the schema and the delivery guarantees.
"""

from harness.store.query import read_gpu_samples
from harness.store.reader import InfluxQLReader, QueryError, VictoriaMetricsReader
from harness.store.target import InfluxTarget
from harness.store.writer import InfluxWriter, writer_from_config

__all__ = ["InfluxQLReader", "InfluxTarget", "InfluxWriter", "QueryError",
           "VictoriaMetricsReader", "read_gpu_samples", "writer_from_config"]
