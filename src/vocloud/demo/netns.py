"""The demo's own network: a private network namespace (via libc's ``unshare``) and the bridge
its workers live on. Root only; everything made here is removed on the way out."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

from vocloud.devtools.netbridge import bridge, ip, subnet_in_use

SUBNETS = tuple(f"10.{n}.0." for n in range(253, 240, -1))  # never the tests' 10.254.0.0/24
CLONE_NEWNET = 0x40000000


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
    ip("link", "set", "dev", "lo", "up")
    return None


def free_subnet() -> str | None:
    """The first ``10.x.0.`` prefix in :data:`SUBNETS` no address or route here uses."""
    for subnet in SUBNETS:
        if not subnet_in_use(subnet):
            return subnet
    return None


def demo_bridge(subnet: str) -> contextlib.AbstractContextManager[str]:
    """A bridge holding ``<subnet>1/24`` with no NAT and no forwarding, removed with its taps."""
    return bridge(f"vcdemo{os.getpid() % 100000}", subnet)
