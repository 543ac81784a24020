"""Shared pytest fixtures. Real-server fixtures live in tests/servers.py, helpers in tests/support/;
importing the fixtures here makes them visible to every test file."""

import pytest

from tests.emulator_fixtures import emulator
from tests.servers import influxdb, influxdb_auth, victoria  # noqa: F401


@pytest.fixture(scope="module")
def emu():
    """One emulated replica with fixed timing (profile fixed-50ms-10ms) for the whole module."""
    with emulator(1, "fixed-50ms-10ms") as reps:
        yield reps.urls[0]
