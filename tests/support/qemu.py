"""Real qemu guests in tests: the local host ref, a driver sharing one KVM probe, and the reapers
that leave no guest, daemon or tap behind whatever a test did."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from vocloud.devtools.localprocs import kill_all, poll_until, qemu_pids_under
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DomainState, HostRef
from vocloud.drivers.net.guard import TABLE, TapGuard, tap_elements
from vocloud.drivers.transport import LocalTransport
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.guest.build import GuestImage

LOCAL = HostRef(id=0, name="local", vmm="qemu", transport="local")


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs qemu, unless CI said qemu is required (then fail)."""
    if os.environ.get("VOCLOUD_REQUIRE_QEMU"):
        pytest.fail(reason)
    pytest.skip(reason)


def kill_qemu_under(path: Path) -> list[int]:
    """SIGKILL the guests whose command line names ``path``; the pids found."""
    return kill_all(lambda: qemu_pids_under(path))


def wait_domain(drv: QemuDriver, host: HostRef, deploy_id: str, want: DomainState, timeout: float,
                fail_on: tuple[DomainState, ...] = (DomainState.FAILED, DomainState.MISSING),
                interval: float = 0.1) -> None:
    """Poll the driver until the guest is ``want``; fail at once if it lands in a state of
    ``fail_on`` instead (with the driver's detail and the console's end)."""
    stops = tuple(s for s in fail_on if s != want)

    def there() -> bool:
        info = drv.poll(host, deploy_id)
        if info.state in stops:
            pytest.fail(f"{deploy_id} became {info.state} while waiting for {want}: {info.detail}\n"
                        f"{drv.console(host, deploy_id)[-3000:]}")
        return info.state == want

    poll_until(there, timeout, f"{deploy_id} to be {want}",
               lambda: f"{drv.poll(host, deploy_id)}\n{drv.console(host, deploy_id)[-3000:]}",
               interval=interval)


def reap_daemon(proc: subprocess.Popen[bytes] | None, data_dir: Path) -> None:
    """After a test's daemon, whatever happened: kill it, its guests and the taps of its guests
    (a tap is the daemon's when its VM's run dir is under ``data_dir/qemu``)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)
    kill_qemu_under(data_dir)
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    reaped: set[str] = set()
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if re.fullmatch(r"vc[a-z0-9]{0,3}-\d+-\d+", name) and \
                (data_dir / "qemu" / name.rsplit("-", 1)[0]).exists():
            subprocess.run(["ip", "link", "del", "dev", name], capture_output=True)
            reaped.add(name.rsplit("-", 1)[0])
    if reaped:  # their anti-spoofing chains too (the guard removes filters of vanished taps)
        local = LocalTransport()
        present = {str(i["ifname"]) for i in json.loads(subprocess.run(
            ["ip", "-json", "link", "show"], capture_output=True, text=True).stdout or "[]")}
        for deploy_id in sorted(reaped):
            TapGuard(lambda _h: local).unguard(HostRef(0, "local", "qemu", "local"), deploy_id,
                                               lambda: present)
    drop_empty_guard_table()


def drop_empty_guard_table() -> None:
    """The daemon leaves its (then empty) anti-spoofing table when the last guest goes (another
    installation on the host may be adding to it); a test removes it once no tap is in it."""
    listing = subprocess.run(["nft", "-j", "list", "map", "bridge", TABLE, "taps"], capture_output=True,
                             text=True)
    if listing.returncode == 0 and not tap_elements(listing.stdout):
        subprocess.run(["nft", "delete", "table", "bridge", TABLE], capture_output=True)
    # the no-routing filter (drivers/net/isolate.py) likewise, once no bridge is in it
    isolation = subprocess.run(["nft", "-j", "list", "set", "inet", TABLE, "bridges"],
                               capture_output=True, text=True)
    if isolation.returncode == 0 and not any(
            i.get("set", {}).get("elem") for i in json.loads(isolation.stdout)["nftables"]):
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


#: a daemon whose guests are real qemu under TCG, with the timeouts a loaded CI machine needs
QEMU_DAEMON_ENV = {"VOCLOUD_ACCEL": "tcg", "VOCLOUD_BOOT_TIMEOUT": "240", "VOCLOUD_SHUTDOWN_TIMEOUT": "60",
                   "VOCLOUD_MONITOR_INTERVAL": "2"}


@contextmanager
def qemu_test_daemon(data_dir: Path, **env: str) -> Iterator[Daemon]:
    """A real daemon on SQLite in ``data_dir`` for qemu guests; reaped (guests, taps) after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    d = Daemon(data_dir, f"sqlite:///{data_dir / 'vocloud.db'}", free_port(), {**QEMU_DAEMON_ENV, **env})
    d.start()
    try:
        yield d
    finally:
        reap_daemon(d.proc, data_dir)


def make_driver(state: Path, probe: AccelProbe, image: GuestImage) -> QemuDriver:
    """A driver on ``state`` sharing the session's accel probe (no second probe boot)."""
    return QemuDriver(state, accel_probe=probe,
                      probe_guest=lambda: (image.vmlinux, image.initramfs, image.cmdline))
