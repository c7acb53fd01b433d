"""Fixtures for tests that boot real qemu guests.

The guest image is built once (``vocloud.guest.build``, cached in ``$VOCLOUD_CACHE`` between runs)
and the KVM/TCG probe runs once per machine (its answer is cached next to the image), so a test
session pays only for the guests it boots. Every qemu process a test starts lives under a temp
state dir; the ``qemu_reaper`` fixture kills whatever is left there, even after a failed test.
Set ``VOCLOUD_REQUIRE_QEMU=1`` (CI) to turn "qemu missing" skips into failures.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.qemu import kill_qemu_under, make_driver, skip_or_fail
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.guest.build import GuestImage, cache_root, ensure_image
from vocloud.guest.export import ensure_export
from vocloud.guest.worker import WorkerImage, ensure_worker_image


@pytest.fixture(scope="session")
def qemu_available() -> None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not found: apt-get install qemu-system-x86 qemu-utils")


@pytest.fixture(scope="session")
def guest_image(qemu_available: None) -> GuestImage:
    """The tiny Debian guest (vmlinux, busybox initramfs, base.qcow2), built once and cached."""
    try:
        return ensure_image()
    except (RuntimeError, OSError) as exc:
        skip_or_fail(f"cannot build the guest image from Debian packages: {exc}")
        raise


@pytest.fixture(scope="session")
def worker_image(guest_image: GuestImage) -> WorkerImage:
    """The worker guest (the test guest's kernel; vocloud.guest.worker) on the cached Slurm
    export tree (vocloud.guest.export: the daemons and their libraries, never the host's /)."""
    try:
        return ensure_worker_image().with_export(ensure_export("slurm").root)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        skip_or_fail(f"cannot build the worker guest: {exc}")
        raise


@pytest.fixture(scope="session")
def accel_probe(guest_image: GuestImage) -> AccelProbe:
    """One probe per machine, its result kept beside the image cache across sessions."""
    return AccelProbe(cache_root() / "accel")


@pytest.fixture(scope="session")
def qemu_session_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("qemu")
    yield root
    leaked = kill_qemu_under(root)
    assert not leaked, f"qemu processes left running at session end (killed): {leaked}"


@pytest.fixture
def qemu_reaper(qemu_session_root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A per-test state dir; any qemu still running under it afterwards is killed."""
    state = qemu_session_root / request.node.name.replace("[", "_").replace("]", "_")
    state.mkdir()
    yield state
    kill_qemu_under(state)


@pytest.fixture
def qemu_driver(qemu_reaper: Path, accel_probe: AccelProbe, guest_image: GuestImage) -> QemuDriver:
    return make_driver(qemu_reaper, accel_probe, guest_image)
