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
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Table, select, update

from vocloud.core.lease_fit import lease_fit
from vocloud.core.placement import HostView, PendingVM, PolicyKind, SchedPolicy, SchedResult
from vocloud.drivers.base import (
    DomainInfo,
    DomainSpec,
    DomainState,
    HostInfo,
    HostRef,
    NetworkDriver,
    StorageDriver,
    VMMDriver,
    boot_many,
)
from vocloud.drivers.registry import DriverCatalog, HostDrivers, builtin_catalog
from vocloud.engine import probes
from vocloud.engine.burst import note_bursts, place_bursting
from vocloud.engine.cloud_leaks import LeakSweeper
from vocloud.engine.cold_migration import cold_migrate_step
from vocloud.engine.domain import build_spec
from vocloud.engine.faults import FaultLog, vm_keys_alive, waiting_host
from vocloud.engine.host_row import HostLike, MonHost
from vocloud.engine.migration import migrate_step
from vocloud.engine.reboot import reboot_step
from vocloud.engine.secrets import SecretDir, SecretError, admitted_only
from vocloud.errors import DriverError, HostUnreachable, InvalidInput, VocloudError
from vocloud.model.backoff import monitor_delay, probe_due
from vocloud.model.lifecycle import OWED_TERMINATE, TRANSIENT, HostState, VMState
from vocloud.service import capacity, vm_batch
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import Probe
from vocloud.store.schema import VM, Group, Host, User
from vocloud.store.sets import among

log = logging.getLogger("vocloud.engine")
D = TypeVar("D")

S = VMState
#: VMs per write transaction in the scheduler's and the lifecycle's set-based commits: big enough
#: to amortise a commit, small enough that API writers never queue long behind a loop
COMMIT_CHUNK = 1000


@dataclass(frozen=True)
class LoopSettings:
    policy: SchedPolicy = field(default_factory=SchedPolicy)
    boot_timeout: float = 300.0
    shutdown_timeout: float = 60.0
    monitor_interval: float = 5.0
    host_backoff_max: float = 300.0  # the longest wait between probes of a failing host
    lease_drain_lead: float = 120.0  # a leased host drains this long before its lease ends
    monitor_workers: int = 16  # remote hosts probed at once in a monitor pass (engine/probes.py)

    def probe_delay(self, failures: int) -> float:
        return monitor_delay(failures, self.monitor_interval, self.host_backoff_max)


@dataclass
class _HostBoots:
    drv: VMMDriver
    ref: HostRef
    name: str
    vms: list[tuple[VM, DomainSpec, float]] = field(default_factory=list)  # vm, spec, elapsed


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


def host_ref(h: HostLike) -> HostRef:
    return HostRef(id=h.id, name=h.name, vmm=h.vmm, transport=h.transport,
                   attrs={k: str(v) for k, v in (h.attrs or {}).items()})


#: The steps whose driver call may build a context seed, and the failure event of each: only
#: these resolve ``$SECRET[...]`` (engine/secrets.py), so no other step ever reads a secret.
_BUILDS_CONTEXT = {S.PROLOG: "prolog_fail", S.BOOT: "boot_fail", S.MIGRATE: "migrate_fail"}


