"""The MIGRATE step when the VM moves cold: shut down, disks copied, booted on the target.

For hosts that cannot migrate live (a driver declaring ``cold-migrate`` only) or when asked
(``vm migrate --cold``: the service marks such a MIGRATE ``hard``). Three phases, one per pass
of the lifecycle loop, the phase kept in ``step_attempts`` so a restarted daemon goes on where
it was and the loop never waits on a guest:

0. the ACPI power button on the source;
1. once the guest is off (or the shutdown timeout passed: a hard stop), the target is staged (its
   own verified base, an empty overlay, its NICs and their rules), the VM's own disk files are
   copied over it (size and sha256 checked, ``drivers/storage/move.py``) and the guest boots there;
2. RUNNING on the target once its driver says RUNNING (qemu: the guest's ready marker), and the
   source's run dir, taps, rules and disk copies go.

Any failure after the guest stopped boots it again on the source (the disks there were never
touched) and removes whatever was made on the target; the reason is the VM's message and
``vm migrate`` exits 2. The target being unreachable is such a failure (unlike a step owed to an
unreachable source, which waits): the guest must not stay off for a host that may never answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from vocloud.drivers.base import DomainSpec, DomainState, HostRef, StorageDriver, VMMDriver
from vocloud.errors import DriverError, HostUnreachable
from vocloud.model.lifecycle import VMState
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Host

log = logging.getLogger("vocloud.engine")
T = TypeVar("T")
ST = VMState.MIGRATE
UP = (DomainState.RUNNING, DomainState.BOOTING, DomainState.PAUSED, DomainState.SHUTTING_DOWN)
SHUTDOWN_SENT, BOOTING_THERE = 1, 2  # step_attempts after phase 0, after phase 1


class Reconciler(Protocol):
    cloud: Cloud

    def _driver(self, vmm: str) -> VMMDriver: ...

    def _storage_for(self, host: Host) -> StorageDriver | None: ...

    def _staged(self, host: Host, ref: HostRef, spec: DomainSpec) -> DomainSpec: ...

    def _unstage(self, host: Host, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None: ...


class _Move:
    def __init__(self, rec: Reconciler, vm: VM, host: Host, ref: HostRef, target: Host,
                 target_ref: HostRef, spec: DomainSpec) -> None:
        self.rec, self.vm, self.host, self.ref = rec, vm, host, ref
        self.target, self.target_ref, self.spec = target, target_ref, spec
        self.drv = rec._driver(host.vmm)
        self.deploy_id = vm.deploy_id
        self.unreachable = False  # the target stopped answering during this pass

    def there(self, what: str, call: Callable[[], T]) -> T:
        """A target operation: its host not answering fails the move (see the module doc)."""
        try:
            return call()
        except HostUnreachable as exc:
            self.unreachable = True
            raise DriverError(f"{what}: target {self.target.name} does not answer: {exc.message}") from None

    def shared(self) -> bool:
        """Both hosts stage the VM's disks in the same place (shared datastore): nothing to copy,
        and nothing of the target's to remove."""
        mine, theirs = self.rec._storage_for(self.host), self.rec._storage_for(self.target)
        here, there = getattr(mine, "vm_dir", None), getattr(theirs, "vm_dir", None)
        if here is None or there is None:
            return mine is None and theirs is None
        return bool(here(self.ref, self.deploy_id) == there(self.target_ref, self.deploy_id))

    def bump(self, message: str) -> None:
        self.rec.cloud.vms.bump_attempt(self.vm.id, ST, message)

    def report(self, event: str, message: str) -> None:
        self.rec.cloud.vms.report(self.vm.id, ST, event, message)

    # ------------------------------------------------------------------ phases
    def power_off(self) -> None:
        info = self.drv.poll(self.ref, self.deploy_id)
        if info.state in UP:
            self.drv.shutdown(self.ref, self.deploy_id, hard=False)
        self.bump(f"cold migration to {self.target.name}: ACPI shutdown requested on {self.host.name}")

    def move_and_boot(self, elapsed: float, shutdown_timeout: float, away: str = "") -> None:
        """``away``: the target is known not to answer; it fails the move once the guest is off
        (the power button cannot be taken back: the guest boots again here)."""
        if not away:
            there = self.there("polling the target",
                               lambda: self.drv.poll(self.target_ref, self.deploy_id))
            if there.state in UP:  # a daemon restarted after booting it: phase 2 goes on
                self.bump(f"cold migration: booting on {self.target.name}")
                return
        info = self.drv.poll(self.ref, self.deploy_id)
        if info.state in UP:
            if elapsed <= shutdown_timeout:
                return  # the guest is still shutting down
            log.info("VM %s: no ACPI shutdown within %g s, stopping it hard", self.vm.id, shutdown_timeout)
            self.drv.shutdown(self.ref, self.deploy_id, hard=True)
            if self.drv.poll(self.ref, self.deploy_id).state in UP:
                raise DriverError(f"the guest on {self.host.name} did not stop")
        if away:
            raise DriverError(away)
        staged = self.there("staging", lambda: self.rec._staged(self.target, self.target_ref, self.spec))
        copied = 0
        if not self.shared():
            storage = self.rec._storage_for(self.host)
            mover = getattr(storage, "move_disks", None)
            if storage is not None and staged.disks:
                if mover is None:
                    raise DriverError(f"the {storage.name} storage driver cannot move disks")
                mine = storage.stage(self.ref, self.spec)  # idempotent: the files the guest used
                copied = self.there("moving the disks",
                                    lambda: int(mover(self.ref, mine, self.target_ref, staged)))
        booted = self.there("booting", lambda: self.drv.deploy(self.target_ref, staged))
        if booted.state in (DomainState.FAILED, DomainState.MISSING, DomainState.OFF):
            raise DriverError(f"the guest did not start on {self.target.name}: "
                              f"{booted.detail or booted.state}")
        self.bump(f"cold migration: booting on {self.target.name} ({copied / 2**20:.1f} MiB of "
                  "disk copied)")

    def wait_up(self, elapsed: float, limit: float) -> None:
        info = self.there("polling the target", lambda: self.drv.poll(self.target_ref, self.deploy_id))
        if info.state == DomainState.RUNNING:
            self.finish()
        elif info.state not in UP:
            raise DriverError(f"the guest on {self.target.name} is {info.state}: {info.detail}")
        elif elapsed > limit:
            raise DriverError(f"the guest did not come up on {self.target.name} within {limit:g} s "
                              f"(driver: {info.state})")

    def finish(self) -> None:
        shared = self.shared()
        try:  # the guest runs on the target: what is left on the source is garbage now
            self.drv.cleanup(self.ref, self.deploy_id)
            self.rec._unstage(self.host, self.ref, self.vm, self.spec, disks=not shared)
        except DriverError as exc:
            log.warning("VM %s: migrated to %s, but cleaning up %s failed: %s", self.vm.id,
                        self.target.name, self.host.name, exc.message)
        self.report("migrate_ok", f"now on {self.target.name}: migrated cold from {self.host.name} "
                                  "(shut down, disks moved, booted)")

    def roll_back(self, why: str, target_answers: bool = True) -> None:
        """Nothing of the VM on the target; the guest boots again on the source. A target that
        does not answer keeps what it got (logged, for the administrator to remove)."""
        shared = self.shared()
        if not target_answers:
            log.warning("VM %s: %s does not answer; what the failed cold migration made there "
                        "stays until it is cleaned up", self.vm.id, self.target.name)
        undos: list[tuple[str, Callable[[], None]]] = [
            ("guest", lambda: self.drv.cleanup(self.target_ref, self.deploy_id)),
            ("disks and NICs", lambda: self.rec._unstage(self.target, self.target_ref, self.vm,
                                                         self.spec, disks=not shared))]
        for what, undo in undos if target_answers else []:
            try:
                undo()
            except DriverError as exc:
                log.warning("VM %s: removing the failed cold migration's %s from %s failed: %s",
                            self.vm.id, what, self.target.name, exc.message)
        msg = f"cold migration to {self.target.name} failed: {why}"
        if self.drv.poll(self.ref, self.deploy_id).state not in UP:
            try:
                info = self.drv.deploy(self.ref, self.rec._staged(self.host, self.ref, self.spec))
            except HostUnreachable:
                raise
            except DriverError as exc:
                msg += f"; booting it again on {self.host.name} failed too: {exc.message}"
            else:
                if info.state == DomainState.FAILED:
                    msg += f"; booting it again on {self.host.name} failed too: {info.detail}"
                else:
                    msg += f"; booted again on {self.host.name}"
        log.warning("VM %s: %s", self.vm.id, msg)
        self.report("migrate_fail", msg)


