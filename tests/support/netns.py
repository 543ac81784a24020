"""Separate network hosts on one machine: Linux network namespaces joined by veth pairs.

Each host is a namespace with its own loopback and one interface (``eth0``) on a bridge that
lives in a further namespace, all on ``198.18.0.0/24`` (198.18.0.0/15 is reserved for network
benchmarks, RFC 2544). Nothing is added to the machine's own namespace: its routes, firewall and
sysctls stay as they were. Needs root. Everything made is deleted on exit, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from dataclasses import dataclass

SUBNET = "198.18.0"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "-n", ns, *args] if ns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Host:
    netns: str
    addr: str

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *cmd]


@contextlib.contextmanager
def hosts(*names: str):
    """``{name: Host}``: one namespace per name, addresses ``198.18.0.10`` onwards."""
    if os.geteuid() != 0:
        raise RuntimeError("network namespaces need root (ip netns add)")
    tag = secrets.token_hex(2)
    switch = f"slm{tag}sw"
    made: list[str] = []
    links: list[str] = []
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("link", "add", "br0", "type", "bridge", ns=switch)
        _ip("link", "set", "br0", "up", ns=switch)
        out = {}
        for i, name in enumerate(names):
            ns = f"slm{tag}{name}"[:32]
            _ip("netns", "add", ns)
            made.append(ns)
            end, peer = f"v{tag}{i}h", f"v{tag}{i}s"
            _ip("link", "add", end, "type", "veth", "peer", "name", peer)
            links.append(end)
            _ip("link", "set", end, "netns", ns)
            _ip("link", "set", peer, "netns", switch)
            links.pop()
            _ip("link", "set", peer, "master", "br0", ns=switch)
            _ip("link", "set", peer, "up", ns=switch)
            _ip("link", "set", end, "name", "eth0", ns=ns)
            addr = f"{SUBNET}.{10 + i}"
            _ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            out[name] = Host(ns, addr)
        yield out
    finally:
        for link in links:   # a veth made but not yet moved: still in this namespace
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for ns in reversed(made):   # deleting a namespace deletes the veth ends inside it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
