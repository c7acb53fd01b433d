"""The REBOOT step (engine/reboot.py): the reset is sent once, and the VM is RUNNING again only
when the driver reports the guest back; a guest that does not come back fails with the reason."""

from __future__ import annotations

from typing import cast

from vocloud.drivers.base import DomainInfo, DomainState, HostRef, VMMDriver
from vocloud.engine.reboot import reboot_step
from vocloud.model.lifecycle import VMState
from vocloud.store.schema import VM


class Drv:
    def __init__(self, state: DomainState) -> None:
        self.state, self.resets = state, 0

    def reboot(self, host: HostRef, deploy_id: str) -> None:
        self.resets += 1

    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo:
        return DomainInfo(deploy_id, self.state, "console: panic" if self.state == DomainState.FAILED else "")


def _step(drv: Drv, attempts: int, elapsed: float = 1.0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    vm = VM(id=3, deploy_id="vc-3", step_attempts=attempts)
    reboot_step(vm, cast(VMMDriver, drv), HostRef(1, "h"), elapsed, 60.0,
                lambda i, st, a, m: out.append((a, m)),
                lambda i, st, m: out.append(("bump", m)))
    return out


def test_reset_once_then_running_only_when_the_guest_is_back() -> None:
    drv = Drv(DomainState.BOOTING)
    assert _step(drv, 0) == [("bump", "reboot requested; waiting for the guest")] and drv.resets == 1
    assert _step(drv, 1) == [] and drv.resets == 1  # still booting: no event, no second reset
    drv.state = DomainState.RUNNING
    assert _step(drv, 1) == [("reboot_ok", "the guest is back")]


def test_a_guest_that_fails_or_never_comes_back_is_reported() -> None:
    assert _step(Drv(DomainState.FAILED), 1) == [("reboot_fail", "console: panic")]
    [(action, message)] = _step(Drv(DomainState.BOOTING), 1, elapsed=61.0)
    assert action == "reboot_fail" and "did not come back within 60 s" in message
    assert VMState.REBOOT.value == "REBOOT"
