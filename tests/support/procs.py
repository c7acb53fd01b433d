"""Process helpers shared by the batch-system test harnesses (Slurm, Grid Engine).

Daemons that fork away from the test (slurmd job steps, sge_execd shepherds) cannot be tracked by
pid; each harness tags everything it starts with an environment variable instead, and finds (and
kills) its processes by that tag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

from vocloud.devtools.localprocs import poll_until, processes_with_env
from vocloud.drivers.net.bridge import bridge_mac

__all__ = ["ip", "poll_until", "processes_with_env", "skip_or_fail", "test_bridge", "wait_until"]


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs qemu/Slurm, unless CI said those are required (then fail)."""
    import pytest

    if os.environ.get("VOCLOUD_REQUIRE_QEMU") or os.environ.get("VOCLOUD_REQUIRE_SLURM"):
        pytest.fail(reason)
    pytest.skip(reason)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@contextlib.contextmanager
def test_bridge(prefix: str, subnet: str) -> Iterator[str]:
    """A bridge holding ``<subnet>1/24``, made for one test module and deleted whatever happens;
    the test skips if the subnet is already in use on this machine (never a shared network)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_or_fail("the test creates a bridge and taps: needs root and iproute2")
    if subnet in ip("-4", "-o", "addr").stdout or subnet in ip("-4", "route").stdout:
        skip_or_fail(f"{subnet}0/24 is already in use on this machine")
    name = f"{prefix}{os.getpid() % 100000}"
    try:
        # a fixed address: an unset one follows the lowest port (vocloud.drivers.net.bridge)
        ip("link", "add", "name", name, "address", bridge_mac(name), "type", "bridge")
        ip("addr", "add", f"{subnet}1/24", "dev", name)
        ip("link", "set", "dev", name, "up")
        yield name
    finally:
        ip("link", "del", "dev", name, check=False)


def wait_until(check: Callable[[], Any], deadline: float, what: str,
               detail: Callable[[], str] = str) -> Any:
    """:func:`~vocloud.devtools.localprocs.poll_until` against an absolute ``time.monotonic()`` deadline:
    a scenario's steps share one time budget."""
    return poll_until(check, max(0.0, deadline - time.monotonic()), what, detail, interval=0.5)
