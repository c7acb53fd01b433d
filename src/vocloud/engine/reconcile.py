"""The daemon's level-triggered loops: scheduler, lifecycle and monitor.

Each ``*_once`` method reads desired state from the store and actual state from the drivers and
takes one step towards convergence. Nothing is remembered between passes except what is in the
store (``state``, ``state_changed_at``, ``step_attempts``), so killing the daemon at any instant
and running the loops again repairs everything: a VM in BOOT whose guest already runs is simply
found RUNNING (deploy is idempotent, keyed by the deploy id), never started twice.

Decisions are pure (``core.placement.place``, the lifecycle table); this module is the shell.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import select, update

from vocloud.core.lease_fit import lease_fit
from vocloud.core.placement import HostView, PendingVM, PolicyKind, SchedPolicy, SchedResult, place
from vocloud.drivers.base import (
    DomainInfo,
    DomainSpec,
    DomainState,
    HostRef,
    NetworkDriver,
    StorageDriver,
    VMMDriver,
)
from vocloud.drivers.registry import DriverCatalog, HostDrivers, builtin_catalog
from vocloud.engine.domain import build_spec
from vocloud.engine.secrets import SecretDir, SecretError, admitted_only
from vocloud.errors import DriverError, InvalidInput, NoCapacity, VocloudError
from vocloud.model.backoff import monitor_delay, probe_due
from vocloud.model.lifecycle import TRANSIENT, HostState, VMState
from vocloud.service import capacity
from vocloud.service.cloud import Cloud
from vocloud.service.vms import transition
from vocloud.store.schema import VM, Group, Host, User

log = logging.getLogger("vocloud.engine")
D = TypeVar("D")

S = VMState


@dataclass(frozen=True)
class LoopSettings:
    policy: SchedPolicy = field(default_factory=SchedPolicy)
    boot_timeout: float = 300.0
    shutdown_timeout: float = 60.0
    monitor_interval: float = 5.0
    host_backoff_max: float = 300.0  # the longest wait between probes of a failing host
    lease_drain_lead: float = 120.0  # a leased host drains this long before its lease ends

    def probe_delay(self, failures: int) -> float:
        return monitor_delay(failures, self.monitor_interval, self.host_backoff_max)


def policy_from(kind: str, rank: str = "", max_dispatch: int = 0, max_host_dispatch: int = 0) -> SchedPolicy:
    try:
        pk = PolicyKind(kind)
    except ValueError:
        raise VocloudError(f"unknown scheduling policy {kind!r}; one of: "
                           f"{', '.join(p.value for p in PolicyKind)}") from None
    try:
        return SchedPolicy(kind=pk, rank=rank or None, max_dispatch=max_dispatch,
                           max_host_dispatch=max_host_dispatch)
    except ValueError as exc:
        raise VocloudError(str(exc)) from None


def host_ref(h: Host) -> HostRef:
    return HostRef(id=h.id, name=h.name, vmm=h.vmm, transport=h.transport,
                   attrs={k: str(v) for k, v in (h.attrs or {}).items()})


#: The steps whose driver call may build a context seed, and the failure event of each: only
#: these resolve ``$SECRET[...]`` (engine/secrets.py), so no other step ever reads a secret.
_BUILDS_CONTEXT = {S.PROLOG: "prolog_fail", S.BOOT: "boot_fail", S.MIGRATE: "migrate_fail"}


def _loaded(host: Host, role: str, name: str | None, drivers: Mapping[str, D]) -> D | None:
    """The driver ``name`` of ``role`` for ``host`` (None: the step is off for this host)."""
    if name is None:
        return None
    try:
        return drivers[name]
    except KeyError:
        raise DriverError(f"host {host.name}: no '{name}' {role} driver is loaded") from None


class Reconciler:
    def __init__(self, cloud: Cloud, drivers: Mapping[str, VMMDriver], settings: LoopSettings,
                 clock: Callable[[], float] = time.time,
                 storage: Mapping[str, StorageDriver] | None = None,
                 networks: Mapping[str, NetworkDriver] | None = None,
                 secrets: SecretDir | None = None, catalog: DriverCatalog | None = None) -> None:
        self.cloud = cloud
        self.db = cloud.db
        self.drivers = drivers
        self.settings = settings
        self.clock = clock
        self.storage: Mapping[str, StorageDriver] = storage or {}
        self.networks: Mapping[str, NetworkDriver] = networks or {}
        self.catalog = catalog or builtin_catalog()
        self.secrets = secrets or SecretDir(Path("/nonexistent/vocloud-secrets"))

    def _host_drivers(self, host: Host) -> HostDrivers:
        """The host's storage and network drivers: its STORAGE/NETWORK attributes, else what its
        VMM declares (drivers/registry.py); ``none`` skips the step."""
        try:
            attrs = {k: str(v) for k, v in (host.attrs or {}).items()}
            return self.catalog.for_host(host.name, host.vmm, attrs)
        except InvalidInput as exc:
            raise DriverError(exc.message) from None

    def _storage_for(self, host: Host) -> StorageDriver | None:
        return _loaded(host, "storage", self._host_drivers(host).storage, self.storage)

    def _network_for(self, host: Host, spec: DomainSpec) -> NetworkDriver | None:
        if not spec.nics:
            return None
        return _loaded(host, "network", self._host_drivers(host).network, self.networks)

    def _staged(self, host: Host, ref: HostRef, spec: DomainSpec) -> DomainSpec:
        """Stage (idempotently) the VM's disks and NICs; returns the spec with local disk paths."""
        storage = self._storage_for(host)
        if storage is not None:
            spec = storage.stage(ref, spec)
        net = self._network_for(host, spec)
        if net is not None:
            net.attach(ref, spec)
        return spec

    def _unstage(self, host: Host, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None:
        net = self._network_for(host, spec)
        if net is not None:
            net.detach(ref, vm.deploy_id)
        storage = self._storage_for(host)
        if disks and storage is not None:
            storage.unstage(ref, vm.deploy_id)

    def _driver(self, vmm: str) -> VMMDriver:
        try:
            return self.drivers[vmm]
        except KeyError:
            raise DriverError(f"no '{vmm}' virtualization driver is loaded in this daemon") from None

    # ================================================================= scheduler
    def schedule_once(self) -> SchedResult:
        with self.db.read() as s:
            hosts = [
                HostView(id=h.id, name=h.name, total_cpu=h.total_cpu_m / 1000, total_mem=h.total_mem,
                         used_cpu=h.alloc_cpu_m / 1000, used_mem=h.alloc_mem, running_vms=h.running_vms,
                         attrs={**(h.attrs or {}), "HYPERVISOR": h.vmm, "CLUSTER": h.cluster})
                for h in s.scalars(select(Host).where(Host.state == HostState.MONITORED.value)
                                   .order_by(Host.id))
            ]
            # leased hosts take only VMs that end in time (core/lease_fit.py)
            fit = lease_fit(hosts, self.clock(), self.settings.lease_drain_lead)
            pending = [
                PendingVM(id=r.id, cpu=r.cpu_m / 1000, memory=r.memory, rank=r.rank,
                          requirements=fit(r.requirements, r.walltime))
                for r in s.execute(select(VM.id, VM.cpu_m, VM.memory, VM.requirements, VM.rank,
                                          VM.walltime)
                                   .where(VM.state == S.PENDING.value).order_by(VM.id))
            ]
            old_msgs: dict[int, str] = {
                vm_id: msg for vm_id, msg in
                s.execute(select(VM.id, VM.sched_message).where(VM.state == S.PENDING.value))
            }
        if not pending:
            return SchedResult([], {})
        result = place(pending, hosts, self.settings.policy)
        self._commit(result, old_msgs)
        return result

    def _commit(self, result: SchedResult, old_msgs: dict[int, str]) -> None:
        if not result.placements and all(old_msgs.get(v) == m for v, m in result.unplaced.items()):
            return
        with self.db.write() as s:
            for p in result.placements:
                vm = s.get(VM, p.vm_id, with_for_update=True)
                if vm is None or vm.state != S.PENDING.value:
                    continue  # held or terminated since the snapshot: skip
                try:
                    with s.begin_nested():
                        vm.host_id = p.host_id
                        vm.sched_message = ""
                        transition(s, vm, "scheduled", f"to host {p.host_id}")
                except NoCapacity as exc:
                    # Capacity went elsewhere between snapshot and commit (another front-end):
                    # the VM stays PENDING and is retried next cycle.
                    s.expire(vm)
                    vm.sched_message = f"lost a race for host {p.host_id}: {exc.message}"
            by_msg: dict[str, list[int]] = {}
            for vm_id, msg in result.unplaced.items():
                if old_msgs.get(vm_id) != msg:
                    by_msg.setdefault(msg, []).append(vm_id)
            for msg, ids in by_msg.items():  # one UPDATE per reason, not one per VM
                for i in range(0, len(ids), 500):
                    s.execute(update(VM).where(VM.id.in_(ids[i:i + 500]))
                              .where(VM.state == S.PENDING.value).values(sched_message=msg))

    # ================================================================= lifecycle
    def lifecycle_once(self) -> int:
        """One pass over every VM that owes a driver operation; returns how many were touched."""
        with self.db.read() as s:
            rows = s.execute(
                select(VM, Host, User.name, Group.name, User.is_admin)
                .join(Host, Host.id == VM.host_id, isouter=True)
                .join(User, User.id == VM.owner_id)
                .join(Group, Group.id == VM.group_id)
                .where(VM.state.in_([st.value for st in TRANSIENT]))
                .order_by(VM.id)
            ).all()
            targets = {h.id: h for h in s.scalars(select(Host).where(
                Host.id.in_([r[0].target_host_id for r in rows if r[0].target_host_id])))}
        for vm, host, user, group, is_admin in rows:
            try:
                self._step(vm, host, targets.get(vm.target_host_id or -1), user, group, bool(is_admin))
            except VocloudError as exc:
                log.warning("VM %s (%s): %s", vm.id, vm.state, exc.message)
            except Exception:  # a bug must not stop the loop for every other VM
                log.exception("VM %s (%s): unexpected error", vm.id, vm.state)
        return len(rows)

    def _step(self, vm: VM, host: Host | None, target: Host | None, user: str, group: str,
              site_vm: bool = False) -> None:
        st = VMState(vm.state)
        elapsed = self.clock() - vm.state_changed_at
        report = self.cloud.vms.report
        if host is None:
            report(vm.id, st, RECOVER_FAIL.get(st, "boot_fail"), "VM has no host")
            return
        drv = self._driver(host.vmm)
        ref = host_ref(host)
        if st in _BUILDS_CONTEXT:
            resolver = (self.secrets.read if site_vm
                        else admitted_only(self.secrets.read, vm.id, vm.site_secrets or ""))
            try:
                spec = build_spec(vm, user, group, resolver)
            except SecretError as exc:
                report(vm.id, st, _BUILDS_CONTEXT[st], exc.message)
                return
        else:
            spec = build_spec(vm, user, group)
        if st == S.PROLOG:
            try:
                self._staged(host, ref, spec)
            except DriverError as exc:
                report(vm.id, st, "prolog_fail", exc.message)
                return
            report(vm.id, st, "prolog_ok", f"staged on {host.name}")
        elif st == S.BOOT:
            try:
                spec = self._staged(host, ref, spec)
            except DriverError as exc:
                report(vm.id, st, "boot_fail", exc.message)
                return
            self._boot(vm, drv, ref, spec, elapsed)
        elif st == S.REBOOT:
            try:
                drv.reboot(ref, vm.deploy_id)
                report(vm.id, st, "reboot_ok", "reboot requested")
            except DriverError as exc:
                report(vm.id, st, "reboot_fail", exc.message)
        elif st == S.MIGRATE:
            if target is None:
                report(vm.id, st, "migrate_fail", "target host is gone")
                return
            try:
                if target.vmm != host.vmm:
                    raise DriverError(f"cannot migrate from a {host.vmm} host to a {target.vmm} host")
                self._driver(target.vmm).migrate(ref, host_ref(target), spec)
                report(vm.id, st, "migrate_ok", f"now on {target.name}")
            except DriverError as exc:
                report(vm.id, st, "migrate_fail", exc.message)
        elif st in (S.SAVE_SUSPEND, S.SAVE_STOP):
            try:
                drv.save(ref, vm.deploy_id)
                report(vm.id, st, "save_ok", "state saved")
            except DriverError as exc:
                report(vm.id, st, "save_fail", exc.message)
        elif st in (S.SHUTDOWN, S.SHUTDOWN_HARD, S.SHUTDOWN_POWEROFF, S.SHUTDOWN_UNDEPLOY):
            self._shutdown(vm, drv, ref, elapsed, hard=st == S.SHUTDOWN_HARD or vm.hard)
        elif st in (S.EPILOG, S.EPILOG_STOP, S.EPILOG_UNDEPLOY):
            try:
                if st == S.EPILOG:
                    drv.cleanup(ref, vm.deploy_id)
                self._unstage(host, ref, vm, spec, disks=st == S.EPILOG)
                report(vm.id, st, "epilog_ok", "cleaned up")
            except DriverError as exc:
                report(vm.id, st, "epilog_fail", exc.message)

    def _boot(self, vm: VM, drv: VMMDriver, ref: HostRef, spec: DomainSpec, elapsed: float) -> None:
        st = S.BOOT
        try:
            info = drv.poll(ref, vm.deploy_id)
            if info.state in (DomainState.MISSING, DomainState.OFF):
                info = drv.deploy(ref, spec)
            elif info.state in (DomainState.SAVED, DomainState.PAUSED):
                info = drv.restore(ref, spec)
        except DriverError as exc:
            self.cloud.vms.report(vm.id, st, "boot_fail", exc.message)
            return
        if info.state == DomainState.RUNNING:
            self.cloud.vms.report(vm.id, st, "boot_ok", f"running on {ref.name}")
        elif info.state == DomainState.FAILED:
            self._kill_quietly(drv, ref, vm.deploy_id)
            self.cloud.vms.report(vm.id, st, "boot_fail", info.detail or "guest failed to boot")
        elif elapsed > self.settings.boot_timeout:
            tail = self._console_tail(drv, ref, vm.deploy_id)  # read before the kill
            self._kill_quietly(drv, ref, vm.deploy_id)
            self.cloud.vms.report(vm.id, st, "boot_fail",
                                  f"guest did not come up within {self.settings.boot_timeout:g} s; "
                                  + (f"console ends:\n{tail}" if tail else "console: (empty)"))

    @staticmethod
    def _console_tail(drv: VMMDriver, ref: HostRef, deploy_id: str, lines: int = 8) -> str:
        """The last console lines, so a boot timeout says where the guest stopped (the run dir,
        and with it the whole console, goes when the VM is cleaned up)."""
        try:
            text = drv.console(ref, deploy_id, max_bytes=4096)
        except DriverError as exc:
            return f"(console unreadable: {exc.message})"
        return "\n".join(text.replace("\r", "").strip().splitlines()[-lines:])

    @staticmethod
    def _kill_quietly(drv: VMMDriver, ref: HostRef, deploy_id: str) -> None:
        try:
            drv.shutdown(ref, deploy_id, hard=True)
        except DriverError as exc:
            log.warning("could not stop %s on %s: %s", deploy_id, ref.name, exc.message)

    def _shutdown(self, vm: VM, drv: VMMDriver, ref: HostRef, elapsed: float, hard: bool) -> None:
        st = VMState(vm.state)
        try:
            info: DomainInfo = drv.poll(ref, vm.deploy_id)
            if info.state in (DomainState.MISSING, DomainState.OFF, DomainState.FAILED):
                self.cloud.vms.report(vm.id, st, "shutdown_ok", "guest is off")
                return
            escalate = not hard and elapsed > self.settings.shutdown_timeout
            if vm.step_attempts == 0 or escalate or hard:
                drv.shutdown(ref, vm.deploy_id, hard=hard or escalate)
                self.cloud.vms.bump_attempt(vm.id, st, "hard stop after shutdown timeout" if escalate else "")
        except DriverError as exc:
            if elapsed > 2 * self.settings.shutdown_timeout:
                self.cloud.vms.report(vm.id, st, "shutdown_fail", exc.message)
            else:
                log.warning("VM %s shutdown: %s (will retry)", vm.id, exc.message)

    def console(self, vm_id: int) -> str:
        """The guest's console log from its host's driver (caller has checked access)."""
        with self.db.read() as s:
            vm = s.get(VM, vm_id)
            host = s.get(Host, vm.host_id) if vm is not None and vm.host_id else None
        if vm is None or host is None:
            return ""
        return self._driver(host.vmm).console(host_ref(host), vm.deploy_id)

    # ================================================================= monitor
    def monitor_once(self, force: bool = False) -> None:
        """Probe every host that is due; a failing host only when its backoff has passed."""
        now = self.clock()
        with self.db.read() as s:
            hosts = list(s.scalars(
                select(Host).where(Host.state != HostState.OFFLINE.value).order_by(Host.id)))
        for h in hosts:
            due = probe_due(now, initializing=h.state == HostState.INIT, monitored_at=h.monitored_at,
                            failures=h.monitor_failures, next_at=h.monitor_next_at,
                            interval=self.settings.monitor_interval)
            if force or due:
                self._monitor_host(h)

    def _monitor_host(self, h: Host) -> None:
        ref = host_ref(h)
        try:
            info = self._driver(h.vmm).monitor(ref)
        except DriverError as exc:
            new = self.cloud.hosts.report_monitor(h.id, ok=False, error=exc.message, at=self.clock(),
                                                  retry_in=self.settings.probe_delay)
            failures = h.monitor_failures + 1
            log.warning("host %s: monitoring failed (%d in a row), next try in %.0f s: %s", h.name,
                        failures, self.settings.probe_delay(failures), exc.message)
            if new == HostState.ERROR or (new == HostState.DISABLED):
                self._vms_lost(h, exc.message)
            return
        self.cloud.hosts.report_monitor(
            h.id, ok=True, total_cpu_m=capacity.milli(info.total_cpu), total_mem=info.total_mem_mib,
            used_cpu_m=capacity.milli(info.used_cpu), used_mem=info.used_mem_mib, attrs=info.attrs,
            at=self.clock())
        if h.monitor_failures:
            log.warning("host %s answers again after %d failed probes", h.name, h.monitor_failures)
        self._vms_found(h, info.domains)
        self._sweep_leftovers(h, info.domains)

    def _sweep_leftovers(self, h: Host, domains: Mapping[str, DomainInfo]) -> None:
        """Remove what DONE VMs left on this host: a guest, its run directory, its staged disks.

        A VM normally leaves nothing (EPILOG cleans up), but ``recover --delete`` ends a VM
        without its host (it is for hosts that are gone, or stuck steps); when the host answers
        again, its monitor still lists the guest. Only VMs whose last host is this one are swept,
        so two hosts that share a state directory never clean up each other's guests, and only
        VMs of this store (by deploy id) - another installation's guests are never touched.
        """
        if not domains:
            return
        with self.db.read() as s:
            done = list(s.scalars(select(VM).where(VM.host_id == h.id)
                                  .where(VM.state == S.DONE.value)
                                  .where(VM.deploy_id.in_(sorted(domains)))))
        if not done:
            return
        drv, ref = self._driver(h.vmm), host_ref(h)
        for vm in done:
            try:
                drv.cleanup(ref, vm.deploy_id)
                self._unstage(h, ref, vm, build_spec(vm), disks=True)
            except DriverError as exc:
                log.warning("host %s: could not remove what DONE VM %s left (%s): %s", h.name, vm.id,
                            vm.deploy_id, exc.message)
                continue
            log.info("host %s: removed what DONE VM %s left behind (%s)", h.name, vm.id, vm.deploy_id)

    def _vms_lost(self, h: Host, why: str) -> None:
        with self.db.read() as s:
            ids = list(s.scalars(select(VM.id).where(VM.host_id == h.id).where(
                VM.state.in_([S.RUNNING.value, S.REBOOT.value, S.MIGRATE.value]))))
        for vm_id in ids:
            for st in (S.RUNNING, S.REBOOT, S.MIGRATE):
                if self.cloud.vms.report(vm_id, st, "lost", f"host {h.name}: {why}"):
                    break

    def _vms_found(self, h: Host, domains: Mapping[str, DomainInfo]) -> None:
        with self.db.read() as s:
            rows = s.execute(select(VM.id, VM.state, VM.deploy_id).where(VM.host_id == h.id).where(
                VM.state.in_([S.RUNNING.value, S.UNKNOWN.value]))).all()
        for vm_id, state, deploy_id in rows:
            info = domains.get(deploy_id)
            dstate = info.state if info else DomainState.MISSING
            st = VMState(state)
            if st == S.UNKNOWN and dstate == DomainState.RUNNING:
                self.cloud.vms.report(vm_id, st, "found_running", f"host {h.name} is back")
            elif dstate in (DomainState.MISSING, DomainState.OFF, DomainState.FAILED):
                # Re-check the single guest: the list may predate a boot finished just now.
                try:
                    again = self._driver(h.vmm).poll(host_ref(h), deploy_id).state
                except DriverError:
                    continue
                if again in (DomainState.MISSING, DomainState.OFF, DomainState.FAILED):
                    self.cloud.vms.report(vm_id, st, "found_off",
                                          f"guest {deploy_id} is no longer running on {h.name}")


RECOVER_FAIL = {
    S.PROLOG: "prolog_fail", S.BOOT: "boot_fail", S.EPILOG: "epilog_ok", S.EPILOG_STOP: "epilog_ok",
    S.EPILOG_UNDEPLOY: "epilog_ok", S.SHUTDOWN: "shutdown_ok", S.SHUTDOWN_HARD: "shutdown_ok",
    S.SHUTDOWN_POWEROFF: "shutdown_ok", S.SHUTDOWN_UNDEPLOY: "shutdown_ok",
}
