"""The qemu driver against real guests (TCG or KVM, whichever the probe chose).

One guest boots for the module and goes through the lifecycle in order (idempotent deploy,
re-attach from a new driver object, suspend/resume, save/restore, reboot, ACPI power-off), because
each boot costs seconds under TCG; failure cases boot their own guests.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.qemu import LOCAL, kill_qemu_under, make_driver, wait_domain
from vocloud.devtools.localprocs import poll_until, qemu_pids_under
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DiskSpec, DomainSpec, DomainState, VMMDriver
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.errors import DriverError
from vocloud.guest.build import DISK_ID, GuestImage

BOOT_TIMEOUT = 90.0
pytestmark = pytest.mark.slow


def guest_spec(image: GuestImage, vm_id: int, disks: tuple[DiskSpec, ...] = (),
               context: dict[str, str] | None = None, **fields: Any) -> DomainSpec:
    base = {"kernel": str(image.vmlinux), "initrd": str(image.initramfs), "kernel_cmd": image.cmdline}
    return DomainSpec(vm_id=vm_id, deploy_id=f"vc-{vm_id}", name=f"guest-{vm_id}", cpu=1.0, vcpu=1,
                      memory_mib=128, disks=disks, context=context or {}, **{**base, **fields})


def overlay(image: GuestImage, path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.base_disk),
                    "-F", "qcow2", str(path)], check=True)
    return path


def wait_state(drv: QemuDriver, deploy_id: str, want: DomainState,
               timeout: float = BOOT_TIMEOUT) -> None:
    """Poll until ``want``; fail fast with the detail if the guest lands somewhere terminal."""
    fail_on = () if want in (DomainState.FAILED, DomainState.MISSING) else (
        DomainState.FAILED, DomainState.MISSING)
    wait_domain(drv, LOCAL, deploy_id, want, timeout, fail_on)


def console(drv: QemuDriver, deploy_id: str) -> str:
    return (drv.run_dir(deploy_id) / "console.log").read_text(errors="replace")


def pid_of(drv: QemuDriver, deploy_id: str) -> int:
    return int((drv.run_dir(deploy_id) / "qemu.pid").read_text())


def wait_pid_gone(pid: int, timeout: float, what: str) -> None:
    def gone() -> bool:
        cmdline = Path(f"/proc/{pid}/cmdline")
        return not cmdline.exists() or not cmdline.read_bytes()

    poll_until(gone, timeout, what, interval=0.05)


# ---------------------------------------------------------------- one guest, whole lifecycle


class Booted:
    def __init__(self, drv: QemuDriver, spec: DomainSpec, first_state: DomainState) -> None:
        self.drv = drv
        self.spec = spec
        self.first_state = first_state


@pytest.fixture(scope="module")
def booted(qemu_session_root: Path, accel_probe: AccelProbe, guest_image: GuestImage) -> Iterator[Booted]:
    state = qemu_session_root / "lifecycle"
    state.mkdir()
    drv = make_driver(state, accel_probe, guest_image)
    disk = overlay(guest_image, state / "vc-1.qcow2")
    spec = guest_spec(guest_image, 1, disks=(DiskSpec("vda", str(disk)),),
                      context={"HOSTNAME": "lifecycle", "VALUE": "it's 42", "VO_NAME": "atlas"})
    first = drv.deploy(LOCAL, spec)
    yield Booted(drv, spec, first.state)
    kill_qemu_under(state)


def test_driver_satisfies_protocol(qemu_driver: QemuDriver) -> None:
    assert isinstance(qemu_driver, VMMDriver)


def test_deploy_is_booting_then_running_on_marker(booted: Booted) -> None:
    assert booted.first_state == DomainState.BOOTING
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    log = console(booted.drv, "vc-1")
    assert "VOCLOUD-READY lifecycle" in log
    assert f"VOCLOUD-DISK vda={DISK_ID}" in log, "overlay's backing file was not read"
    assert "VOCLOUD-CONTEXT VALUE=it's 42" in log
    assert "VOCLOUD-CONTEXT VO_NAME=atlas" in log


def test_second_deploy_starts_no_second_process(booted: Booted) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    run = booted.drv.run_dir("vc-1")
    before = qemu_pids_under(run)
    info = booted.drv.deploy(LOCAL, booted.spec)
    assert info.state == DomainState.RUNNING
    assert qemu_pids_under(run) == before and len(before) == 1


def test_restarted_driver_refinds_running_guest(booted: Booted, accel_probe: AccelProbe,
                                                guest_image: GuestImage) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    pid = pid_of(booted.drv, "vc-1")
    fresh = make_driver(booted.drv.state_dir, accel_probe, guest_image)
    host = fresh.monitor(LOCAL)
    assert host.domains["vc-1"].state == DomainState.RUNNING
    assert host.domains["vc-1"].memory_mib > 0
    assert host.attrs["HYPERVISOR"] == "qemu" and host.attrs["ACCEL"] in ("kvm", "tcg")
    assert host.total_cpu == os.cpu_count() and host.total_mem_mib > 0
    assert fresh.deploy(LOCAL, booted.spec).state == DomainState.RUNNING
    assert pid_of(fresh, "vc-1") == pid, "a restarted driver must re-attach, not restart"


def test_suspend_and_resume(booted: Booted) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    booted.drv.suspend(LOCAL, "vc-1")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.PAUSED
    booted.drv.resume(LOCAL, "vc-1")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.RUNNING


def test_save_then_restore_keeps_the_guest(booted: Booted) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    old_pid = pid_of(booted.drv, "vc-1")
    booted.drv.save(LOCAL, "vc-1")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.SAVED
    wait_pid_gone(old_pid, 5, "no qemu process after save")
    info = booted.drv.restore(LOCAL, booted.spec)
    assert info.state == DomainState.RUNNING, info.detail
    assert pid_of(booted.drv, "vc-1") != old_pid
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.RUNNING
    assert console(booted.drv, "vc-1").count("VOCLOUD-READY") == 1, "restore must not reboot"


def test_reboot_goes_through_booting_again(booted: Booted) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    booted.drv.reboot(LOCAL, "vc-1")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.BOOTING
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)


def test_graceful_shutdown_powers_off_through_acpi(booted: Booted) -> None:
    wait_state(booted.drv, "vc-1", DomainState.RUNNING)
    pid = pid_of(booted.drv, "vc-1")
    booted.drv.shutdown(LOCAL, "vc-1", hard=False)
    assert booted.drv.poll(LOCAL, "vc-1").state in (DomainState.SHUTTING_DOWN, DomainState.OFF)
    wait_pid_gone(pid, 30, "the guest to power off on the ACPI power button")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.OFF
    assert "VOCLOUD-POWEROFF" in console(booted.drv, "vc-1")
    booted.drv.cleanup(LOCAL, "vc-1")
    assert booted.drv.poll(LOCAL, "vc-1").state == DomainState.MISSING
    booted.drv.cleanup(LOCAL, "vc-1")  # idempotent


# ---------------------------------------------------------------- stops and failures


def test_hard_stop_kills_at_once(qemu_driver: QemuDriver, guest_image: GuestImage) -> None:
    spec = guest_spec(guest_image, 2)
    qemu_driver.deploy(LOCAL, spec)
    wait_state(qemu_driver, "vc-2", DomainState.RUNNING)
    pid = pid_of(qemu_driver, "vc-2")
    t0 = time.monotonic()
    qemu_driver.shutdown(LOCAL, "vc-2", hard=True)
    wait_pid_gone(pid, 1, "qemu gone at once after a hard stop")
    assert time.monotonic() - t0 < 5
    assert qemu_driver.poll(LOCAL, "vc-2").state == DomainState.OFF
    assert "VOCLOUD-POWEROFF" not in console(qemu_driver, "vc-2")
    qemu_driver.shutdown(LOCAL, "vc-2", hard=True)  # idempotent on a stopped guest
    qemu_driver.shutdown(LOCAL, "vc-404", hard=True)  # and on an unknown one


def test_garbage_kernel_is_failed_with_detail(qemu_driver: QemuDriver, guest_image: GuestImage,
                                              tmp_path: Path) -> None:
    junk = tmp_path / "vmlinux"
    junk.write_bytes(os.urandom(256 * 1024))
    spec = guest_spec(guest_image, 3, kernel=str(junk))
    info = qemu_driver.deploy(LOCAL, spec)
    assert info.state == DomainState.FAILED
    assert "qemu" in info.detail and "kernel" in info.detail.lower(), info.detail
    again = qemu_driver.poll(LOCAL, "vc-3")
    assert again.state == DomainState.FAILED and again.detail
    assert not qemu_pids_under(qemu_driver.run_dir("vc-3"))


def test_kernel_panic_is_failed_with_console_lines(qemu_driver: QemuDriver, guest_image: GuestImage,
                                                   tmp_path: Path) -> None:
    junk = tmp_path / "initrd"
    junk.write_bytes(b"not a cpio archive\n" * 1000)
    spec = guest_spec(guest_image, 4, initrd=str(junk))
    assert qemu_driver.deploy(LOCAL, spec).state == DomainState.BOOTING
    wait_state(qemu_driver, "vc-4", DomainState.FAILED)
    info = qemu_driver.poll(LOCAL, "vc-4")
    assert "panic" in info.detail.lower() and "console:" in info.detail, info.detail
    qemu_driver.cleanup(LOCAL, "vc-4")
    assert not qemu_pids_under(qemu_driver.state_dir / "vc-4")


def test_missing_disk_is_a_clear_driver_error(qemu_driver: QemuDriver, guest_image: GuestImage,
                                              tmp_path: Path) -> None:
    missing = tmp_path / "nope.qcow2"
    spec = guest_spec(guest_image, 5, disks=(DiskSpec("vda", str(missing)),))
    with pytest.raises(DriverError, match=r"disk vda: image file .*nope\.qcow2 does not exist"):
        qemu_driver.deploy(LOCAL, spec)
    assert qemu_driver.poll(LOCAL, "vc-5").state == DomainState.MISSING
    assert not qemu_pids_under(qemu_driver.state_dir)


def test_unknown_domain_is_missing(qemu_driver: QemuDriver) -> None:
    assert qemu_driver.poll(LOCAL, "vc-999").state == DomainState.MISSING
    with pytest.raises(DriverError, match="bad deploy id"):
        qemu_driver.poll(LOCAL, "../etc")


def test_corrupt_qcow2_is_failed_with_qemus_reason(qemu_driver: QemuDriver, guest_image: GuestImage,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + os.urandom(4096))
    info = qemu_driver.deploy(LOCAL, guest_spec(guest_image, 6, disks=(DiskSpec("vda", str(bad)),)))
    assert info.state == DomainState.FAILED
    assert "bad.qcow2" in info.detail, info.detail
    assert not qemu_pids_under(qemu_driver.state_dir)
