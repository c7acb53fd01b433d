"""Process helpers shared by the batch-system test harnesses (Slurm, Grid Engine).

Daemons that fork away from the test (slurmd job steps, sge_execd shepherds) cannot be tracked by
pid; each harness tags everything it starts with an environment variable instead, and finds (and
kills) its processes by that tag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

from vocloud.devtools.localprocs import poll_until, processes_with_env
from vocloud.devtools.netbridge import bridge, ip, ports_of, subnet_in_use

__all__ = ["ip", "poll_until", "ports_of", "processes_with_env", "skip_or_fail", "test_bridge", "wait_until"]


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs qemu/Slurm, unless CI said those are required (then fail)."""
    import pytest

    if os.environ.get("VOCLOUD_REQUIRE_QEMU") or os.environ.get("VOCLOUD_REQUIRE_SLURM"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def test_bridge(prefix: str, subnet: str) -> Iterator[str]:
    """A bridge holding ``<subnet>1/24``, made for one test module and deleted (with any tap left
    on it) whatever happens; the test skips if the subnet is already in use on this machine
    (never a shared network)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_or_fail("the test creates a bridge and taps: needs root and iproute2")
    if subnet_in_use(subnet):
        skip_or_fail(f"{subnet}0/24 is already in use on this machine")
    with bridge(f"{prefix}{os.getpid() % 100000}", subnet) as name:
        yield name


def wait_until(check: Callable[[], Any], deadline: float, what: str,
               detail: Callable[[], str] = str) -> Any:
    """:func:`~vocloud.devtools.localprocs.poll_until` against an absolute ``time.monotonic()`` deadline:
    a scenario's steps share one time budget."""
    return poll_until(check, max(0.0, deadline - time.monotonic()), what, detail, interval=0.5)
