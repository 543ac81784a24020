"""Shared pytest fixtures; the helpers behind them live in tests/support/. Importing the
real-server fixtures here makes them visible to every test file."""

import pytest

from tests.support.emulator import emulator
from tests.support.servers import influxdb, influxdb_auth, victoria  # noqa: F401
from tests.support.sockets import stamped_tcp_pair


@pytest.fixture(scope="module")
def emu():
    """One emulated replica with fixed timing (profile fixed-50ms-10ms) for the whole module."""
    with emulator(1, "fixed-50ms-10ms") as reps:
        yield reps.urls[0]


@pytest.fixture(params=["c-pass", "python"])
def reader(request, monkeypatch):
    """A test that takes this runs with both stream readers: the C pass (fastread.c, built with
    the machine's compiler; CI installs one, so it must load) and the pure-Python fallback."""
    from harness.loadgen import native

    monkeypatch.setenv("SLM_NATIVE", "1" if request.param == "c-pass" else "0")
    if request.param == "c-pass":
        assert native.load() is not None, "the C reader did not build: is a C compiler (cc) installed?"
    return request.param


@pytest.fixture
def tcp_pair():
    """(client, peer): a loopback TCP connection whose client side the kernel stamps."""
    with stamped_tcp_pair() as pair:
        yield pair
