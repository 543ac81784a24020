"""Loopback TCP connections whose receive side the kernel stamps, for the stream-reader tests."""

from __future__ import annotations

import contextlib
import socket
import time


def until_stamped(cli: socket.socket, peer: socket.socket) -> None:
    """Wait until the kernel stamps what ``cli`` receives. When no socket of the machine had asked
    for stamps, Linux turns them on from a workqueue, a moment later: the first segments of such a
    socket come unstamped (the reader then uses its read time, as documented)."""
    from harness.loadgen.reactor import _ANC

    for _ in range(200):
        peer.send(b"x")
        _data, anc, _f, _a = cli.recvmsg(16, _ANC)
        if anc:
            return
        time.sleep(0.005)
    raise AssertionError("the kernel never stamped a received segment (SO_TIMESTAMPNS)")


@contextlib.contextmanager
def stamped_tcp_pair():
    """(client, peer): a loopback TCP connection; the client asks for kernel receive stamps."""
    from harness.loadgen.reactor import Reactor

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    try:
        Reactor.prepare(cli)
        until_stamped(cli, peer)
        yield cli, peer
    finally:
        for s in (srv, cli, peer):
            s.close()
