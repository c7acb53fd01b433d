"""The MIGRATE step of the lifecycle loop: what moves with a VM besides its memory.

A migration is four moves, and the VM ends on exactly one host with all of them or stays where
it was with none: its disks (staged on the target; the same files under shared storage), its
NICs (taps, bridge ports and anti-spoofing rules on the target: the network driver's ``attach``),
its guest (the VMM driver: live, pausing it only for the last dirty pages) and its run dir (the
driver moves it with the guest). On success the source's taps and rules go, and its disks when
the target got copies; on failure the target's go, and the reason is the VM's message.
"""

from __future__ import annotations

import logging
from typing import Protocol

from vocloud.drivers.base import DomainSpec, HostRef, StorageDriver, VMMDriver
from vocloud.errors import DriverError
from vocloud.model.lifecycle import VMState
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Host

log = logging.getLogger("vocloud.engine")


class Reconciler(Protocol):
    """What the step uses of ``engine.reconcile.Reconciler`` (which calls it; a Protocol so that
    this module does not import it back)."""

    cloud: Cloud

    def _driver(self, vmm: str) -> VMMDriver: ...

    def _storage_for(self, host: Host) -> StorageDriver | None: ...

    def _staged(self, host: Host, ref: HostRef, spec: DomainSpec) -> DomainSpec: ...

    def _unstage(self, host: Host, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None: ...


def migrate_step(rec: Reconciler, vm: VM, host: Host, ref: HostRef, target: Host | None,
                 target_ref: HostRef | None, spec: DomainSpec) -> None:
    """Carry out ``vm``'s MIGRATE from ``host`` to ``target`` and report the outcome."""
    report = rec.cloud.vms.report
    st = VMState.MIGRATE
    if target is None or target_ref is None:
        report(vm.id, st, "migrate_fail", "target host is gone")
        return
    try:
        if target.vmm != host.vmm:
            raise DriverError(f"cannot migrate from a {host.vmm} host to a {target.vmm} host")
        drv: VMMDriver = rec._driver(target.vmm)
        moved_disks = False  # until known: never unstage disks the source may share
        try:
            moved_disks = _disks_move(rec, host, ref, target, target_ref, spec)
            staged = rec._staged(target, target_ref, spec)
            info = drv.migrate(ref, target_ref, staged)
        except DriverError:
            _undo_target(rec, target, target_ref, vm, spec, moved_disks)
            raise
    except DriverError as exc:
        log.warning("VM %s: migration from %s to %s failed: %s", vm.id, host.name,
                    target.name, exc.message)
        report(vm.id, st, "migrate_fail", exc.message)
        return
    try:  # the guest runs on the target: what is left on the source is garbage now
        rec._unstage(host, ref, vm, spec, disks=moved_disks)
    except DriverError as exc:
        log.warning("VM %s: migrated to %s, but cleaning up %s failed: %s", vm.id, target.name,
                    host.name, exc.message)
    detail = info.detail or "migrated"
    log.info("VM %s: %s", vm.id, detail)
    report(vm.id, st, "migrate_ok", f"now on {target.name}: {detail}")


def _disks_move(rec: Reconciler, host: Host, ref: HostRef, target: Host, target_ref: HostRef,
                spec: DomainSpec) -> bool:
    """True when the target stages its disks in another place than the source (no shared
    datastore): then the disks travel with the guest and the source's copies go afterwards."""
    if not spec.disks:
        return False
    storage, target_storage = rec._storage_for(host), rec._storage_for(target)
    if storage is None or target_storage is None:
        return False
    here = storage.stage(ref, spec)  # idempotent: the paths the guest runs on
    there = {d.target: d.source for d in target_storage.stage(target_ref, spec).disks}
    return any(there.get(d.target) != d.source for d in here.disks)


def _undo_target(rec: Reconciler, target: Host, target_ref: HostRef, vm: VM, spec: DomainSpec,
                 disks: bool) -> None:
    try:
        rec._unstage(target, target_ref, vm, spec, disks=disks)
    except DriverError as exc:
        log.warning("VM %s: cleaning up the failed migration's target %s failed: %s", vm.id,
                    target.name, exc.message)