def _loaded(host: HostLike, role: str, name: str | None, drivers: Mapping[str, D]) -> D | None:
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
        self.leaks = LeakSweeper(self.db, clock)  # cloud instances tagged ours, unknown to the store
        self._reports: list[vm_batch.Report] | None = None  # queued during a lifecycle pass
        self._bumps: list[vm_batch.Report] | None = None  # driver calls made, queued likewise
        #: BOOT steps queued during a lifecycle pass, per host: started host by host in one
        #: driver call each (``_flush_boots``)
        self._boots: dict[int, _HostBoots] | None = None
        self._pass = threading.local()  # per-pass memos of the thread running a lifecycle pass
        self.faults = FaultLog(log, clock)  # each fault told once, repeats summarised (faults.py)

    def _ref(self, host: Host) -> HostRef:
        """``host_ref(host)``, made once per host in a lifecycle pass (from the row it read)."""
        refs: dict[int, HostRef] | None = getattr(self._pass, "refs", None)
        if refs is None:
            return host_ref(host)
        ref = refs.get(host.id)
        if ref is None:
            ref = refs[host.id] = host_ref(host)
        return ref

    def _host_drivers(self, host: HostLike) -> HostDrivers:
        """The host's storage and network drivers: its STORAGE/NETWORK attributes, else what its
        VMM declares (drivers/registry.py); ``none`` skips the step. Worked out once per host in
        a lifecycle pass (from the host row that pass read), not once per VM step."""
        memo: dict[int, HostDrivers] | None = getattr(self._pass, "drivers", None)
        if memo is not None and host.id in memo:
            return memo[host.id]
        got = self._host_drivers_of(host)
        if memo is not None:
            memo[host.id] = got
        return got

    def _host_drivers_of(self, host: HostLike) -> HostDrivers:
        try:
            attrs = {k: str(v) for k, v in (host.attrs or {}).items()}
            return self.catalog.for_host(host.name, host.vmm, attrs)
        except InvalidInput as exc:
            raise DriverError(exc.message) from None

    def _storage_for(self, host: HostLike) -> StorageDriver | None:
        return _loaded(host, "storage", self._host_drivers(host).storage, self.storage)

    def _network_for(self, host: HostLike, spec: DomainSpec) -> NetworkDriver | None:
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

    def _unstage(self, host: HostLike, ref: HostRef, vm: VM, spec: DomainSpec, disks: bool) -> None:
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
            rows = s.execute(select(VM.id, VM.cpu_m, VM.memory, VM.requirements, VM.rank,
                                    VM.walltime)
                             .where(VM.state == S.PENDING.value).order_by(VM.id)).all()
            if not rows:  # an idle pass reads no hosts (it ran 5 times a second on 2,000)
                return SchedResult([], {})
            hosts = [
                HostView(id=h.id, name=h.name, total_cpu=h.total_cpu_m / 1000, total_mem=h.total_mem,
                         used_cpu=h.alloc_cpu_m / 1000, used_mem=h.alloc_mem, running_vms=h.running_vms,
                         attrs={**(h.attrs or {}), "HYPERVISOR": h.vmm, "CLUSTER": h.cluster})
                for h in s.execute(select(Host.id, Host.name, Host.total_cpu_m, Host.total_mem,
                                          Host.alloc_cpu_m, Host.alloc_mem, Host.running_vms,
                                          Host.attrs, Host.vmm, Host.cluster)
                                   .where(Host.state == HostState.MONITORED.value)
                                   .order_by(Host.id))
            ]
            # leased hosts take only VMs that end in time (core/lease_fit.py)
            fit = lease_fit(hosts, self.clock(), self.settings.lease_drain_lead)
            pending = [PendingVM(id=r.id, cpu=r.cpu_m / 1000, memory=r.memory, rank=r.rank,
                                 requirements=fit(r.requirements, r.walltime)) for r in rows]
            old_msgs: dict[int, str] = {
                vm_id: msg for vm_id, msg in
                s.execute(select(VM.id, VM.sched_message).where(VM.state == S.PENDING.value))
            }
        tiered = place_bursting(self.db, pending, hosts, self.settings.policy)  # site first (bursting)
        self._commit(tiered.result, old_msgs, tiered.reasons)
        note_bursts(self.db, tiered, self.clock())
        return tiered.result

    def _commit(self, result: SchedResult, old_msgs: dict[int, str],
                reasons: Mapping[int, str] | None = None) -> None:
        if not result.placements and all(old_msgs.get(v) == m for v, m in result.unplaced.items()):
            return
        # Set-based (service/vm_batch.py): a few statements per chunk instead of a load, a
        # savepoint and a flush per VM. A VM held or terminated since the snapshot is skipped; one
        # whose host filled up meanwhile (another front-end) stays PENDING, retried next cycle.
        pairs = [(p.vm_id, p.host_id) for p in result.placements]
        for part in vm_batch.chunks(pairs, COMMIT_CHUNK):
            self.cloud.vms.schedule_many(part, reasons)
        with self.db.write() as s:
            by_msg: dict[str, list[int]] = {}
            for vm_id, msg in result.unplaced.items():
                if old_msgs.get(vm_id) != msg:
                    by_msg.setdefault(msg, []).append(vm_id)
            for msg, ids in by_msg.items():  # one UPDATE per reason, not one per VM
                for i in range(0, len(ids), 500):
                    s.execute(update(VM).where(VM.id.in_(ids[i:i + 500]))
                              .where(VM.state == S.PENDING.value).values(sched_message=msg))

    def _report(self, vm_id: int, expected: VMState, event: str, message: str = "") -> None:
        """A step's result: queued during a lifecycle pass (applied set-based, see
        ``_flush_reports``), else applied at once.

        A failure met because the host could not be reached is no failure: the steps call this
        from their ``except DriverError`` handlers, and when the error being handled is a
        :class:`HostUnreachable` nothing was done on the host, so it is re-raised instead of
        taking the ``*_fail`` edge; the step stays owed and ``lifecycle_once`` makes it wait for
        the host (docs/faults.md)."""
        exc = sys.exception()
        if event.endswith("_fail") and isinstance(exc, HostUnreachable):
            raise exc
        if self._reports is None:
            self.cloud.vms.report(vm_id, expected, event, message)
        else:
            self._reports.append(vm_batch.Report(vm_id, expected, event, message))

    def _bump(self, vm_id: int, expected: VMState, message: str = "") -> None:
        """A shutdown request was sent: noted (``step_attempts``) with the pass's results
        (``_flush_reports``), else at once. Why: the REST mix's ~150 terminates a second were
        ~150 write transactions a second of their own, each a turn of SQLite's writer lock
        (docs/performance.md, session 13). Notes lost before the flush (a crash, a failed
        transaction) only make the next pass send the request again, which a guest already
        shutting down ignores. Only for shutdowns: a reboot asked twice would reboot twice."""
        if self._bumps is None:
            self.cloud.vms.bump_attempt(vm_id, expected, message)
        else:
            self._bumps.append(vm_batch.Report(vm_id, expected, "", message))

    def _flush_reports(self) -> None:
        """Apply the queued driver-call notes, then the queued results, a chunk per transaction,
        each a compare-and-set on the state the pass saw (a user's action meanwhile wins; the
        next pass sees the new state). A crash before this point loses nothing: the steps are
        idempotent and run again."""
        bumps, self._bumps = self._bumps or [], []
        for chunk in vm_batch.chunks(bumps, COMMIT_CHUNK):
            self.cloud.vms.bump_attempts(chunk)
        queued, self._reports = self._reports or [], []
        for part in vm_batch.chunks(queued, COMMIT_CHUNK):
            self.cloud.vms.report_many(part)

    # ================================================================= lifecycle
    def lifecycle_once(self) -> int:
        """One pass over every VM that owes a driver operation; returns how many were touched."""
        rows, targets = self._owed_steps()
        unreachable: dict[int, str] = {}  # hosts found unreachable in this pass: not tried again
        waited: set[int] = set()
        self._reports = []
        self._bumps = []
        self._boots = {}
        self._pass.drivers = {}
        self._pass.refs = {}  # one HostRef per host per pass, not one per VM step
        try:
            for i, (vm, host, user, group, is_admin) in enumerate(rows):
                if (i + 1) % COMMIT_CHUNK == 0:
                    self._flush_boots(unreachable, waited)
                    self._flush_reports()
                target = targets.get(vm.target_host_id or -1)
                # a migration waits for its source only: a target that does not answer fails it
                # (the guest runs on, or boots again, where it was)
                migrating = vm.state == S.MIGRATE.value
                away = waiting_host(host, None if migrating else target, unreachable)
                if away is not None:  # the step is owed: carried out when the host answers (faults.py)
                    waited.add(vm.id)
                    self.faults.tell(f"vm:{vm.id}:wait", logging.INFO,
                                     f"VM {vm.id} ({vm.state}) waits for host {away[0]}: {away[1]}")
                    continue
                try:
                    target_away = waiting_host(target, None, unreachable) if migrating else None
                    self._step(vm, host, target, user, group, bool(is_admin),
                               target_away[1] if target_away else "")
                except HostUnreachable as exc:
                    assert host is not None
                    unreachable[host.id] = exc.message
                    waited.add(vm.id)
                    self.faults.tell(f"vm:{vm.id}:wait", logging.INFO,
                                     f"VM {vm.id} ({vm.state}) waits for host {host.name}: {exc.message}")
                except VocloudError as exc:
                    self.faults.tell(f"vm:{vm.id}:step", logging.WARNING,
                                     f"VM {vm.id} ({vm.state}): {exc.message}")
                except Exception:  # a bug must not stop the loop for every other VM
                    log.exception("VM %s (%s): unexpected error", vm.id, vm.state)
            self._flush_boots(unreachable, waited)
            self._flush_reports()
        finally:
            self._reports = None
            self._bumps = None
            self._boots = None
            self._pass.drivers = None
            self._pass.refs = None
        self.faults.close_where(vm_keys_alive({r[0].id for r in rows}, waited))
        return len(rows)

    def _owed_steps(self) -> tuple[list[tuple[VM, Host | None, str, str, bool]], dict[int, Host]]:
        """The VMs in a transient state with their host, owner and group names (as the join of
        the four tables gave them), and the MIGRATE targets. The VMs are read as plain column
        rows, not ORM objects (the steps only read them; building 10,000 ORM objects per pass was
        a third of its database time); hosts, users and groups once each, not once per VM."""
        vt: Table = VM.__table__  # type: ignore[assignment]
        with self.db.read() as s:
            vms = s.execute(select(*vt.columns).where(vt.c.state.in_([st.value for st in TRANSIENT]))
                            .order_by(vt.c.id)).all()
            if not vms:
                return [], {}
            want = sorted({v.host_id for v in vms if v.host_id} | {v.target_host_id for v in vms
                                                                   if v.target_host_id})
            hosts: dict[int, Host] = {}
            for part in vm_batch.chunks(want):
                hosts.update((h.id, h) for h in s.scalars(select(Host).where(Host.id.in_(part))))
            users: dict[int, tuple[str, bool]] = {}
            for part in vm_batch.chunks(sorted({v.owner_id for v in vms})):
                users.update((u.id, (u.name, bool(u.is_admin))) for u in s.execute(
                    select(User.id, User.name, User.is_admin).where(User.id.in_(part))))
            groups: dict[int, str] = {}
            for part in vm_batch.chunks(sorted({v.group_id for v in vms})):
                groups.update((g.id, g.name) for g in s.execute(
                    select(Group.id, Group.name).where(Group.id.in_(part))))
        rows: list[tuple[VM, Host | None, str, str, bool]] = []
        for v in vms:
            if v.owner_id not in users or v.group_id not in groups:
                continue  # as the inner join did
            user, is_admin = users[v.owner_id]
            rows.append((cast(VM, v), hosts.get(v.host_id) if v.host_id else None, user,
                         groups[v.group_id], is_admin))
        targets = {v.target_host_id: hosts[v.target_host_id] for v in vms
                   if v.target_host_id and v.target_host_id in hosts}
        return rows, targets

    def _step(self, vm: VM, host: Host | None, target: Host | None, user: str, group: str,
              site_vm: bool = False, target_away: str = "") -> None:
        st = VMState(vm.state)
        elapsed = self.clock() - vm.state_changed_at
        report = self._report
        if host is None:
            report(vm.id, st, RECOVER_FAIL.get(st, "boot_fail"), "VM has no host")
            return
        drv = self._driver(host.vmm)
        ref = self._ref(host)
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
            if self._boots is None:
                self._boot(vm, drv, ref, spec, elapsed)
            else:  # started with the host's other BOOTs of this pass, in one driver call
                self._boots.setdefault(host.id, _HostBoots(drv, ref, host.name)).vms.append(
                    (vm, spec, elapsed))
        elif st == S.REBOOT:
            # noted at once: a reboot asked twice (a pass's notes lost) reboots the guest twice
            reboot_step(vm, drv, ref, elapsed, self.settings.boot_timeout, report,
                        self.cloud.vms.bump_attempt)
        elif st == S.MIGRATE and vm.hard:  # asked --cold, or the drivers can only move it so
            cold_migrate_step(self, vm, host, ref, target, host_ref(target) if target else None,
                              spec, elapsed, self.settings.shutdown_timeout,
                              self.settings.boot_timeout, target_away)
        elif st == S.MIGRATE:
            if target_away and target is not None:
                report(vm.id, st, "migrate_fail", f"target {target.name} does not answer: {target_away}")
                return
            migrate_step(self, vm, host, ref, target, host_ref(target) if target else None, spec)
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

    def _flush_boots(self, unreachable: dict[int, str], waited: set[int]) -> None:
        """Start the queued BOOTs, one ``boot_many`` per host (drivers/base.py): the sim driver
        does a host's guests in one go, the others guest by guest. Each guest's answer is judged
        exactly as ``_boot`` judges it; a host that does not answer leaves its VMs waiting."""
        queued, self._boots = self._boots or {}, {}
        for host_id, hb in queued.items():
            if host_id in unreachable:
                why = unreachable[host_id]
                for vm, _, _ in hb.vms:
                    waited.add(vm.id)
                    self.faults.tell(f"vm:{vm.id}:wait", logging.INFO,
                                     f"VM {vm.id} (BOOT) waits for host {hb.name}: {why}")
                continue
            try:
                got = boot_many(hb.drv, hb.ref, [spec for _, spec, _ in hb.vms])
            except HostUnreachable as exc:
                unreachable[host_id] = exc.message
                for vm, _, _ in hb.vms:
                    waited.add(vm.id)
                    self.faults.tell(f"vm:{vm.id}:wait", logging.INFO,
                                     f"VM {vm.id} (BOOT) waits for host {hb.name}: {exc.message}")
                continue
            except DriverError as exc:  # about the whole host: each guest failed to boot
                got = [exc] * len(hb.vms)
            except Exception:  # a bug must not stop the loop for every other host
                log.exception("host %s: unexpected error starting %d guests", hb.name, len(hb.vms))
                continue
            for (vm, _, elapsed), answer in zip(hb.vms, got, strict=True):
                try:
                    if isinstance(answer, DriverError):
                        self._report(vm.id, S.BOOT, "boot_fail", answer.message)
                    else:
                        self._booted(vm, hb.drv, hb.ref, answer, elapsed)
                except VocloudError as exc:
                    self.faults.tell(f"vm:{vm.id}:step", logging.WARNING,
                                     f"VM {vm.id} (BOOT): {exc.message}")
                except Exception:
                    log.exception("VM %s (BOOT): unexpected error", vm.id)

    def _boot(self, vm: VM, drv: VMMDriver, ref: HostRef, spec: DomainSpec, elapsed: float) -> None:
        """One VM's BOOT step outside a lifecycle pass (a pass queues them: ``_flush_boots``)."""
        try:
            info = boot_many(drv, ref, [spec])[0]
            if isinstance(info, DriverError):
                raise info
        except DriverError as exc:
            self._report(vm.id, S.BOOT, "boot_fail", exc.message)
            return
        self._booted(vm, drv, ref, info, elapsed)

    def _booted(self, vm: VM, drv: VMMDriver, ref: HostRef, info: DomainInfo, elapsed: float) -> None:
        """Judge a guest's answer to its BOOT step: running, failed, or still booting."""
        st = S.BOOT
        if info.state == DomainState.RUNNING:
            self._report(vm.id, st, "boot_ok", f"running on {ref.name}")
        elif info.state == DomainState.FAILED:
            self._kill_quietly(drv, ref, vm.deploy_id)
            self._report(vm.id, st, "boot_fail", info.detail or "guest failed to boot")
        elif elapsed > self.settings.boot_timeout:
            tail = self._console_tail(drv, ref, vm.deploy_id)  # read before the kill
            self._kill_quietly(drv, ref, vm.deploy_id)
            self._report(vm.id, st, "boot_fail",
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
                self._report(vm.id, st, "shutdown_ok", "guest is off")
                return
            escalate = not hard and elapsed > self.settings.shutdown_timeout
            if vm.step_attempts == 0 or escalate or hard:
                stop = getattr(drv, "poweroff", None)  # a cloud stops (keeps) an instance on poweroff
                if st == S.SHUTDOWN_POWEROFF and stop is not None and not (hard or escalate):
                    stop(ref, vm.deploy_id)
                else:
                    drv.shutdown(ref, vm.deploy_id, hard=hard or escalate)
                self._bump(vm.id, st, "hard stop after shutdown timeout" if escalate else "")
        except DriverError as exc:
            if isinstance(exc, HostUnreachable):
                raise  # not failed: owed until the host answers (lifecycle_once)
            if st not in OWED_TERMINATE and elapsed > 2 * self.settings.shutdown_timeout:
                # the host answered and keeps refusing: a poweroff/undeploy gives up (RUNNING)
                self._report(vm.id, st, "shutdown_fail", exc.message)
            else:  # a terminate is never given up (model/lifecycle.py::OWED_TERMINATE)
                self.faults.tell(f"vm:{vm.id}:step", logging.WARNING,
                                 f"VM {vm.id} ({st}) shutdown: {exc.message} (retrying)")

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
            # the due check reads five columns; the columns the pass uses only for the hosts
            # to probe (rows, not ORM objects: issue 15)
            due_ids = [r.id for r in s.execute(
                select(Host.id, Host.state, Host.monitored_at, Host.monitor_failures,
                       Host.monitor_next_at)
                .where(Host.state != HostState.OFFLINE.value).order_by(Host.id))
                if force or probe_due(
                    now, initializing=r.state == HostState.INIT, monitored_at=r.monitored_at,
                    failures=r.monitor_failures, next_at=r.monitor_next_at,
                    interval=self.settings.monitor_interval)]
            due: list[MonHost] = []
            for i in range(0, len(due_ids), 500):
                due += [MonHost(r.id, r.name, r.state, r.vmm, r.transport, r.attrs or {},
                                r.monitor_failures, r.monitor_failing_since)
                        for r in s.execute(select(*_MONITOR_COLS)
                                           .where(among(s, Host.id, due_ids[i:i + 500]))
                                           .order_by(Host.id))]
        self.faults.summary()
        for part in vm_batch.chunks(due, COMMIT_CHUNK):
            self._monitor_hosts(part)

    def _monitor_hosts(self, hosts: Sequence[MonHost]) -> None:
        """Probe ``hosts`` (a driver with a bulk probe once for all its hosts), then apply what
        they said in one transaction (service/hosts.py::report_probes, set-based) and read their
        VMs in one query. A failing probe takes the per-host path: backoff, and its VMs are lost."""
        refs = {h.id: host_ref(h) for h in hosts}
        answered: list[tuple[MonHost, HostInfo]] = []
        calls = probes.probe_all(hosts, lambda h: self._driver(h.vmm), lambda h: refs[h.id],
                                 lambda h: h.transport != "local", self.settings.monitor_workers)
        for h, got in zip(hosts, calls, strict=True):
            info = self._probe(h, got)
            if info is not None:
                answered.append((h, info))
        if not answered:
            return
        self.cloud.hosts.report_probes([
            Probe(h.id, capacity.milli(i.total_cpu), i.total_mem_mib, capacity.milli(i.used_cpu),
                  i.used_mem_mib, dict(i.attrs)) for h, i in answered], at=self.clock())
        for h, _ in answered:
            if h.monitor_failures:
                self._host_back(h)
        live = self._vms_found_on(answered)
        self._sweep_leftovers_on(answered, live)
        for h, info in answered:  # cloud instances tagged ours that no VM of the store has
            self.leaks.sweep(h, refs[h.id], self._driver(h.vmm), info.domains)

    def _probe(self, h: MonHost, got: HostInfo | DriverError) -> HostInfo | None:
        """The host's monitor answer, or None after recording its failure."""
        if not isinstance(got, DriverError):
            return got
        exc = got
        new = self.cloud.hosts.report_monitor(h.id, ok=False, error=exc.message, at=self.clock(),
                                              retry_in=self.settings.probe_delay)
        if new is not None:
            was = f" (was {h.state})" if h.state != new.value else ""
            self.faults.tell(f"host:{h.id}", logging.WARNING,
                             f"host {h.name} is {new.value}{was}, its VMs wait for it: "
                             f"{exc.message}")
        if new == HostState.ERROR or (new == HostState.DISABLED):
            self._vms_lost(h, exc.message)
        return None

    def _sweep_leftovers_on(self, answered: Sequence[tuple[MonHost, HostInfo]],
                            live: set[str]) -> None:
        """Remove what DONE VMs left on this host: a guest, its run directory, its staged disks.

        A VM normally leaves nothing (EPILOG cleans up), but ``recover --delete`` ends a VM
        without its host (it is for hosts that are gone, or stuck steps); when the host answers
        again, its monitor still lists the guest. Only VMs whose last host is this one are swept,
        so two hosts that share a state directory never clean up each other's guests, and only
        VMs of this store (by deploy id) - another installation's guests are never touched.

        ``live``: the deploy ids of the RUNNING and UNKNOWN VMs just read (a deploy id is one
        VM's), which are not DONE; only the other guests are looked up, in one query per chunk of
        deploy ids - none in the steady state, where every guest is a running VM's.
        """
        owner: dict[str, set[int]] = {}
        for h, info in answered:
            for did in info.domains:
                if did not in live:
                    owner.setdefault(did, set()).add(h.id)
        if not owner:
            return
        dids = sorted(owner)
        done: dict[int, list[VM]] = {}
        with self.db.read() as s:
            for i in range(0, len(dids), 500):
                for vm in s.scalars(select(VM).where(VM.state == S.DONE.value)
                                    .where(VM.deploy_id.in_(dids[i:i + 500]))):
                    if vm.host_id in owner[vm.deploy_id]:  # only VMs whose last host lists it
                        done.setdefault(vm.host_id, []).append(vm)
        for h, _ in answered:
            if h.id in done:
                self._sweep(h, done[h.id])

    def _vms_found_on(self, answered: Sequence[tuple[MonHost, HostInfo]]) -> set[str]:
        """Compare the hosts' guests with their RUNNING and UNKNOWN VMs (one query for the
        chunk); returns those VMs' deploy ids."""
        by_id = {h.id: (h, info) for h, info in answered}
        with self.db.read() as s:
            rows = s.execute(select(VM.id, VM.state, VM.deploy_id, VM.host_id)
                             .where(among(s, VM.host_id, sorted(by_id)))
                             .where(VM.state.in_([S.RUNNING.value, S.UNKNOWN.value]))
                             .order_by(VM.id)).all()
        live: set[str] = set()
        running, gone = S.RUNNING.value, _GONE
        for vm_id, state, deploy_id, host_id in rows:
            live.add(deploy_id)
            h, info = by_id[cast(int, host_id)]
            dom = info.domains.get(deploy_id)
            if state == running and dom is not None and dom.state not in gone:
                continue  # the steady state: nothing to do (the common case, 10,000 times a pass)
            self._vm_found(h, info.domains, vm_id, state, deploy_id)
        return live

    def _sweep(self, h: MonHost, done: Sequence[VM]) -> None:
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

    def _vms_lost(self, h: MonHost, why: str) -> None:
        with self.db.read() as s:
            ids = list(s.scalars(select(VM.id).where(VM.host_id == h.id).where(
                VM.state.in_([S.RUNNING.value, S.REBOOT.value, S.MIGRATE.value]))))
        for vm_id in ids:
            for st in (S.RUNNING, S.REBOOT, S.MIGRATE):
                if self.cloud.vms.report(vm_id, st, "lost", f"host {h.name}: {why}"):
                    log.info("VM %s is UNKNOWN (was %s): host %s does not answer", vm_id, st, h.name)
                    break

    def _host_back(self, h: MonHost) -> None:
        """The host answers after failed probes: told once, and its owed steps start afresh."""
        self.faults.close(f"host:{h.id}")
        since = h.monitor_failing_since or self.clock()
        log.warning("host %s answers again after %d failed probes over %.0f s", h.name,
                    h.monitor_failures, self.clock() - since)
        resumed = self.cloud.vms.resume_owed(h.id, f"host {h.name} answers again", self.clock())
        if resumed:
            log.info("host %s: the owed steps of VMs %s resume", h.name,
                     ", ".join(str(i) for i in resumed))

    def _vm_found(self, h: MonHost, domains: Mapping[str, DomainInfo], vm_id: int, state: str,
                  deploy_id: str) -> None:
        info = domains.get(deploy_id)
        dstate = info.state if info else DomainState.MISSING
        st = VMState(state)
        if st == S.UNKNOWN and dstate == DomainState.RUNNING:
            if self.cloud.vms.report(vm_id, st, "found_running", f"host {h.name} is back"):
                log.info("VM %s is RUNNING again: host %s is back", vm_id, h.name)
        elif dstate in _GONE:
            # Re-check the single guest: the list may predate a boot finished just now.
            try:
                again = self._driver(h.vmm).poll(host_ref(h), deploy_id).state
            except DriverError:
                return
            if again in _GONE and \
                    self.cloud.vms.report(vm_id, st, "found_off",
                                          f"guest {deploy_id} is no longer running on {h.name}"):
                log.info("VM %s is POWEROFF (was %s): its guest is no longer running on %s",
                         vm_id, st, h.name)


#: a guest in these states is not running: its RUNNING VM is found off (after a re-check)
_GONE = frozenset({DomainState.MISSING, DomainState.OFF, DomainState.FAILED})
#: the host columns the monitor pass reads (MonHost)
_MONITOR_COLS = (Host.id, Host.name, Host.state, Host.vmm, Host.transport, Host.attrs,
                 Host.monitor_failures, Host.monitor_failing_since)

RECOVER_FAIL = {
    S.PROLOG: "prolog_fail", S.BOOT: "boot_fail", S.EPILOG: "epilog_ok", S.EPILOG_STOP: "epilog_ok",
    S.EPILOG_UNDEPLOY: "epilog_ok", S.SHUTDOWN: "shutdown_ok", S.SHUTDOWN_HARD: "shutdown_ok",
    S.SHUTDOWN_POWEROFF: "shutdown_ok", S.SHUTDOWN_UNDEPLOY: "shutdown_ok",
}
