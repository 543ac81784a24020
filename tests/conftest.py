"""Shared pytest fixtures. Real-server fixtures live in tests/servers.py (other helpers may add
their own modules); importing them here makes them visible to every test file."""

try:
    from tests.servers import influxdb, influxdb_auth, victoria  # noqa: F401
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from servers import influxdb, influxdb_auth, victoria  # noqa: F401
