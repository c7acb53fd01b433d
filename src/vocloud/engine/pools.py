"""The VO-pool controller: the imperative shell around :func:`vocloud.elastic.planner.plan`.

``PoolController.reconcile_once()`` is one level-triggered pass, in the style of
``engine/reconcile.py``:

1. **Observe.** Read the pools and their workers from the store, the VMs' states from the IaaS
   tables, and the nodes from the batch system (a worker's node name is its VM name). Each
   worker's pool state moves through ``failures.POOL_VM_TABLE`` only (:func:`observed_event` is
   the pure mapping from what is seen to the table's events), written with compare-and-set.
2. **Plan.** Call the real, pure planner with the pending jobs, the pools and the free capacity
   of the MONITORED hosts.
3. **Persist, then act.** The plan's decisions are written in one transaction *before* anything
   is done: a boot becomes REQUESTED rows (with their future VM names) and an event; a drain,
   resume or shutdown moves the row's state. Only then are VMs created, nodes drained or
   resumed, VMs terminated. A crash between the two is repaired by the next controller: REQUESTED
   rows without a VM that were decided before it started (by the dead one: one daemon per store,
   ``engine/store_lease.py``) are bound on its first pass, rows of a later pass it did not
   finish after ``bind_grace_s``, each looking the VM up by name first, so a boot decided once
   is never carried out twice; STOPPING rows are terminated again; draining rows whose node is
   not draining are drained again.

Whose VMs (issue 9): pool workers are created **as the VO**: by the pool's identity, the
non-administrator user ``pool.<vo>`` of the VO's group recorded on the pool row
(``service/pools.py``). The VMs belong to it and to the VO's group, count against the VO's
quotas, VO members see them as their own, and every check a VO member meets when asking
directly applies to them (images, networks, quotas). The only additions are an
administrator's: the **site template** (the pool's own, else the daemon's ``pool_site_template``)
is handed to ``VMService.create(..., site=...)``, which merges it after the VO's text passed its
checks; and the pool's own typed numbers (CPU/VCPU/MEMORY from its cores and memory, and
SCHED_REQUIREMENTS steering away from hosts in backoff), checked like any user's attributes.
Before each boot :meth:`PoolController._boot_inputs` checks again what ``pool create`` checked
(the template may have changed since, the identity may have been disabled): a refusal is a
``boot-refused`` pool event naming the reason, and no VM. Terminating a worker is the site's own
decision and is done with an administrator's rights.

The controller never terminates a worker whose node runs a job: the pool state table has no
shutdown edge from a joined state, and :meth:`PoolController._stop` drains the node and re-reads
it from the batch system before it terminates anything.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vocloud.batch.base import (
    BatchSystem,
    NodeState,
    PendingJob,
    RegistersNodes,
    WorkerNode,
    by_vo,
)
from vocloud.core.prestage import Decision, Mode, only_hosts
from vocloud.elastic.failures import (
    DEFAULT_BACKOFF,
    BackoffPolicy,
    PoolVMEvent,
    avoid_hosts,
    blocked,
    pool_vm_next,
    record_failure,
    record_success,
)
from vocloud.elastic.observe import FAILED_VM, observed_event
from vocloud.elastic.planner import RATE_WINDOW_S, plan
from vocloud.elastic.policy import (
    BackoffState,
    Boot,
    Drain,
    Plan,
    Pool,
    PoolVM,
    Resume,
    Shutdown,
    SiteCapacity,
)
from vocloud.elastic.policy import PoolVMState as V
from vocloud.engine.burst import cloud_host_names, mark_cloud, planner_hosts
from vocloud.engine.prestage import Prestager, candidates
from vocloud.errors import Forbidden, IllegalAction, InvalidInput, NotFound, VocloudError
from vocloud.model.lifecycle import HostState, VMState
from vocloud.model.template import Template, parse_template
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.distribution import STORING_VMMS
from vocloud.service.ipam import int_to_ip
from vocloud.service.pools import boot_image, boot_inputs, live_vms, policy_of, purge
from vocloud.store.pools import PoolBackoffRow, PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import VM, Host, Lease, User

log = logging.getLogger("vocloud.elastic")

E = PoolVMEvent
#: VM states in which a terminate is done or under way: nothing more to ask.
_STOPPING_VM = frozenset({VMState.DONE, VMState.SHUTDOWN, VMState.SHUTDOWN_HARD,
                          VMState.SHUTDOWN_POWEROFF, VMState.SHUTDOWN_UNDEPLOY, VMState.EPILOG,
                          VMState.EPILOG_STOP, VMState.EPILOG_UNDEPLOY})
#: Observations worth a line in ``pool events`` (job starts and ends are not).
_LOGGED = {E.JOINED: "joined", E.BOOT_FAILED: "boot-failed", E.LOST: "lost",
           E.NODE_DOWN: "node-down", E.NODE_UP: "node-up", E.STOPPED: "stopped",
           E.CANCEL: "cancelled"}


# --- the pure part -----------------------------------------------------------------------------


def vm_for_planner(row: PoolVMRow) -> PoolVM:
    """The planner's view of a worker. Unbound rows get the negative row id as their VM id, so
    every worker has a distinct id before its VM exists."""
    return PoolVM(
        vm_id=row.vm_id if row.vm_id is not None else -row.id, name=row.name, state=V(row.state),
        started_at=row.requested_at, joined_at=row.joined_at, idle_since=row.idle_since,
        running_jobs=row.running_jobs, free_cores=row.free_cores,
        free_memory_mib=row.free_memory, state_since=row.state_since, host=row.host,
        cores=row.cores or 0, memory_mib=row.memory or 0,
    )


def site_capacity(hosts: Sequence[Host], max_vms: int, rebalance: bool = True) -> SiteCapacity:
    """Free cores/MiB of the MONITORED hosts, as the planner takes them; the largest host's
    size is a whole-host worker for pools whose ``worker_shape`` is ``job`` or ``host``."""
    up = [h for h in hosts if h.state == HostState.MONITORED.value]
    free = tuple(
        (max((h.total_cpu_m - h.alloc_cpu_m) // 1000, 0), max(h.total_mem - h.alloc_mem, 0))
        for h in up
    )
    largest = max(((h.total_cpu_m // 1000, h.total_mem) for h in up), default=(0, 0))
    return SiteCapacity.from_hosts(max_vms, free, rebalance, largest)


# --- the shell ---------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    pools: list[PoolRow]
    rows: dict[int, list[PoolVMRow]]  # pool id -> rows not GONE, plus GONE ones in the rate window
    vms: dict[int, tuple[VMState, str | None]]  # vm id -> (state, host name)
    errors: dict[int, str]  # vm id -> the VM's last error, for VMs in a failure state
    backoff: dict[tuple[int, str], BackoffState]
    hosts: list[Host]


@dataclass
class _Todo:
    drains: list[tuple[str, str]] = field(default_factory=list)
    resumes: list[str] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)  # VM ids of cancelled requests


class PoolController:
    """One controller per daemon: ``reconcile_once()`` is the loop body (module docstring)."""

    def __init__(self, cloud: Cloud, batch: BatchSystem, clock: Callable[[], float] = time.time,
                 site_max_vms: int = 1000, bind_grace_s: float = 60.0,
                 backoff: BackoffPolicy = DEFAULT_BACKOFF, rebalance: bool = True,
                 site_template: str = "", prestager: Prestager | None = None) -> None:
        """``site_template``: the daemon's default site template (``pool_site_template``), for
        pools that name none; ``""``: such pools' workers get no site additions.
        ``prestager``: pre-stages a pool's image onto the hosts its workers could take before
        they boot (docs/image-distribution.md); ``None``: never."""
        self.prestager = prestager
        self._held: set[int] = set()  # requests held back while their image is pre-staged
        self._prestage_note: dict[int, str] = {}  # pool id -> last note written to its events
        self.site_template = site_template
        self.cloud = cloud
        self.db = cloud.db
        self.batch = batch
        self.clock = clock
        self.site_max_vms = site_max_vms
        self.bind_grace_s = bind_grace_s
        self.backoff = backoff
        self.rebalance = rebalance
        self.last_plan: Plan | None = None
        self.started_at = clock()  # requests older than this were made by a controller now dead
        self._failed: set[tuple[int, str]] = set()  # backoff keys already charged this pass

    # ------------------------------------------------------------ one pass
    def reconcile_once(self) -> Plan:
        now = self.clock()
        self._failed.clear()
        pending = self.batch.pending()
        nodes = {n.name: n for n in self.batch.nodes()}
        self._observe(self._snapshot(now), nodes, now)
        snap = self._snapshot(now)
        result = self._plan(snap, pending, now)
        todo = self._persist(snap, result, now)
        self._act(todo, nodes)
        self._stop_all(now)
        self._bind(now)
        self._register(nodes)
        self._finish_deletes()
        self.last_plan = result
        return result

    def running_workers(self) -> dict[str, tuple[str, int, int]]:
        """``{node name: (VO, cores, MiB)}`` of pool workers whose VM is RUNNING.

        For the ``sim`` batch system only, which has no batch daemon in the guest to register a
        node: the daemon (and the tests) call ``SimBatch.sync_nodes(running_workers())`` before
        each pass, which is what a real worker's slurmd does by itself.
        """
        with self.db.read() as s:
            rows = s.execute(
                select(PoolVMRow.name, PoolRow.vo, func.coalesce(PoolVMRow.cores, PoolRow.cores),
                       func.coalesce(PoolVMRow.memory, PoolRow.memory))
                .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .join(VM, VM.id == PoolVMRow.vm_id)
                .where(VM.state == VMState.RUNNING.value)).all()
        return {name: (vo, cores, memory) for name, vo, cores, memory in rows}

    # ------------------------------------------------------------ read
    def _snapshot(self, now: float) -> _Snapshot:
        with self.db.read() as s:
            pools = list(s.scalars(select(PoolRow).order_by(PoolRow.vo)))
            rows: dict[int, list[PoolVMRow]] = {p.id: [] for p in pools}
            lo = now - RATE_WINDOW_S
            for r in s.scalars(select(PoolVMRow).where(
                    (PoolVMRow.state != V.GONE.value) | (PoolVMRow.requested_at > lo))
                    .order_by(PoolVMRow.id)):
                rows.setdefault(r.pool_id, []).append(r)
            ids = [r.vm_id for rs in rows.values() for r in rs if r.vm_id is not None]
            vms: dict[int, tuple[VMState, str | None]] = {}
            errors: dict[int, str] = {}
            for i in range(0, len(ids), 500):
                for vm_id, state, host, error in s.execute(
                        select(VM.id, VM.state, Host.name, VM.error)
                        .outerjoin(Host, Host.id == VM.host_id)
                        .where(VM.id.in_(ids[i:i + 500]))):
                    vms[vm_id] = (VMState(state), host)
                    if VMState(state) in FAILED_VM and error:
                        errors[vm_id] = error
            backoff = {(b.pool_id, b.key): BackoffState(b.key, b.failures, b.retry_at, b.last_failure)
                       for b in s.scalars(select(PoolBackoffRow))}
            hosts = list(s.scalars(select(Host).order_by(Host.id)))
        return _Snapshot(pools, rows, vms, errors, backoff, hosts)

    # ------------------------------------------------------------ observe
    def _observe(self, snap: _Snapshot, nodes: Mapping[str, WorkerNode], now: float) -> None:
        """Move each worker's pool state to what the IaaS and the batch system show."""
        with self.db.write() as s:
            for pool in snap.pools:
                for seen in snap.rows.get(pool.id, []):
                    if seen.state == V.GONE.value:
                        continue
                    row = s.get(PoolVMRow, seen.id, with_for_update=True)
                    if row is None or row.state != seen.state or row.vm_id != seen.vm_id:
                        continue  # changed since the snapshot: the next pass sees it
                    vm_state, host = snap.vms.get(row.vm_id, (None, None)) if row.vm_id else (None, None)
                    node = nodes.get(row.name)
                    error = snap.errors.get(row.vm_id, "") if row.vm_id else ""
                    self._apply_observation(s, pool, row, vm_state, host, node, now, error)
        self._redrain(snap, nodes)

    def _apply_observation(self, s: Session, pool: PoolRow, row: PoolVMRow, vm_state: VMState | None,
                           host: str | None, node: WorkerNode | None, now: float,
                           vm_error: str = "") -> None:
        if host:
            row.host = host
        if node is not None:
            row.running_jobs = node.running_jobs
            row.free_cores, row.free_memory = node.free_cores, node.free_memory_mib
        for _ in range(6):
            event = observed_event(V(row.state), row.vm_id is not None, vm_state, node)
            if event is None:
                break
            old = V(row.state)
            new = pool_vm_next(old, event, row.name)
            row.state, row.state_since = new.value, now
            if event is E.BOOT_FAILED:
                # Charged when seen, before planning, so this same pass already backs off
                # instead of booting replacements into the failing image.
                self._charge(s, pool.id, f"image:{pool.image}", now)
            if event is E.JOINED:
                row.joined_at = now
                for key in (f"image:{pool.image}", f"host:{row.host}" if row.host else ""):
                    if key:
                        self._backoff_write(s, pool.id, key, None, now)
            if event in _LOGGED:
                why = {E.JOINED: f"node {row.name} joined the batch system",
                       E.BOOT_FAILED: f"vm {row.vm_id} failed to boot"
                                      + (f": {vm_error}" if vm_error else ""),
                       E.LOST: f"vm {row.vm_id} is gone ({vm_state.value if vm_state else 'deleted'})",
                       E.NODE_DOWN: f"node {row.name} is down or gone from the batch system",
                       E.NODE_UP: f"node {row.name} is back", E.STOPPED: f"vm {row.vm_id} removed",
                       E.CANCEL: f"request {row.name} cancelled: its VM is gone"}[event]
                row.reason = why
                _event(s, pool.id, now, _LOGGED[event], 1, row.vm_id, why)
        if row.state == V.JOINED_IDLE.value:
            if row.idle_since is None:
                row.idle_since = node.idle_since if node and node.idle_since is not None else now
        elif row.state == V.JOINED_BUSY.value:
            row.idle_since = None

    def _redrain(self, snap: _Snapshot, nodes: Mapping[str, WorkerNode]) -> None:
        """A drain decided but not carried out (crash, batch error) is carried out again."""
        for rows in snap.rows.values():
            for r in rows:
                node = nodes.get(r.name)
                if r.state in (V.DRAINING.value, V.DRAINED.value) and node is not None \
                        and node.state in (NodeState.IDLE, NodeState.BUSY):
                    self._batch_op(self.batch.drain, r.name, "vocloud: pool drain")

    # ------------------------------------------------------------ plan
    def _plan(self, snap: _Snapshot, pending: Sequence[PendingJob], now: float) -> Plan:
        pools: list[Pool] = []
        clouds = cloud_host_names(snap.hosts)
        for p in snap.pools:
            if not p.enabled and not p.deleting:
                continue  # a disabled pool is frozen: observed, never planned
            try:
                policy = policy_of(p)
            except InvalidInput as exc:
                log.warning("pool %s: invalid policy, skipped: %s", p.vo, exc.message)
                continue
            rows = snap.rows.get(p.id, [])
            live = mark_cloud([vm_for_planner(r) for r in rows if r.state != V.GONE.value], snap.vms, clouds)
            boots = tuple(r.requested_at for r in rows if r.requested_at > now - RATE_WINDOW_S)
            backoff = snap.backoff.get((p.id, f"image:{p.image}"), BackoffState(f"image:{p.image}"))
            pools.append(Pool(policy, live, boots, backoff))
        demand = by_vo(pending)
        cloud_workers = {pl.policy.vo: sum(v.cloud for v in pl.vms) for pl in pools}
        hosts = planner_hosts(snap.hosts, snap.pools, {p.id: cloud_workers.get(p.vo, 0) for p in snap.pools})
        site = site_capacity(hosts, self.site_max_vms, self.rebalance)
        return plan(demand, pools, site, now)

    # ------------------------------------------------------------ persist
    def _persist(self, snap: _Snapshot, result: Plan, now: float) -> _Todo:
        """Write every decision of ``result`` in one transaction, before any is carried out."""
        todo = _Todo()
        by_vo_row = {p.vo: p for p in snap.pools}
        with self.db.write() as s:
            for action in result.actions:
                pool = by_vo_row[action.vo]
                if isinstance(action, Boot):
                    self._persist_boot(s, pool, action, now)
                    continue
                row = self._row_for(s, pool.id, action.vm_id)
                if row is None:
                    continue
                seen = next((r for r in snap.rows.get(pool.id, []) if r.id == row.id), None)
                if seen is None or seen.state != row.state:
                    continue  # stale decision: the next pass decides again
                old = V(row.state)
                try:
                    if isinstance(action, Drain):
                        new = pool_vm_next(old, E.DRAIN, row.name)
                        todo.drains.append((row.name, action.reason))
                        kind = "drain"
                    elif isinstance(action, Resume):
                        new = pool_vm_next(old, E.RESUME, row.name)
                        todo.resumes.append(row.name)
                        kind = "resume"
                    else:
                        assert isinstance(action, Shutdown)
                        ev = E.CANCEL if old is V.REQUESTED else E.SHUTDOWN
                        new = pool_vm_next(old, ev, row.name)
                        if ev is E.CANCEL and row.vm_id is not None:
                            todo.cancels.append(row.vm_id)
                        kind = "shutdown"
                        if action.cause.is_failure:  # FAILED was charged when observed
                            self._charge(s, pool.id, f"image:{pool.image}", now)
                        if action.cause.blames_host and row.host:
                            self._charge(s, pool.id, f"host:{row.host}", now)
                except IllegalAction as exc:
                    # The table refuses (e.g. a shutdown of a joined worker): log, never act.
                    _event(s, pool.id, now, "refused", 1, row.vm_id, exc.message)
                    continue
                row.state, row.state_since, row.reason = new.value, now, action.reason
                if new is V.DRAINED or new is V.DRAINING:
                    row.idle_since = None
                _event(s, pool.id, now, kind, 1, row.vm_id, action.reason)
            for status in result.pools:
                pool = by_vo_row[status.vo]
                doc = {**asdict(status), "notes": [*status.notes, *result.notes]}
                if doc != pool.status:  # an unchanged picture costs no write
                    s.execute(update(PoolRow).where(PoolRow.id == pool.id).values(
                        status=doc, status_at=now))
        return todo

    def _persist_boot(self, s: Session, pool: PoolRow, action: Boot, now: float) -> None:
        rows = [PoolVMRow(pool_id=pool.id, name=f"_new_{uuid.uuid4().hex}", state=V.REQUESTED.value,
                          state_since=now, requested_at=now, running_jobs=0, free_cores=0,
                          free_memory=0, reason=action.reason,
                          cores=action.cores or None, memory=action.memory_mib or None)
                for _ in range(action.count)]
        s.add_all(rows)
        s.flush()
        for r in rows:
            r.name = f"{pool.vo}-wn{r.id}"
        _event(s, pool.id, now, "boot", action.count, None, action.reason)

    @staticmethod
    def _row_for(s: Session, pool_id: int, vm_id: int) -> PoolVMRow | None:
        stmt = select(PoolVMRow).where(PoolVMRow.pool_id == pool_id)
        stmt = stmt.where(PoolVMRow.id == -vm_id) if vm_id < 0 else stmt.where(PoolVMRow.vm_id == vm_id)
        return s.scalars(stmt.with_for_update()).first()

    def _charge(self, s: Session, pool_id: int, key: str, now: float) -> None:
        """One failure on ``key``, at most once per pass: workers of one image failing together
        are one incident, and must not multiply the wait by 2**n at once."""
        if (pool_id, key) not in self._failed:
            self._failed.add((pool_id, key))
            self._backoff_write(s, pool_id, key, now, now)

    def _backoff_write(self, s: Session, pool_id: int, key: str, failed_at: float | None,
                       now: float) -> None:
        """Record a failure (``failed_at``) or a success (``None``) on one backoff key."""
        row = s.scalars(select(PoolBackoffRow).where(PoolBackoffRow.pool_id == pool_id)
                        .where(PoolBackoffRow.key == key).with_for_update()).first()
        if row is None:
            if failed_at is None:
                return
            row = PoolBackoffRow(pool_id=pool_id, key=key, failures=0, retry_at=0.0)
            s.add(row)
        state = BackoffState(key, row.failures or 0, row.retry_at or 0.0, row.last_failure)
        state = record_failure(state, now, self.backoff) if failed_at is not None else record_success(state)
        row.failures, row.retry_at, row.last_failure = state.failures, state.retry_at, state.last_failure

    # ------------------------------------------------------------ act
    def _act(self, todo: _Todo, nodes: Mapping[str, WorkerNode]) -> None:
        for name, reason in todo.drains:
            if name in nodes:
                self._batch_op(self.batch.drain, name, f"vocloud: {reason}"[:200])
        for name in todo.resumes:
            if name in nodes:
                self._batch_op(self.batch.resume, name)
        for vm_id in todo.cancels:
            self._terminate(vm_id)

    def _batch_op(self, fn: Callable[..., None], *args: str) -> None:
        try:
            fn(*args)
        except VocloudError as exc:
            log.warning("batch %s %s: %s (retried next pass)", fn.__name__, args[0], exc.message)

    def _stop_all(self, now: float) -> None:
        """Terminate the VMs of STOPPING workers (and of withdrawn requests); level-triggered.

        Every pass retries what is not done yet, so a crash or a failed call between the
        shutdown decision and the VM reaching DONE only delays it.
        """
        with self.db.read() as s:
            stopping = list(s.execute(
                select(PoolVMRow.id, PoolVMRow.pool_id, PoolVMRow.name, PoolVMRow.vm_id, VM.state)
                .outerjoin(VM, VM.id == PoolVMRow.vm_id)
                .where(PoolVMRow.state == V.STOPPING.value)))
            orphans = list(s.scalars(
                select(PoolVMRow.vm_id).join(VM, VM.id == PoolVMRow.vm_id)
                .where(PoolVMRow.state == V.GONE.value)
                .where(VM.state.not_in([st.value for st in _STOPPING_VM]))))
        for vm_id in orphans:
            if vm_id is not None:
                self._terminate(vm_id)
        todo = [(rid, pid, name, vm_id) for rid, pid, name, vm_id, st in stopping
                if vm_id is not None and st is not None and VMState(st) not in _STOPPING_VM]
        fresh: dict[str, WorkerNode] = {}
        if todo:
            known = {n.name for n in self.batch.nodes()}
            for _rid, _pid, name, _vm in todo:
                if name in known:  # no job may start between the check below and the terminate
                    self._batch_op(self.batch.drain, name, "vocloud: shutting down")
            fresh = {n.name: n for n in self.batch.nodes()}
            for rid, pid, name, vm_id in todo:
                self._stop(rid, pid, name, vm_id, fresh.get(name), now)
        for row in stopping:
            name = row[2]
            if name not in fresh or fresh[name].running_jobs == 0:
                self._batch_op(self.batch.remove, name)

    def _stop(self, rid: int, pid: int, name: str, vm_id: int, node: WorkerNode | None,
              now: float) -> bool:
        """Terminate one worker's VM unless its node runs a job (then: refuse, retry later)."""
        if node is not None and node.running_jobs > 0:
            log.error("refusing to terminate vm %s: node %s runs %d jobs", vm_id, name,
                      node.running_jobs)
            with self.db.write() as s:
                row = s.get(PoolVMRow, rid)
                why = f"refused shutdown of vm {vm_id}: node {name} runs {node.running_jobs} jobs"
                if row is not None and row.reason != why:
                    row.reason = why
                    _event(s, pid, now, "refused", 1, vm_id, why)
            return False
        self._terminate(vm_id)
        return True

    def _terminate(self, vm_id: int) -> None:
        try:
            actor = self._actor_for_vm(vm_id)
            self.cloud.vms.action(actor, vm_id, "terminate")
        except (IllegalAction, NotFound):
            pass  # already shutting down, or gone: what we want
        except VocloudError as exc:
            log.warning("terminate vm %s: %s (retried next pass)", vm_id, exc.message)

    # ------------------------------------------------------------ bind requests to VMs
    def _bind(self, now: float) -> None:
        """Create the VMs of REQUESTED rows that have none: this pass's, those a dead controller
        decided before this one started, and any other past the grace period.

        Waiting out a grace for a dead controller's rows would leave its boots undone for a
        minute after every restart (a daemon killed between deciding and creating). A row decided
        after this controller started and still unbound is left by one of its own passes that
        failed unexpectedly: retrying it only after the grace keeps a persistent fault from
        being hammered every pass.
        """
        with self.db.read() as s:
            rows = list(s.execute(
                select(PoolVMRow.id, PoolVMRow.name, PoolVMRow.requested_at, PoolRow.id,
                       PoolRow.group_id, func.coalesce(PoolVMRow.cores, PoolRow.cores),
                       func.coalesce(PoolVMRow.memory, PoolRow.memory), PoolRow.owner_id,
                       PoolRow.max_lifetime)
                .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .where(PoolVMRow.state == V.REQUESTED.value).where(PoolVMRow.vm_id.is_(None))
                .order_by(PoolVMRow.id)))
        rows = [r for r in rows if r[0] in self._held or not (
            self.started_at < r[2] < now and now - r[2] < self.bind_grace_s)]
        # (rows left by a failed pass of ours are retried after the grace)
        pins = self._prestage(rows, now)
        for rid, name, _requested_at, pid, group_id, cores, memory, owner_id, lifetime in rows:
            if rid in self._held:
                continue  # waits for its image to reach the hosts (the pool's events say why)
            vm_id = self._existing_vm(name, group_id, owner_id)
            if vm_id is None:
                try:
                    actor, body, site = self._boot_inputs(pid)
                except VocloudError as exc:  # refused, or a stored template that no longer parses
                    self._bind_failed(rid, pid, name, exc.message, now, "boot-refused")
                    continue
                # The pool's own numbers, typed here and checked by VMService like any user's.
                extra = {"CPU": str(int(cores)), "VCPU": str(int(cores)),
                         "MEMORY": str(int(memory))}
                if lifetime:  # a known end: the worker may go to a leased host (docs/host-leases.md)
                    extra["WALLTIME"] = str(int(lifetime))
                try:
                    own = str(parse_template(body, fmt="one").attrs.get("SCHED_REQUIREMENTS", ""))
                    steer = only_hosts(avoid_hosts(own, *self._hosts_in_backoff(pid, now)),
                                       pins.get(rid, ()))
                    if steer != own:
                        extra["SCHED_REQUIREMENTS"] = steer
                    [vm_id] = self.cloud.vms.create(actor, body, fmt="one", count=1, name=name,
                                                    extra=extra, site=site)
                except Forbidden as exc:  # the VO may not use what its template names
                    self._bind_failed(rid, pid, name, exc.message, now, "boot-refused")
                    continue
                except VocloudError as exc:
                    self._bind_failed(rid, pid, name, exc.message, now)
                    continue
            self._record_vm(rid, pid, vm_id, now)

    def _prestage(self, rows: Sequence[Any], now: float) -> dict[int, tuple[str, ...]]:
        """Ask the prestager about each pool's requests (docs/image-distribution.md): fills
        ``self._held`` with the requests that wait, returns the hosts the others are pinned to."""
        self._held.clear()
        pins: dict[int, tuple[str, ...]] = {}
        if self.prestager is None or not rows:
            return pins
        by_pool: dict[int, list[Any]] = {}
        for r in rows:
            by_pool.setdefault(r[3], []).append(r)
        for pid, waiting in by_pool.items():
            try:
                gate = self._prestage_pool(pid, waiting, now)
            except VocloudError as exc:  # refused boots are reported by the boot itself
                log.debug("pool %s: no pre-stage: %s", pid, exc.message)
                continue
            if gate is None:
                continue
            decision, dist_id, pool_vo, image = gate
            bound = waiting[:decision.bind]
            self._held.update(r[0] for r in waiting[decision.bind:])
            pins.update((r[0], decision.pin) for r in bound)
            notes = []
            if dist_id is not None:
                notes.append(("prestage", f"pre-staging image {image} to {len(decision.start)} "
                              f"hosts for VO {pool_vo} (distribution {dist_id})"))
            if decision.note and decision.note != self._prestage_note.get(pid):
                notes.append(("prestage-wait", decision.note))
            self._prestage_note[pid] = decision.note
            if notes:
                with self.db.write() as s:
                    for action, why in notes:
                        _event(s, pid, now, action, decision.waiting, None, why)
        return pins

    def _prestage_pool(self, pid: int, waiting: Sequence[Any], now: float
                       ) -> tuple[Decision, int | None, str, str] | None:
        assert self.prestager is not None
        with self.db.read() as s:
            pool = s.get(PoolRow, pid)
            if pool is None:
                return None
            mode = Mode(pool.prestage) if pool.prestage else self.prestager.settings.mode
            if mode is Mode.OFF:
                return None
            image = boot_image(s, boot_inputs(s, pool, self.site_template))
            if image is None:
                return None
            cores, memory, vo = pool.cores, pool.memory, pool.vo
            wait_s = min(self.prestager.settings.wait_s, pool.boot_timeout / 2)
            hosts = list(s.scalars(select(Host).where(Host.vmm.in_(STORING_VMMS))))
            unplaced = s.scalar(
                select(func.count(PoolVMRow.id)).join(VM, VM.id == PoolVMRow.vm_id)
                .where(PoolVMRow.pool_id == pid).where(VM.host_id.is_(None))
                .where(VM.state == VMState.PENDING.value)) or 0
        avoid, _ = self._hosts_in_backoff(pid, now)
        cands = candidates(hosts, cores, memory, avoid)
        decision, dist_id = self.prestager.gate(mode, vo, image, len(waiting), cands,
                                                int(unplaced), now, wait_s)
        return decision, dist_id, vo, image[1]

    def _boot_inputs(self, pool_id: int) -> tuple[Actor, str, Template | None]:
        """(the pool identity as an actor, the VO's template text, the site template) for one
        boot, checked again as ``pool create`` checked (:func:`~vocloud.service.pools.boot_inputs`,
        shared with Slurm power saving): raises a ``VocloudError`` when refused."""
        with self.db.read() as s:
            pool = s.get(PoolRow, pool_id)
            if pool is None:
                raise _Refused(f"pool {pool_id} is gone")
            inputs = boot_inputs(s, pool, self.site_template)
        return inputs.actor, inputs.body, inputs.site

    def _hosts_in_backoff(self, pool_id: int, now: float) -> tuple[list[str], list[str]]:
        """(hosts this pool's boots failed on and that still back off, hosts usable now)."""
        with self.db.read() as s:
            rows = s.scalars(select(PoolBackoffRow).where(PoolBackoffRow.pool_id == pool_id)
                             .where(PoolBackoffRow.key.like("host:%"))).all()
            states = {r.key: BackoffState(r.key, r.failures or 0, r.retry_at or 0.0, r.last_failure)
                      for r in rows}
            usable = list(s.scalars(select(Host.name).where(Host.state == HostState.MONITORED.value)))
        return [k.removeprefix("host:") for k in blocked(states, now)], usable

    def _existing_vm(self, name: str, group_id: int, owner_id: int | None) -> int | None:
        """A live VM this pool already created under ``name`` (a crash before it was recorded).
        Only the pool identity's: a VO member's own VM of that name is never adopted (and so
        never terminated by the pool)."""
        with self.db.read() as s:
            stmt = (select(VM.id).where(VM.name == name).where(VM.group_id == group_id)
                    .where(VM.state != VMState.DONE.value))
            if owner_id is not None:
                stmt = stmt.where(VM.owner_id == owner_id)
            return s.scalar(stmt.order_by(VM.id).limit(1))

    def _record_vm(self, rid: int, pid: int, vm_id: int, now: float) -> None:
        with self.db.write() as s:
            row = s.get(PoolVMRow, rid, with_for_update=True)
            if row is not None and row.vm_id is None and row.state == V.REQUESTED.value:
                row.vm_id = vm_id
                _event(s, pid, now, "created", 1, vm_id, f"vm {vm_id} created for {row.name}")
                return
        self._terminate(vm_id)  # the request was withdrawn meanwhile: never leak the VM

    def _bind_failed(self, rid: int, pid: int, name: str, why: str, now: float,
                     action: str = "boot-failed") -> None:
        """No VM for a request: the worker FAILS (backed off like a failed boot) and the pool
        gets a ``boot-failed`` event, or ``boot-refused`` when the VO's rights forbid it."""
        with self.db.write() as s:
            row = s.get(PoolVMRow, rid, with_for_update=True)
            if row is None or row.state != V.REQUESTED.value:
                return
            row.state = pool_vm_next(V.REQUESTED, E.BOOT_FAILED, name).value
            row.state_since, row.reason = now, f"cannot create vm {name}: {why}"
            _event(s, pid, now, action, 1, None, row.reason)

    def _actor(self, group_id: int) -> Actor:
        """The site's first administrator acting for the VO's group: for terminating workers
        only (a site decision), never for creating them."""
        with self.db.read() as s:
            admin = s.scalars(select(User).where(User.is_admin.is_(True)).order_by(User.id)).first()
        if admin is None:
            raise NotFound("no administrator exists to own pool VMs")
        return Actor(admin.id, "pool-controller", group_id, True)

    def _actor_for_vm(self, vm_id: int) -> Actor:
        with self.db.read() as s:
            group_id = s.scalar(select(VM.group_id).where(VM.id == vm_id))
        if group_id is None:
            raise NotFound(f"VM {vm_id} does not exist")
        return self._actor(group_id)

    # ------------------------------------------------------------ register (Grid Engine)
    def _register(self, nodes: Mapping[str, WorkerNode]) -> None:
        """Tell a batch system that must know a worker before its daemon joins
        (:class:`~vocloud.batch.base.RegistersNodes`: Grid Engine) about every booting worker
        whose VM has an address and whose node it does not list yet. Level-triggered (retried
        every pass until the node is listed) and idempotent in the adapter."""
        batch = self.batch
        if not isinstance(batch, RegistersNodes):
            return
        with self.db.read() as s:
            rows = list(s.execute(
                select(PoolVMRow.name, PoolRow.vo, Lease.ip)
                .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .join(Lease, Lease.vm_id == PoolVMRow.vm_id)
                .where(PoolVMRow.state.in_([V.REQUESTED.value, V.BOOTING.value]))
                .order_by(PoolVMRow.id, Lease.id)))
        done: set[str] = set()
        for name, vo, ip in rows:
            if name not in nodes and name not in done:  # first NIC's address
                done.add(name)
                self._batch_op(batch.register, name, int_to_ip(ip), vo)

    # ------------------------------------------------------------ forced deletes
    def _finish_deletes(self) -> None:
        with self.db.write() as s:
            for row in s.scalars(select(PoolRow).where(PoolRow.deleting.is_(True))):
                if live_vms(s, row.id) == 0:
                    purge(s, row)


class _Refused(VocloudError):
    """A boot the pool's rights or the administrator's declarations do not allow."""


def _event(s: Session, pool_id: int, at: float, action: str, count: int, vm_id: int | None,
           reason: str) -> None:
    s.add(PoolEventRow(pool_id=pool_id, time=at, action=action, count=count, vm_id=vm_id,
                       reason=reason[:2000]))
