"""The demo's own network: a private network namespace (via libc's ``unshare``) and the bridge
its workers live on. Root only; everything made here is removed on the way out."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator

from vocloud.drivers.net.bridge import bridge_mac

SUBNETS = tuple(f"10.{n}.0." for n in range(253, 240, -1))  # never the tests' 10.254.0.0/24
CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def private_network() -> str | None:
    """Move this process (and so everything it starts) into a network namespace of its own;
    ``None`` on success, else why not.

    Why: the demo's bridge and slurmctld's port then cannot collide with a daemon already running
    on this machine (tap names differ anyway: deploy ids carry each store's tag), nor its
    guests reach any network but the demo's bridge; and when the demo's last process exits, the
    kernel deletes whatever network devices are left. Python 3.11 has no ``os.unshare``: libc's.
    """
    if threading.active_count() != 1:
        return "the process already runs threads (unshare applies to one thread only)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
    _ip("link", "set", "dev", "lo", "up")
    return None


def free_subnet() -> str | None:
    """The first ``10.x.0.`` prefix in :data:`SUBNETS` no address or route here uses."""
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route").stdout
    for subnet in SUBNETS:
        if subnet not in used:
            return subnet
    return None


def ports_of(bridge: str) -> list[str]:
    """Interfaces enslaved to ``bridge`` (the workers' taps)."""
    out = _ip("-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


@contextlib.contextmanager
def demo_bridge(subnet: str) -> Iterator[str]:
    """A bridge holding ``<subnet>1/24`` with no NAT and no forwarding, removed with its taps."""
    name = f"vcdemo{os.getpid() % 100000}"
    try:
        # a fixed address: an unset one follows the lowest port (vocloud.drivers.net.bridge)
        _ip("link", "add", "name", name, "address", bridge_mac(name), "type", "bridge")
        _ip("addr", "add", f"{subnet}1/24", "dev", name)
        _ip("link", "set", "dev", name, "up")
        yield name
    finally:
        for tap in ports_of(name):
            _ip("link", "del", "dev", tap, check=False)
        _ip("link", "del", "dev", name, check=False)
