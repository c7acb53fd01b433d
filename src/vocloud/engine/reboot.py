"""The REBOOT step of the lifecycle loop: RUNNING again only when the guest is back.

The reset itself returns at once; what the user waits for is the guest, so the VM stays in
REBOOT until its driver reports it RUNNING again (for qemu: the ready marker printed after the
reset) and fails back to RUNNING with the reason when it does not come back in the boot timeout.
The first pass sends the reset and remembers so (``step_attempts``); later passes only poll.
"""

from __future__ import annotations

from collections.abc import Callable

from vocloud.drivers.base import DomainState, HostRef, VMMDriver
from vocloud.errors import DriverError
from vocloud.model.lifecycle import VMState
from vocloud.store.schema import VM

GONE = (DomainState.MISSING, DomainState.OFF, DomainState.FAILED)


def reboot_step(vm: VM, drv: VMMDriver, ref: HostRef, elapsed: float, boot_timeout: float,
                report: Callable[[int, VMState, str, str], object],
                bump: Callable[[int, VMState, str], None]) -> None:
    st = VMState.REBOOT
    try:
        if vm.step_attempts == 0:
            drv.reboot(ref, vm.deploy_id)
            bump(vm.id, st, "reboot requested; waiting for the guest")
            return
        info = drv.poll(ref, vm.deploy_id)
    except DriverError as exc:
        report(vm.id, st, "reboot_fail", exc.message)
        return
    if info.state == DomainState.RUNNING:
        report(vm.id, st, "reboot_ok", "the guest is back")
    elif info.state in GONE:
        report(vm.id, st, "reboot_fail", info.detail or f"the guest is {info.state} after the reset")
    elif elapsed > boot_timeout:
        report(vm.id, st, "reboot_fail", f"the guest did not come back within {boot_timeout:g} s "
                                         f"of the reset (driver: {info.state})")
