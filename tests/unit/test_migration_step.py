"""The MIGRATE step's bookkeeping (engine/migration.py) with recording drivers: which host's NICs
and disks go after a move, and that a datastore both hosts share is never unstaged."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vocloud.drivers.base import (
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostRef,
    StorageDriver,
    VMMDriver,
)
from vocloud.engine.migration import migrate_step
from vocloud.errors import DriverError
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Host


class Storage:
    """Stages each disk under the host's datastore; records unstage calls."""

    def __init__(self, datastores: dict[str, str], log: list[str]) -> None:
        self.datastores, self.log = datastores, log

    def stage(self, host: HostRef, spec: DomainSpec) -> DomainSpec:
        root = self.datastores[host.name]
        return replace(spec, disks=tuple(replace(d, source=f"{root}/vms/{spec.deploy_id}/{d.target}")
                                         for d in spec.disks))

    def unstage(self, host: HostRef, deploy_id: str) -> None:
        self.log.append(f"unstage disks {host.name}")


class Rec:
    def __init__(self, datastores: dict[str, str], fail: str = "") -> None:
        self.log: list[str] = []
        self.reports: list[tuple[str, str]] = []
        self.storage = Storage(datastores, self.log)
        self.fail = fail
        self.cloud = cast(Cloud, SimpleNamespace(vms=SimpleNamespace(report=self._report)))

    def _report(self, vm_id: int, st: Any, action: str, message: str) -> bool:
        self.reports.append((action, message))
        return True

    def _driver(self, vmm: str) -> VMMDriver:
        rec = self

        class Drv:
            def migrate(self, src: HostRef, dst: HostRef, spec: DomainSpec) -> DomainInfo:
                rec.log.append(f"migrate {src.name}->{dst.name} {spec.disks[0].source}")
                if rec.fail:
                    raise DriverError(rec.fail)
                return DomainInfo(spec.deploy_id, DomainState.RUNNING, "moved")

        return cast(VMMDriver, Drv())

    def _storage_for(self, host: Host) -> StorageDriver | None:
        return cast(StorageDriver, self.storage)

    def _staged(self, host: Host, ref: HostRef, spec: DomainSpec) -> DomainSpec:
        self.log.append(f"attach {host.name}")
        return self.storage.stage(ref, spec)

    def _unstage(self, host: Host, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None:
        self.log.append(f"detach {host.name}" + (" +disks" if disks else ""))


SPEC = DomainSpec(vm_id=7, deploy_id="vc-7", name="x", cpu=1.0, vcpu=1, memory_mib=64,
                  disks=(DiskSpec("vda", "img:1", "qcow2"),))


def _run(rec: Rec) -> None:
    a, b = Host(id=1, name="a", vmm="qemu"), Host(id=2, name="b", vmm="qemu")
    migrate_step(rec, VM(id=7, deploy_id="vc-7"), a, HostRef(1, "a", "qemu"), b, HostRef(2, "b", "qemu"),
                 SPEC)


def test_shared_datastore_keeps_the_disks_and_moves_the_nics() -> None:
    rec = Rec({"a": "/ds", "b": "/ds"})
    _run(rec)
    assert rec.log == ["attach b", "migrate a->b /ds/vms/vc-7/vda", "detach a"]
    assert rec.reports == [("migrate_ok", "now on b: moved")]


def test_separate_datastores_move_the_disks_and_unstage_the_source() -> None:
    rec = Rec({"a": "/ds-a", "b": "/ds-b"})
    _run(rec)
    assert rec.log == ["attach b", "migrate a->b /ds-b/vms/vc-7/vda", "detach a +disks"]


@pytest.mark.parametrize(("stores", "undo"), [({"a": "/ds", "b": "/ds"}, "detach b"),
                                               ({"a": "/ds-a", "b": "/ds-b"}, "detach b +disks")])
def test_a_failure_undoes_the_target_only(stores: dict[str, str], undo: str) -> None:
    rec = Rec(stores, fail="target unreachable")
    _run(rec)
    assert rec.log[-1] == undo and not any(e.startswith("detach a") for e in rec.log)
    assert rec.reports == [("migrate_fail", "target unreachable")]
