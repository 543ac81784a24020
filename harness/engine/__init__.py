"""The one run engine behind every door (``run``, ``sweep``, ``locust -f``, the compose master).

Read the flow from the file names:

* :mod:`plan` - cells = replica counts x levels [x repeats], grouped by replica count;
* :mod:`session` - the run directory, manifest, store, telemetry and SIGTERM, closed with a status;
* :mod:`engine` - takes the plan's cells through begin, drive, drain and finish;
* :mod:`hooks` - observers of the run (progress, web UI tab): on_cell_start, on_phase,
  on_record, on_cell_done;
* :mod:`targets` - replicas given by URL, checked to answer before any load is sent;
* :mod:`outcome` - analysis, report and the exit code, decided in one function.
"""
