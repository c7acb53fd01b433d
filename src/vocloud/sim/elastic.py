"""The ``elastic`` scenario: VO pools sized by the real planner, VMs placed by the real scheduler.

This module is the simulator's *shell* around the production decision code. Every poll it builds
exactly the inputs the daemon's controller builds (``PendingJob`` demand per VO, a ``Pool`` of
``PoolVM`` per VO, the ``SiteCapacity``), calls :func:`vocloud.elastic.planner.plan`, and carries
out the actions; VMs the plan boots are placed on hosts by :func:`vocloud.core.placement.place`.
Every VM state change goes through the production lifecycle table
(:func:`vocloud.elastic.failures.pool_vm_next`), which has no SHUTDOWN edge from a busy or draining
worker: a plan that tried to shut down a VM under a running job would raise, and is counted as a
refused shutdown instead (the reports show it must stay 0). The batch side enforces it again:
:meth:`Cluster.remove_node` refuses a node with jobs.

Each VO is one partition (``Cluster``) whose nodes are that VO's joined VMs, so a job runs only on
a VM of its own VO. How big a VM is follows the pools' ``worker_shape`` (``elastic/shape.py``): with
``job`` (the default) or ``host`` the planner sizes each boot (up to a whole host) and a job wider
than one VM spans several VMs of its VO, as on the bare-metal partition; with ``fixed`` every VM is
``cores_per_vm`` cores and a job bigger than that is never runnable here (the planner also reports
such jobs as unfit).

Speed: the planner's inputs are rebuilt incrementally. ``PoolVM`` values are cached per VM and
rebuilt only for VMs whose node changed since the last poll; ``PendingJob`` values are made once
per job. A poll with no queued job, no idle or transitional VM and no change is skipped (the
planner would have nothing to decide), which keeps the 238-day replay fast.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from vocloud.batch.base import PendingJob
from vocloud.core.placement import HostView, PendingVM, SchedPolicy, place
from vocloud.elastic.failures import PoolVMEvent as E
from vocloud.elastic.failures import pool_vm_next, record_failure, record_success
from vocloud.elastic.planner import RATE_WINDOW_S, plan
from vocloud.elastic.policy import (
    RESERVE_AFTER_S,
    BackoffState,
    Boot,
    Drain,
    Plan,
    Pool,
    PoolPolicy,
    PoolVM,
    Resume,
    Shutdown,
    SiteCapacity,
)
from vocloud.elastic.policy import PoolVMState as V
from vocloud.errors import IllegalAction
from vocloud.sim.cluster import Cluster, Node
from vocloud.sim.dist import Duration
from vocloud.sim.engine import GONE, JOINED, Simulation
from vocloud.sim.sites import SiteSpec
from vocloud.sim.workload import Workload


@dataclass(frozen=True, slots=True)
class ElasticKnobs:
    """Pool policy knobs shared by every VO's pool (the VO-cluster issue's policy, per VO)."""

    cores_per_vm: int = 1
    memory_mib_per_vm: int = 0  # 0: the host's memory per core times cores_per_vm
    min_vms: int = 0
    max_vms: int = 0  # 0: the whole site
    idle_timeout_s: float = 300.0
    boot_timeout_s: float = 600.0
    max_boots_per_minute: int = 30
    scale_down_delay_s: float = 120.0
    min_pending_s: float = 0.0
    max_vms_site: int = 0  # 0: as many as the cores allow
    worker_shape: str = "job"  # fixed | job | host (vocloud.elastic.shape)
    headroom: float = 0.0  # spare VMs per busy VM (PoolPolicy.headroom)
    #: how long the oldest job spanning VMs waits before it holds the site's reservation
    #: (SiteCapacity.reserve_after_s; 0: at once, sessions 8-10)
    reserve_after_s: float = RESERVE_AFTER_S


# kinds of wake-up deadlines (see ElasticSite._due)
_ALWAYS, _RATE, _SCALE, _BOOT_TIMEOUT, _IDLE = range(5)


class SimVM:
    """One pool VM of the simulated site (mutable shell state; the planner sees ``PoolVM``)."""

    __slots__ = ("cores", "host", "joined_at", "memory", "placed_at", "started_at", "state",
                 "state_since", "vm_id", "vo")

    def __init__(self, vm_id: int, vo: int, cores: int, memory: int, now: float) -> None:
        self.vm_id = vm_id
        self.vo = vo
        self.cores = cores
        self.memory = memory
        self.state = V.REQUESTED
        self.started_at = now
        self.state_since = now
        self.joined_at: float | None = None
        self.host: int | None = None
        self.placed_at = now


class ElasticSite:
    """Elastic VO pools on ``spec``'s hosts (module docstring)."""

    name = "elastic"

    def __init__(
        self,
        w: Workload,
        spec: SiteSpec,
        *,
        knobs: ElasticKnobs,
        penalty: float,
        boot: Duration,
        shutdown: Duration,
        rng: random.Random,
        poll_interval: float,
        sched_policy: SchedPolicy | None = None,
        always_plan: bool = False,
        planner: Callable[..., Plan] = plan,  # a peer policy (sim.policies) in place of vocloud's
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll interval must be > 0")
        self.w = w
        self.spec = spec
        self.total_cores = spec.total_cores
        self.poll_interval = poll_interval
        self.boot = boot
        self.shutdown = shutdown
        self.rng = rng
        self.sched_policy = sched_policy or SchedPolicy()
        cores = knobs.cores_per_vm
        mem = knobs.memory_mib_per_vm or spec.mem_per_host * cores // spec.cores_per_host
        site_vms = spec.hosts * (spec.cores_per_host // cores) if cores <= spec.cores_per_host else 0
        self.max_vms_site = knobs.max_vms_site or site_vms
        self.policies = [
            PoolPolicy(
                vo=vo, image=f"{vo}-worker", cores_per_vm=cores, memory_mib_per_vm=mem,
                min_vms=knobs.min_vms, max_vms=max(knobs.max_vms or self.max_vms_site, knobs.min_vms),
                idle_timeout_s=knobs.idle_timeout_s, boot_timeout_s=knobs.boot_timeout_s,
                max_boots_per_minute=knobs.max_boots_per_minute,
                scale_down_delay_s=knobs.scale_down_delay_s, min_pending_s=knobs.min_pending_s,
                worker_shape=knobs.worker_shape, headroom=knobs.headroom,
            )
            for vo in w.vo_names
        ]
        self.vm_cores, self.vm_mem = cores, mem
        self.reserve_after_s = knobs.reserve_after_s
        self.span = knobs.worker_shape != "fixed"
        self.factor = 1.0 + penalty
        self.parts = [
            Cluster(f"elastic:{vo}", w.procs, w.estimate, w.runtime, factor=self.factor,
                    span_nodes=self.span)
            for vo in w.vo_names
        ]
        self.vms: dict[int, SimVM] = {}
        self.vo_vms: list[dict[int, SimVM]] = [{} for _ in w.vo_names]
        # PoolVM values per VO, rebuilt only for VMs marked stale (state or node changed)
        self._pvs: list[dict[int, PoolVM]] = [{} for _ in w.vo_names]
        self._stale: list[set[int]] = [set() for _ in w.vo_names]
        self._requested: dict[int, SimVM] = {}  # REQUESTED, not yet on a host
        self._next_vm = 1
        self.host_used_cpu = [0] * spec.hosts
        self.host_used_mem = [0] * spec.hosts
        self.host_vms = [0] * spec.hosts
        self._site_cap: SiteCapacity | None = None
        self._views: list[HostView | None] = [None] * spec.hosts
        self._host_free = [(spec.cores_per_host, spec.mem_per_host)] * spec.hosts
        self._pool_vms: list[tuple[PoolVM, ...] | None] = [None] * len(w.vo_names)
        # per VO: the queued jobs' PendingJob values, and the tuple last given to the planner
        # with the partition's (arrivals, starts) it was built at (see _demand)
        self._pending: list[dict[int, PendingJob]] = [{} for _ in w.vo_names]
        self._queues: list[tuple[tuple[int, int], tuple[PendingJob, ...]]] = [
            ((-1, -1), ()) for _ in w.vo_names]
        self.recent_boots: list[list[float]] = [[] for _ in w.vo_names]
        self.backoff = [BackoffState(key=p.image) for p in self.policies]
        self._in_flight = 0  # VMs booting or stopping: events still to come
        # metrics
        self.boots = 0
        self.boot_core_seconds = 0.0
        self.vm_core_seconds = 0.0
        self.refused_shutdowns = 0
        self.polls = 0
        self.plan_reasons: dict[str, int] = {}  # why the planner was called (see poll)
        self.last_why = ""
        self.plans = 0
        self.peak_vms = 0
        self.last_notes: tuple[str, ...] = ()
        self._index = {vo: i for i, vo in enumerate(w.vo_names)}
        self.always_plan = always_plan
        self._plan = planner
        self._changed = True
        self._moves = (0, 0)
        self._was_queued = False
        self._routed = 0  # jobs handed to a pool partition so far
        self._deadlines: list[tuple[float, int, int, float]] = []
        self._last_boot_stamp = (-1.0, -1)
        self._min_pending = any(p.min_pending_s > 0 for p in self.policies)
        # With headroom the planner's answer follows the busy VMs and the held spares, which no
        # wake-up rule here tracks: such a site plans at every poll (exact by construction).
        self._ahead = any(p.headroom > 0 for p in self.policies)

    # ---------------------------------------------------------------- Site protocol
    def clusters(self) -> list[Cluster]:
        return self.parts

    def route(self, job: int) -> Cluster | str:
        procs, mem = self.w.procs[job], self.w.memory_mib[job]
        if self.span:
            return self._route_span(job, procs, mem)
        if procs > self.vm_cores:
            return f"never runnable: needs {procs} cores, more than a {self.vm_cores}-core VM"
        if mem > self.vm_mem:
            return f"never runnable: needs {mem} MiB, more than a {self.vm_mem} MiB VM"
        if self.max_vms_site == 0:
            return "never runnable: no host can hold a VM of the pool's shape"
        self._routed += 1
        return self.parts[self.w.vo[job]]

    def _route_span(self, job: int, procs: int, mem: int) -> Cluster | str:
        """Jobs may span VMs (worker shape ``job``/``host``): only the whole site bounds them."""
        spec = self.spec
        hosts = -(-procs // spec.cores_per_host)
        if procs > spec.total_cores:
            return f"never runnable: needs {procs} cores, the site has {spec.total_cores}"
        if mem > hosts * spec.mem_per_host:
            return f"never runnable: needs {mem} MiB, more than {hosts} hosts' memory"
        if self.max_vms_site == 0:
            return "never runnable: no host can hold a VM of the pool's shape"
        self._routed += 1
        return self.parts[self.w.vo[job]]

    def busy(self) -> bool:
        return self._in_flight > 0

    def queued_reason(self, job: int) -> str:
        notes = "; ".join(self.last_notes)
        return f"no VM of its VO became available ({notes})" if notes else "no VM of its VO became available"

    def pool_sizes(self) -> list[int]:
        sizes = [0] * len(self.w.vo_names)
        for vm in self.vms.values():
            if vm.state in (V.BOOTING, V.REQUESTED) or (vm.joined_at is not None and vm.state != V.STOPPING):
                sizes[vm.vo] += 1
        return sizes

    # ---------------------------------------------------------------- events
    def handle(self, kind: int, payload: int, now: float, sim: Simulation) -> None:
        vm = self.vms.get(payload)
        if kind == JOINED:
            self._in_flight -= 1
            if vm is None or vm.state is not V.BOOTING:
                return  # shut down while booting; its GONE event is on the way
            self._set(vm, pool_vm_next(vm.state, E.JOINED, vm.vm_id), now)
            vm.joined_at = now
            backoff = self.backoff[vm.vo]
            if backoff.failures:  # a probe joined: the image may boot freely again
                self._changed = True
            self.backoff[vm.vo] = record_success(backoff)
            self.parts[vm.vo].add_node(vm.vm_id, vm.cores, vm.memory, now)
            sim.mark(self.parts[vm.vo])
        elif kind == GONE:
            self._in_flight -= 1
            assert vm is not None
            self._set(vm, pool_vm_next(vm.state, E.STOPPED, vm.vm_id), now)
            if vm.host is not None:
                self.vm_core_seconds += vm.cores * (now - vm.placed_at)
                self._release(vm.host, vm)
            del self.vms[vm.vm_id]
            del self.vo_vms[vm.vo][vm.vm_id]
            # freed capacity matters to VMs waiting for a host, held boots, pools below min
            if self._requested or self.policies[vm.vo].min_vms or any(c.queue for c in self.parts):
                self._changed = True
        else:
            raise RuntimeError(f"elastic: unexpected event kind {kind}")

    def _set(self, vm: SimVM, state: V, now: float) -> None:
        if state is not vm.state:
            vm.state = state
            vm.state_since = now
        self._stale[vm.vo].add(vm.vm_id)
        self._pool_vms[vm.vo] = None

    # ---------------------------------------------------------------- planner input
    def _node_state(self, vm: SimVM, node: Node | None) -> V:
        if node is None:
            return vm.state
        if node.draining:
            return V.DRAINED if node.jobs == 0 else V.DRAINING
        return V.JOINED_BUSY if node.jobs else V.JOINED_IDLE

    def _pool_vm(self, vm: SimVM) -> PoolVM:
        node = self.parts[vm.vo].nodes.get(vm.vm_id) if vm.joined_at is not None else None
        state = self._node_state(vm, node)
        return PoolVM(
            vm_id=vm.vm_id, name=f"vc-{vm.vm_id}", state=state, started_at=vm.started_at,
            joined_at=vm.joined_at, idle_since=node.idle_since if node else None,
            running_jobs=node.jobs if node else 0, free_cores=node.free if node else 0,
            free_memory_mib=vm.memory if node and node.jobs == 0 else 0,
            state_since=vm.state_since, host=str(vm.host) if vm.host is not None else None,
            cores=vm.cores, memory_mib=vm.memory,
            busy_until=node.until if node and node.jobs else None,
        )

    def _pools(self, now: float) -> list[Pool]:
        """One ``Pool`` per VO that has VMs, a minimum or queued jobs (others cannot act)."""
        pools = []
        for i, policy in enumerate(self.policies):
            vms = self.vo_vms[i]
            if not (vms or policy.min_vms or self.parts[i].queue):
                continue
            cached = self._pool_vms[i]
            if cached is None:
                pvs = self._pvs[i]
                for vm_id in self._stale[i]:
                    vm = vms.get(vm_id)
                    if vm is None:
                        pvs.pop(vm_id, None)
                    else:
                        pvs[vm_id] = self._pool_vm(vm)
                self._stale[i].clear()
                cached = self._pool_vms[i] = tuple(map(pvs.__getitem__, vms))  # creation order
            boots = self.recent_boots[i]
            while boots and boots[0] < now - RATE_WINDOW_S:
                boots.pop(0)
            pools.append(Pool(policy, cached, tuple(boots), self.backoff[i]))
        return pools

    def _demand(self) -> dict[str, tuple[PendingJob, ...]]:
        """Pending jobs per VO, rebuilt only for VOs whose queue changed since the last plan.

        A queue changes only by an arrival or a start (both counted by the partition), so an
        unchanged VO gets the very same tuple again, and the planner does not walk it again
        (``planner._jobs``): the cost of a plan follows what changed, not the queue's depth.
        """
        w = self.w
        out: dict[str, tuple[PendingJob, ...]] = {}
        for vo, c in enumerate(self.parts):
            if not c.queue:
                if self._queues[vo][1]:
                    self._queues[vo] = ((-1, -1), ())
                    self._pending[vo] = {}
                continue
            key = (c.arrivals, c.started)
            cached = self._queues[vo]
            if cached[0] != key:
                pend = self._pending[vo]
                fresh: dict[int, PendingJob] = {}  # only jobs still queued: started ones go
                for job in c.queue:
                    pj = pend.get(job)
                    if pj is None:
                        pj = PendingJob(
                            id=str(w.job_ids[job]), vo=w.vo_names[vo], cores=w.procs[job],
                            memory_mib=w.memory_mib[job], walltime_s=int(w.estimate[job]),
                            submit_time=w.submit[job],
                        )
                    fresh[job] = pj
                self._pending[vo] = fresh
                cached = self._queues[vo] = (key, tuple(fresh.values()))
            out[w.vo_names[vo]] = cached[1]
        return out

    def _site(self) -> SiteCapacity:
        if self._site_cap is None:
            self._site_cap = SiteCapacity(
                max_vms=self.max_vms_site,
                free_cores=self.spec.total_cores - sum(self.host_used_cpu),
                free_memory_mib=self.spec.hosts * self.spec.mem_per_host - sum(self.host_used_mem),
                host_free=tuple(self._host_free),
                host_shape=(self.spec.cores_per_host, self.spec.mem_per_host),
                reserve_after_s=self.reserve_after_s,
            )
        return self._site_cap

    def _deadline(self, t: float, kind: int, vm_id: int = 0, stamp: float = 0.0) -> None:
        heapq.heappush(self._deadlines, (t, kind, vm_id, stamp))

    def _stamp_boot(self, vm: SimVM, now: float) -> None:
        """Deadlines that a boot request (or placement) starts: rate window, delay, timeout."""
        p = self.policies[vm.vo]
        if (now, vm.vo) != self._last_boot_stamp:
            self._last_boot_stamp = (now, vm.vo)
            self._deadline(now + RATE_WINDOW_S, _RATE, vm.vo)
            self._deadline(now + p.scale_down_delay_s, _SCALE, vm.vo)
        self._deadline(now + p.boot_timeout_s, _BOOT_TIMEOUT, vm.vm_id)
        if p.max_lifetime_s is not None:
            self._deadline(vm.started_at + p.max_lifetime_s, _ALWAYS)

    def _due(self, now: float) -> bool:
        """Whether the planner's answer may have changed with time alone since the last plan.

        Not a decision: each timestamp the planner reads (boot request, placement, idle-since,
        backoff retry) is recorded when it is made, with the policy duration that makes it
        matter (boot timeout, idle timeout, scale-down delay, the 60 s boot-rate window,
        lifetime); an entry that can no longer matter (the VM joined before its boot timeout,
        the idle VM took a job) is dropped when it comes due. ``test_sim_elastic`` checks that
        skipping polls this way gives byte-identical metrics to planning at every poll.
        """
        due = False
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, kind, vm_id, stamp = heapq.heappop(heap)
            if due or kind == _ALWAYS:
                due = True
            elif kind == _RATE:  # a held boot may go now: only if the VO still has queued jobs
                due = bool(self.parts[vm_id].queue)
            elif kind == _SCALE:  # an idle VM may now be drained: only if the VO has an idle VM
                due = any(n.jobs == 0 and not n.draining for n in self.parts[vm_id].nodes.values())
            elif kind == _BOOT_TIMEOUT:
                vm = self.vms.get(vm_id)
                due = vm is not None and vm.state in (V.REQUESTED, V.BOOTING)
            elif kind == _IDLE:
                vm = self.vms.get(vm_id)
                node = self.parts[vm.vo].nodes.get(vm_id) if vm is not None else None
                due = node is not None and node.jobs == 0 and node.idle_since == stamp
        return due

    def _observe(self) -> str:
        """Fold node changes since the last poll into the caches; why one may need a plan now
        (empty: none).

        A node that is draining or gone may have become DRAINED: the planner shuts those down at
        once. While jobs wait, any node change counts (a job's end frees cores that absorb
        demand and may bring the reservation's start forward). Otherwise a job starting or
        ending on a non-draining VM only changes its ``idle_since``, which is stamped for
        :meth:`_due` instead.
        """
        why = ""
        # While jobs wait, a job's end matters at once: its cores absorb demand, and they may
        # bring the reservation's expected start (``_shadow``) forward, making it due now.
        queued = any(c.queue for c in self.parts)
        for vo, c in enumerate(self.parts):
            if not c.changed:
                continue
            nodes = c.nodes
            if queued and not why:
                why = "node changed while jobs wait"
            for node_id in c.changed:
                node = nodes.get(node_id)
                vm = self.vms.get(node_id)
                if vm is not None:
                    self._stale[vo].add(node_id)
                if node is None or node.draining:
                    why = "node drained or gone"
                elif node.idle_since is not None and node.jobs == 0:
                    self._deadline(node.idle_since + self.policies[vo].idle_timeout_s, _IDLE, node_id,
                                   node.idle_since)
            c.changed.clear()
            self._pool_vms[vo] = None
        return why

    # ---------------------------------------------------------------- the poll
    def poll(self, now: float, sim: Simulation) -> bool:
        self.polls += 1
        why = self._observe()
        # Any change to what is queued (an arrival, or a queued job starting) can move the fair
        # split of a full site between pools, so it is worth a plan while anything is queued.
        queued = any(c.queue for c in self.parts)
        moves = (self._routed, sum(c.started for c in self.parts))
        if moves != self._moves and (queued or self._was_queued):
            why = why or "queue changed"
        self._moves = moves
        self._was_queued = queued
        if self._changed:
            why = why or "VM event or follow-up"
            self._changed = False
        if self._due(now) or (self._min_pending and any(c.queue for c in self.parts)):
            why = why or "timer"
        if not why:
            if not (self.always_plan or self._ahead):
                return False
            why = "every poll"
        self.plan_reasons[why] = self.plan_reasons.get(why, 0) + 1
        self.last_why = why
        self.plans += 1
        result = self._plan(self._demand(), self._pools(now), self._site(), now)
        self.last_notes = tuple(n for p in result.pools for n in p.notes) + result.notes
        if result.recheck_at is not None and result.recheck_at > now:
            self._deadline(result.recheck_at, _ALWAYS)  # a threshold of the planner's own
        acted = False
        for action in result.actions:
            acted = True
            if isinstance(action, Boot):
                vo = self._index[action.vo]
                cores, mem = action.cores or self.vm_cores, action.memory_mib or self.vm_mem
                for _ in range(action.count):
                    vm = SimVM(self._next_vm, vo, cores, mem, now)
                    self._next_vm += 1
                    self.vms[vm.vm_id] = vm
                    self.vo_vms[vo][vm.vm_id] = vm
                    self._stale[vo].add(vm.vm_id)
                    self._requested[vm.vm_id] = vm
                    self.recent_boots[vo].append(now)
                    self._pool_vms[vo] = None
                    self._stamp_boot(vm, now)
            else:
                self._apply(action, now, sim)
        acted = self._place(now, sim) or acted
        self.peak_vms = max(self.peak_vms, len(self.vms))
        # A drain shows up as a draining node (significant in _observe); a resume does not, yet a
        # resumed busy VM may still leave jobs waiting, which the next plan boots for: look again.
        self._changed = bool(self._observe()) or any(isinstance(a, Resume) for a in result.actions)
        return acted

    def _apply(self, action: Drain | Resume | Shutdown, now: float, sim: Simulation) -> None:
        vm = self.vms.get(action.vm_id)
        if vm is None:
            return  # already gone: actions are idempotent
        cluster = self.parts[vm.vo]
        node = cluster.nodes.get(vm.vm_id)
        state = self._node_state(vm, node)
        if isinstance(action, Drain):
            pool_vm_next(state, E.DRAIN, vm.vm_id)
            cluster.set_draining(vm.vm_id, True)
        elif isinstance(action, Resume):
            pool_vm_next(state, E.RESUME, vm.vm_id)
            cluster.set_draining(vm.vm_id, False)
            sim.mark(cluster)
        else:
            if state is V.REQUESTED:
                self._set(vm, pool_vm_next(state, E.CANCEL, vm.vm_id), now)
                del self.vms[vm.vm_id]
                del self.vo_vms[vm.vo][vm.vm_id]
                del self._requested[vm.vm_id]
                return
            try:
                nxt = pool_vm_next(state, E.SHUTDOWN, vm.vm_id)
            except IllegalAction:
                self.refused_shutdowns += 1
                return
            if action.cause.is_failure:
                self.backoff[vm.vo] = record_failure(self.backoff[vm.vo], now)
                self._deadline(self.backoff[vm.vo].retry_at, _ALWAYS)
            if node is not None:
                cluster.remove_node(vm.vm_id, now)
            self._set(vm, nxt, now)
            self._in_flight += 1
            sim.push(now + self.shutdown.draw(self.rng), GONE, vm.vm_id)
        self._stale[vm.vo].add(vm.vm_id)
        self._pool_vms[vm.vo] = None

    def _placed(self, vm_id: int, host: int, now: float) -> SimVM:
        """A REQUESTED VM the scheduler put on ``host``: PLACED, its host's books updated (the
        caller draws its boot time; the burst site draws it from the cloud's distribution)."""
        vm = self._requested.pop(vm_id)
        self._set(vm, pool_vm_next(vm.state, E.PLACED, vm.vm_id), now)
        vm.host = host
        vm.placed_at = now
        self._stamp_boot(vm, now)
        self.host_used_cpu[host] += vm.cores
        self.host_used_mem[host] += vm.memory
        self.host_vms[host] += 1
        self._site_cap = None
        self._views[host] = None
        self._host_free[host] = self._free_of(host)
        return vm

    def _place(self, now: float, sim: Simulation) -> bool:
        """Place every REQUESTED VM with the real scheduler; unplaced ones wait (stockout)."""
        if not self._requested:
            return False
        requested = list(self._requested.values())  # vm ids increase: oldest request first
        views = self._views
        for h, view in enumerate(views):
            if view is None:
                views[h] = HostView(
                    id=h, name=f"host{h:05d}", total_cpu=float(self.spec.cores_per_host),
                    total_mem=self.spec.mem_per_host, used_cpu=float(self.host_used_cpu[h]),
                    used_mem=self.host_used_mem[h], running_vms=self.host_vms[h],
                )
        # a host without room for one VM can be chosen by no placement: leave it out (faster,
        # same answer)
        least_cpu = min(vm.cores for vm in requested)
        least_mem = min(vm.memory for vm in requested)
        hosts = [v for v in views if v is not None and v.total_cpu - v.used_cpu >= least_cpu
                 and v.total_mem - v.used_mem >= least_mem]
        if not hosts:
            return False
        result = place([PendingVM(vm.vm_id, float(vm.cores), vm.memory) for vm in requested], hosts,
                       self.sched_policy)
        for p in result.placements:
            vm = self._placed(p.vm_id, p.host_id, now)
            t = self.boot.draw(self.rng)
            self.boots += 1
            self.boot_core_seconds += vm.cores * t
            self._in_flight += 1
            sim.push(now + t, JOINED, vm.vm_id)
        return bool(result.placements)

    def _release(self, host: int, vm: SimVM) -> None:
        self.host_used_cpu[host] -= vm.cores
        self.host_used_mem[host] -= vm.memory
        self.host_vms[host] -= 1
        self._site_cap = None
        self._views[host] = None
        self._host_free[host] = self._free_of(host)

    def _free_of(self, host: int) -> tuple[int, int]:
        return (self.spec.cores_per_host - self.host_used_cpu[host],
                self.spec.mem_per_host - self.host_used_mem[host])

    def finish(self, now: float) -> None:
        """Account the VMs still up when the replay ends."""
        for vm in self.vms.values():
            if vm.host is not None:
                self.vm_core_seconds += vm.cores * (now - vm.placed_at)

    def idle_node_seconds(self, now: float) -> float:
        total = 0.0
        for c in self.parts:
            total += c.idle_node_seconds
            total += sum(now - n.idle_since for n in c.nodes.values() if n.idle_since is not None)
        return total
