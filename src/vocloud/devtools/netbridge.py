"""Throwaway Linux bridges on this machine, for the demo and the tests: ``ip`` itself, whether a
``10.x.0.`` prefix is in use here, and a bridge that is made for one run and removed afterwards
with every port (tap) left on it. Root only."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from vocloud.drivers.net.bridge import bridge_mac


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS`` (iproute2), its output captured as text."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def subnet_in_use(prefix: str) -> bool:
    """Whether an address or route here already starts with ``prefix`` (``"10.253.0."``)."""
    return prefix in ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout


def ports_of(bridge: str) -> list[str]:
    """Interfaces enslaved to ``bridge`` (the guests' taps)."""
    out = ip("-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


@contextlib.contextmanager
def bridge(name: str, prefix: str) -> Iterator[str]:
    """A bridge ``name`` holding ``<prefix>1/24`` (no NAT, no forwarding); on the way out, whatever
    happened, its ports and then the bridge are deleted."""
    try:
        # a fixed address: an unset one follows the lowest port (vocloud.drivers.net.bridge)
        ip("link", "add", "name", name, "address", bridge_mac(name), "type", "bridge")
        ip("addr", "add", f"{prefix}1/24", "dev", name)
        ip("link", "set", "dev", name, "up")
        yield name
    finally:
        for tap in ports_of(name):
            ip("link", "del", "dev", tap, check=False)
        ip("link", "del", "dev", name, check=False)
