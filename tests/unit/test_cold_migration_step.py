"""The cold MIGRATE step's phases and roll-backs (engine/cold_migration.py) with recording drivers:
which host gets what, in which order, and what the VM is told."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import cast

from vocloud.drivers.base import (
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostRef,
    StorageDriver,
    VMMDriver,
)
from vocloud.engine.cold_migration import cold_migrate_step
from vocloud.errors import HostUnreachable
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Host

SPEC = DomainSpec(vm_id=7, deploy_id="vc-7", name="x", cpu=1.0, vcpu=1, memory_mib=64,
                  disks=(DiskSpec("vda", "img:1", "qcow2"),))
A, B = Host(id=1, name="a", vmm="qemu"), Host(id=2, name="b", vmm="qemu")


class Storage:
    name = "qcow2"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def vm_dir(self, host: HostRef, deploy_id: str) -> str:
        return f"/ds-{host.name}/vms/{deploy_id}"

    def stage(self, host: HostRef, spec: DomainSpec) -> DomainSpec:
        return replace(spec, disks=tuple(replace(d, source=f"{self.vm_dir(host, spec.deploy_id)}/{d.target}")
                                         for d in spec.disks))

    def unstage(self, host: HostRef, deploy_id: str) -> None: ...

    def move_disks(self, src: HostRef, s: DomainSpec, dst: HostRef, d: DomainSpec) -> int:
        self.log.append(f"move {s.disks[0].source}->{d.disks[0].source}")
        return 3 << 20


class Rec:
    def __init__(self, guests: dict[str, DomainState], boot_there: DomainState = DomainState.BOOTING,
                 unreachable: str = "") -> None:
        self.log: list[str] = []
        self.reports: list[tuple[str, str]] = []
        self.guests, self.boot_there, self.unreachable = guests, boot_there, unreachable
        self.storage = Storage(self.log)
        self.cloud = cast(Cloud, SimpleNamespace(vms=SimpleNamespace(
            report=lambda vm_id, st, ev, msg: self.reports.append((ev, msg)),
            bump_attempt=lambda vm_id, st, msg: self.log.append(f"bump: {msg}"))))

    def _reach(self, host: HostRef) -> None:
        if host.name == self.unreachable:
            raise HostUnreachable(f"host {host.name}: connection refused")

    def _driver(self, vmm: str) -> VMMDriver:
        rec = self

        class Drv:
            def poll(self, host: HostRef, deploy_id: str) -> DomainInfo:
                rec._reach(host)
                return DomainInfo(deploy_id, rec.guests.get(host.name, DomainState.MISSING))

            def shutdown(self, host: HostRef, deploy_id: str, hard: bool) -> None:
                rec.log.append(f"shutdown {host.name}" + (" hard" if hard else ""))
                if hard:
                    rec.guests[host.name] = DomainState.OFF

            def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
                rec._reach(host)
                rec.log.append(f"deploy {host.name} {spec.disks[0].source}")
                state = rec.boot_there if host.name == "b" else DomainState.BOOTING
                rec.guests[host.name] = state
                why = "kernel panic" if state == DomainState.FAILED else ""
                return DomainInfo(spec.deploy_id, state, why)

            def cleanup(self, host: HostRef, deploy_id: str) -> None:
                rec._reach(host)
                rec.log.append(f"cleanup {host.name}")
                rec.guests.pop(host.name, None)

        return cast(VMMDriver, Drv())

    def _storage_for(self, host: Host) -> StorageDriver | None:
        return cast(StorageDriver, self.storage)

    def _staged(self, host: Host, ref: HostRef, spec: DomainSpec) -> DomainSpec:
        self._reach(ref)
        self.log.append(f"attach {host.name}")
        return self.storage.stage(ref, spec)

    def _unstage(self, host: Host, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None:
        self._reach(ref)
        self.log.append(f"detach {host.name}" + (" +disks" if disks else ""))


def _pass(rec: Rec, phase: int, elapsed: float = 1.0, target_away: str = "") -> None:
    vm = VM(id=7, deploy_id="vc-7", step_attempts=phase)
    cold_migrate_step(rec, vm, A, HostRef(1, "a", "qemu"), B, HostRef(2, "b", "qemu"), SPEC,
                      elapsed, 60.0, 240.0, target_away)


def test_three_passes_move_it() -> None:
    rec = Rec({"a": DomainState.RUNNING})
    _pass(rec, 0)
    assert rec.log == ["shutdown a", "bump: cold migration to b: ACPI shutdown requested on a"]
    _pass(rec, 1, elapsed=5.0)  # still running, within the shutdown timeout: wait
    assert rec.log[-1].startswith("bump: cold migration to b: ACPI")
    rec.guests["a"] = DomainState.OFF
    _pass(rec, 1, elapsed=6.0)
    assert rec.log[-4:] == ["attach b", "move /ds-a/vms/vc-7/vda->/ds-b/vms/vc-7/vda",
                            "deploy b /ds-b/vms/vc-7/vda",
                            "bump: cold migration: booting on b (3.0 MiB of disk copied)"]
    _pass(rec, 2, elapsed=8.0)
    assert not rec.reports  # BOOTING: not RUNNING before the ready marker
    rec.guests["b"] = DomainState.RUNNING
    _pass(rec, 2, elapsed=9.0)
    assert rec.log[-2:] == ["cleanup a", "detach a +disks"]
    assert rec.reports == [("migrate_ok", "now on b: migrated cold from a (shut down, disks moved, booted)")]


def test_shutdown_timeout_stops_it_hard() -> None:
    rec = Rec({"a": DomainState.RUNNING})
    _pass(rec, 1, elapsed=61.0)
    assert rec.log[:2] == ["shutdown a hard", "attach b"]


def test_a_guest_failing_on_the_target_boots_again_on_the_source() -> None:
    rec = Rec({"a": DomainState.OFF}, boot_there=DomainState.FAILED)
    _pass(rec, 1)
    assert rec.log[-4:] == ["cleanup b", "detach b +disks", "attach a", "deploy a /ds-a/vms/vc-7/vda"]
    [(event, msg)] = rec.reports
    assert event == "migrate_fail" and "did not start on b: kernel panic" in msg
    assert msg.endswith("booted again on a")


def test_a_target_that_stops_answering_fails_the_move_and_is_not_touched() -> None:
    rec = Rec({"a": DomainState.OFF}, unreachable="b")
    _pass(rec, 1)
    assert not any(e.endswith(" b") or "detach b" in e for e in rec.log), rec.log
    assert rec.log[-1] == "deploy a /ds-a/vms/vc-7/vda"
    [(event, msg)] = rec.reports
    assert event == "migrate_fail" and "target b does not answer" in msg


def test_a_target_known_away_fails_before_the_guest_is_touched() -> None:
    rec = Rec({"a": DomainState.RUNNING})
    _pass(rec, 0, target_away="its probes fail")
    assert rec.log == [] and rec.reports == [
        ("migrate_fail", "cold migration to b failed: target b does not answer: its probes fail")]


def test_a_target_known_away_while_booting_is_still_asked_to_drop_its_guest() -> None:
    rec = Rec({"a": DomainState.OFF, "b": DomainState.BOOTING})
    _pass(rec, 2, target_away="its probes fail")
    assert rec.log[:2] == ["cleanup b", "detach b +disks"]
    assert rec.log[-1] == "deploy a /ds-a/vms/vc-7/vda" and rec.reports[0][0] == "migrate_fail"


def test_a_target_away_while_the_guest_shuts_down_waits_for_the_guest_then_boots_it_here() -> None:
    rec = Rec({"a": DomainState.SHUTTING_DOWN})
    _pass(rec, 1, elapsed=3.0, target_away="its probes fail")
    assert rec.log == [] and rec.reports == []  # the button was pressed: wait for the guest
    rec.guests["a"] = DomainState.OFF
    _pass(rec, 1, elapsed=4.0, target_away="its probes fail")
    assert rec.log[-1] == "deploy a /ds-a/vms/vc-7/vda"
    assert rec.reports[0][0] == "migrate_fail" and "b does not answer" in rec.reports[0][1]


def test_the_target_too_slow_to_come_up_is_given_up() -> None:
    rec = Rec({"a": DomainState.OFF, "b": DomainState.BOOTING})
    _pass(rec, 2, elapsed=301.0)
    assert "cleanup b" in rec.log and rec.log[-1] == "deploy a /ds-a/vms/vc-7/vda"
    assert "did not come up on b within 300 s" in rec.reports[0][1]
