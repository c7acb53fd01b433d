"""Pushing a base image over SSH to a host that cannot see the image repository.

The namespace host's sshd runs in its own mount namespace; each test mounts an empty tmpfs over
the repository directory *in that namespace only*, so over SSH the image path does not exist while
the front-end (this process) still reads it. The host's datastore is a directory of its own
(``DATASTORE_DIR``). What must hold: the first VM on the host pushes the base (bytes counted),
later VMs (and other daemons) do not, a push corrupted in transit is refused by the host's
sha256 check with a clear error and leaves nothing in the cache, and a push cut short leaves only
its ``.part``, which the next push completes by sending just the rest.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import functools
import logging
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.netns import NetnsHost, NetnsLab, lab_ssh, netns_hosts, netns_lab  # noqa: F401
from tests.support.storage import make_base, vm
from vocloud.drivers.base import CommandResult, DiskSpec, HostRef
from vocloud.drivers.storage import Qcow2OverlayDriver
from vocloud.drivers.transport.feed import Source
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.errors import DriverError

Hosts = Callable[[int], list[NetnsHost]]
MIB = 1024 * 1024


class Far:
    """One namespace host whose sshd cannot see ``src``; its datastore is ``ds``."""

    def __init__(self, host: NetnsHost, src: Path, sha: str, ds: Path) -> None:
        self.host, self.src, self.sha, self.ds = host, src, sha, ds

    def ref(self, **attrs: str) -> HostRef:
        return self.host.ref(None, "qemu", DATASTORE_DIR=str(self.ds), **attrs)

    @property
    def cached(self) -> Path:
        return self.ds / "cache" / f"{self.sha}.qcow2"

    def cache_files(self) -> list[str]:
        cache = self.ds / "cache"
        return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) \
            if cache.exists() else []


@pytest.fixture
def far(netns_hosts: Hosts, lab_ssh: SshTransport, tmp_path: Path) -> Iterator[Far]:
    host = netns_hosts(1)[0]
    assert host.sshd is not None and host.sshd.poll() is None
    repo = tmp_path / "repo"
    repo.mkdir()
    src = repo / "base.qcow2"
    sha = make_base(src, mib=24)
    ns = ["nsenter", f"--target={host.sshd.pid}", "--mount"]
    subprocess.run([*ns, "mount", "-t", "tmpfs", "-o", "size=1m", "vocloud-test-hide", str(repo)],
                   check=True)
    try:
        seen = lab_ssh.run(host.ref(), ["test", "-e", str(src)])
        assert seen.returncode == 1, "the host must not see the repository for this test"
        assert src.exists()
        yield Far(host, src, sha, tmp_path / "far")
    finally:
        subprocess.run([*ns, "umount", str(repo)], check=False)


def driver_for(lab_ssh: SshTransport, far: Far, transport: object | None = None,
               root: str = "/nonexistent-front-end-datastore") -> Qcow2OverlayDriver:
    return Qcow2OverlayDriver(root, runner_for=lambda h: functools.partial(lab_ssh.run, h),
                              transports=lambda h: transport or lab_ssh,
                              checksum_for=lambda d: far.sha)


def remote(lab_ssh: SshTransport, far: Far, *argv: str) -> CommandResult:
    return lab_ssh.run(far.ref(), list(argv))


def test_first_vm_pushes_the_base_later_vms_do_not(far: Far, lab_ssh: SshTransport,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vocloud.drivers.storage.cache")
    driver = driver_for(lab_ssh, far)
    disk = DiskSpec("vda", str(far.src))
    # declared shared, the host really cannot see it: the old behaviour, a clear error, no push
    with pytest.raises(DriverError, match=r"base\.qcow2 does not exist"):
        driver.stage(far.ref(IMAGE_PATH_SHARED="YES"), vm("vc-1", disk))
    assert driver.cache.stats.pushes == 0

    staged = driver.stage(far.ref(), vm("vc-1", disk))  # AUTO (the default): detected, pushed
    size = far.src.stat().st_size
    stats = driver.cache.stats
    assert (stats.pushes, stats.pushed_bytes, stats.misses) == (1, size, 1)
    assert remote(lab_ssh, far, "sha256sum", str(far.cached)).stdout.split()[0].decode() == far.sha
    assert far.cache_files() == [f"{far.sha}.qcow2", f"{far.sha}.qcow2.ok"]
    overlay = staged.disks[0].source
    assert overlay == str(far.ds / "vms" / "vc-1" / "vda.qcow2")
    doc = remote(lab_ssh, far, "qemu-img", "info", "--output=json", "-U", overlay).stdout.decode()
    assert f'"full-backing-filename": "{far.cached}"' in doc
    assert remote(lab_ssh, far, "qemu-img", "check", "-q", overlay).returncode == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("does not see" in m and "pushing it" in m for m in messages)
    assert any("pushing" in m and "of 24 MiB" in m for m in messages)  # progress
    assert any("sha256 verified" in m for m in messages)

    driver.stage(far.ref(), vm("vc-2", disk))
    assert (stats.pushes, stats.pushed_bytes, stats.hits) == (1, size, 1)
    # another daemon (its own cache object), the host declared IMAGE_PATH_SHARED=NO: still a hit
    other = driver_for(lab_ssh, far)
    other.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-3", disk))
    assert (other.cache.stats.pushes, other.cache.stats.hits) == (0, 1)
    for i in (1, 2, 3):
        driver.unstage(far.ref(), f"vc-{i}")
    assert not (far.ds / "vms" / "vc-1").exists()
    assert far.cached.exists()


def test_concurrent_vms_on_one_host_wait_for_a_single_push(far: Far, lab_ssh: SshTransport) -> None:
    drivers = [driver_for(lab_ssh, far) for _ in range(2)]  # two daemons: only the host lock helps
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def stage(i: int) -> None:
        try:
            barrier.wait()
            spec = vm(f"vc-{i}", DiskSpec("vda", str(far.src)))
            drivers[i % 2].stage(far.ref(IMAGE_PATH_SHARED="NO"), spec)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(d.cache.stats.pushes for d in drivers) == 1
    assert sum(d.cache.stats.pushed_bytes for d in drivers) == far.src.stat().st_size
    assert sum(d.cache.stats.hits for d in drivers) == 3
    assert far.cache_files() == [f"{far.sha}.qcow2", f"{far.sha}.qcow2.ok"]


class Meddling:
    """The lab's SSH transport, but the stream is altered on its way: one bit flipped in the
    first MiB, or the connection "drops" after ``cut`` bytes."""

    def __init__(self, inner: SshTransport, cut: int | None = None) -> None:
        self.inner, self.cut = inner, cut

    def feed(self, host: HostRef, argv: list[str], source: Source, ready: bytes = b"SEND",
             timeout: float | None = None) -> tuple[CommandResult, int]:
        def altered(arg: bytes) -> Iterator[bytes]:
            total = 0
            for i, chunk in enumerate(source(arg)):
                if self.cut is None and i == 0:
                    chunk = chunk[:4096] + bytes([chunk[4096] ^ 0x10]) + chunk[4097:]
                if self.cut is not None and total + len(chunk) > self.cut:
                    yield chunk[: self.cut - total]
                    return
                total += len(chunk)
                yield chunk

        return self.inner.feed(host, argv, altered, ready=ready, timeout=timeout)


def test_a_push_corrupted_in_transit_is_refused_and_leaves_nothing(far: Far,
                                                                    lab_ssh: SshTransport) -> None:
    driver = driver_for(lab_ssh, far, Meddling(lab_ssh))
    with pytest.raises(DriverError, match=r"pushed copy of image .*base\.qcow2 arrived with sha256 "
                                          r"[0-9a-f]{64}, expected [0-9a-f]{64} .*corrupted in transit"):
        driver.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-1", DiskSpec("vda", str(far.src))))
    assert far.cache_files() == []  # no .part, no final file, no stamp
    assert not (far.ds / "vms" / "vc-1").exists()
    assert driver.cache.stats.pushes == 0
    # an honest transport afterwards pushes it fine
    good = driver_for(lab_ssh, far)
    good.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-1", DiskSpec("vda", str(far.src))))
    assert good.cache.stats.pushes == 1


def test_a_push_cut_short_is_resumed_by_the_next_stage(far: Far, lab_ssh: SshTransport) -> None:
    size = far.src.stat().st_size
    driver = driver_for(lab_ssh, far, Meddling(lab_ssh, cut=5 * MIB + 3))
    with pytest.raises(DriverError, match=rf"cut short: the host has {5 * MIB + 3} of {size} bytes; "
                                          r"kept, the next push sends the rest"):
        driver.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-1", DiskSpec("vda", str(far.src))))
    assert far.cache_files() == [f"{far.sha}.qcow2.part"]  # kept, never at the final name
    assert not (far.ds / "vms" / "vc-1").exists()
    # the connection is back (or the daemon restarted): only the rest crosses the network
    good = driver_for(lab_ssh, far)
    good.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-1", DiskSpec("vda", str(far.src))))
    assert (good.cache.stats.pushes, good.cache.stats.resumed) == (1, 1)
    assert good.cache.stats.pushed_bytes == size - (5 * MIB + 3)
    assert far.cache_files() == [f"{far.sha}.qcow2", f"{far.sha}.qcow2.ok"]


def test_an_image_changed_in_the_repository_is_refused(far: Far, lab_ssh: SshTransport) -> None:
    driver = Qcow2OverlayDriver("/nonexistent", runner_for=lambda h: functools.partial(lab_ssh.run, h),
                                transports=lambda h: lab_ssh, checksum_for=lambda d: "0" * 64)
    with pytest.raises(DriverError, match=f"sha256 is {far.sha}, the repository recorded 0{{64}}"):
        driver.stage(far.ref(IMAGE_PATH_SHARED="NO"), vm("vc-1", DiskSpec("vda", str(far.src))))
    assert far.cache_files() == []