def cold_migrate_step(rec: Reconciler, vm: VM, host: Host, ref: HostRef, target: Host | None,
                      target_ref: HostRef | None, spec: DomainSpec, elapsed: float,
                      shutdown_timeout: float, boot_timeout: float, target_away: str = "") -> None:
    """One pass of ``vm``'s cold MIGRATE from ``host`` to ``target`` (module doc)."""
    if target is None or target_ref is None:
        rec.cloud.vms.report(vm.id, ST, "migrate_fail", "target host is gone")
        return
    move = _Move(rec, vm, host, ref, target, target_ref, spec)
    phase = vm.step_attempts
    try:
        if target.vmm != host.vmm:
            raise DriverError(f"cannot migrate from a {host.vmm} host to a {target.vmm} host")
        away = f"target {target.name} does not answer: {target_away}" if target_away else ""
        if phase == 0:
            if away:
                raise DriverError(away)
            move.power_off()
        elif phase == SHUTDOWN_SENT:
            move.move_and_boot(elapsed, shutdown_timeout, away)
        elif away:
            raise DriverError(away)
        else:
            move.wait_up(elapsed, shutdown_timeout + boot_timeout)
    except HostUnreachable:
        raise  # the source does not answer: owed, the loop waits for it
    except DriverError as exc:
        if phase == 0 and move.drv.poll(ref, vm.deploy_id).state in UP:
            # nothing was done on the target yet, and the guest runs on
            rec.cloud.vms.report(vm.id, ST, "migrate_fail",
                                 f"cold migration to {target.name} failed: {exc.message}")
            return
        # a target only known to be away (its last probe failed) is still asked to drop what it
        # got: a guest left booting there would share the VM's leases with the one booted here
        move.roll_back(exc.message, target_answers=not move.unreachable)
