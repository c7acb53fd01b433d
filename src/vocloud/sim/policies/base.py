"""What every peer policy shares: the planner's call signature and the pool facts it may read.

A peer policy replaces :func:`vocloud.elastic.planner.plan` in the simulator's elastic site
(``ElasticSite(planner=...)``): it is called with the same inputs (pending jobs per VO, one
``Pool`` per VO, the ``SiteCapacity``) and answers with the same actions (``Boot``, ``Drain``,
``Shutdown``, ``Resume``), which the site carries out through the production lifecycle table and
scheduler. So the boot times, the VM placement, the batch model and the rule that a VM is never
shut down under a running job are the same for every policy; only the decision differs.

Peers keep state between calls (COBalD's demand, Vcycle's back-off), so a policy is an object
made fresh for each replay. The helpers here are the bookkeeping every real system does the same
way (a drained, empty VM is shut down; a request no host took is withdrawn), kept in one place so
no peer is handicapped by a different reading of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from vocloud.batch.base import PendingJob
from vocloud.elastic.policy import (
    HOLDS_CAPACITY,
    Action,
    Boot,
    Plan,
    Pool,
    PoolVM,
    Shutdown,
    ShutdownCause,
    SiteCapacity,
)
from vocloud.elastic.policy import PoolVMState as V

Demand = Mapping[str, Sequence[PendingJob]]


class PeerPolicy(Protocol):
    """A planner with the signature of ``vocloud.elastic.planner.plan``."""

    def __call__(self, demand: Demand, pools: Sequence[Pool], site: SiteCapacity, now: float) -> Plan: ...


@dataclass(frozen=True, slots=True)
class PeerContext:
    """What a peer is configured with at a site: its VOs, their shares, the VM shape and limits.

    ``shares``: each VO's target share (Vcycle's ``target_share``), by default its core-seconds
    in the trace, the same split the static scenario uses. ``max_vms``: one pool's maximum.
    ``poll_interval``: the seconds between calls (COBalD's ``regulate(interval)``).
    ``idle_timeout_s``: the site's idle timeout (``--idle-timeout``), which the cloudscheduler
    rule uses as its retirement timer so that only the rule differs from vocloud's.
    ``worker_shape``: the pools' ``worker_shape`` (``fixed``, ``job``, ``host``; the same option
    vocloud's pools have, ``elastic/shape.py``); ``host_shape``: (cores, MiB) of the site's
    largest host, what a whole-host worker is. With ``fixed`` every peer boots
    ``cores_per_vm``-core VMs; otherwise each peer serves jobs wider than that the way its own
    documentation says it would (:func:`worker_size`, :func:`job_vms`; docs/policies.md).
    """

    vo_names: tuple[str, ...]
    shares: tuple[float, ...]
    cores_per_vm: int
    memory_mib_per_vm: int
    max_vms: int
    poll_interval: float
    idle_timeout_s: float = 300.0
    worker_shape: str = "fixed"
    host_shape: tuple[int, int] = (0, 0)

    @property
    def shaped(self) -> bool:
        """Whether workers may be wider than ``cores_per_vm`` (and jobs span several of them)."""
        return self.worker_shape != "fixed" and self.host_shape[0] > 0 and self.host_shape[1] > 0


def worker_size(ctx: PeerContext) -> tuple[int, int]:
    """(cores, MiB) of the one machine type a queue-blind peer (COBalD/TARDIS, Vcycle) boots.

    Such a peer has a fixed VM size per machine type in its configuration (TARDIS's
    ``MachineTypeConfiguration``, Vcycle's ``processors``): it cannot follow the queue as
    vocloud's ``job`` shape does. With ``host`` its workers are whole hosts; with ``job`` and
    ``fixed`` they are ``cores_per_vm`` cores, and with ``job`` a job wider than one worker spans
    several (as vocloud's pools; the smallest size wastes no cores on serial jobs and keeps
    COBalD's granularity at one core, see docs/policies.md, "Worker shapes").
    """
    if ctx.shaped and ctx.worker_shape == "host":
        return ctx.host_shape
    return ctx.cores_per_vm, ctx.memory_mib_per_vm


def job_vms(ctx: PeerContext, cores: int, memory_mib: int) -> list[tuple[int, int]]:
    """The VMs a peer that boots "VMs to suit the job" (cloudscheduler) starts for ``cores``.

    ``job``: one VM of the job's size (at least ``cores_per_vm``, memory in proportion) when it
    fits a host, else whole-host VMs the job spans; ``host``: whole-host VMs, as many as the job
    needs; ``fixed``: one ``cores_per_vm`` VM if the job fits one, else none (it cannot run).
    Mirrors ``vocloud.elastic.shape.shape_of`` so both size a worker for a job the same way.
    """
    host_cores, host_mem = ctx.host_shape
    if not ctx.shaped:
        fits = cores <= ctx.cores_per_vm and memory_mib <= ctx.memory_mib_per_vm
        return [(ctx.cores_per_vm, ctx.memory_mib_per_vm)] if fits else []
    if ctx.worker_shape == "host" or cores >= host_cores:
        return [(host_cores, host_mem)] * max(1, -(-cores // host_cores))
    c = max(ctx.cores_per_vm, cores)
    per_core = ctx.memory_mib_per_vm / ctx.cores_per_vm
    return [(c, max(min(int(per_core * c), host_mem), 1))]


def active(vm: PoolVM) -> bool:
    """A VM that gives (or will give) the pool a worker: requested, booting or joined."""
    return vm.state in (V.REQUESTED, V.BOOTING, V.JOINED_IDLE, V.JOINED_BUSY)


def housekeeping(pool: Pool) -> list[Action]:
    """Shut down what every pool manager shuts down: drained empty VMs, failed and down ones."""
    out: list[Action] = []
    for vm in pool.vms:
        if vm.state is V.DRAINED:
            out.append(Shutdown(pool.policy.vo, vm.vm_id, "drained and empty", vm.name))
        elif vm.state in (V.FAILED, V.DOWN):
            out.append(Shutdown(pool.policy.vo, vm.vm_id, "failed", vm.name, ShutdownCause.FAILED))
    return out


class FreeSlots:
    """New VMs of the pools' shape the site can place now, less requests already waiting.

    A real cloud refuses a boot beyond its capacity ("quota exceeded") and the pool manager
    tries again next cycle; asking only for what fits models that without a queue of doomed
    requests. The per-host count is remembered while the site's capacity object is the same
    (the simulator rebuilds it only when a VM is placed or released).
    """

    def __init__(self, ctx: PeerContext, shape: tuple[int, int] | None = None) -> None:
        self.cores, self.memory = shape or (ctx.cores_per_vm, ctx.memory_mib_per_vm)
        self._site: SiteCapacity | None = None
        self._by_hosts = 0

    def __call__(self, pools: Sequence[Pool], site: SiteCapacity) -> int:
        if site is not self._site:
            self._site = site
            self._by_hosts = _by_hosts(site, self.cores, self.memory)
        return _less_holding(pools, site, self._by_hosts)


def _by_hosts(site: SiteCapacity, cores: int, memory: int) -> int:
    if site.host_free:
        return sum(min(c // cores, m // memory) for c, m in site.host_free)
    return min(site.free_cores // cores, site.free_memory_mib // memory)


def _less_holding(pools: Sequence[Pool], site: SiteCapacity, by_hosts: int) -> int:
    holding = waiting = 0
    for pool in pools:
        for vm in pool.vms:
            if vm.state in HOLDS_CAPACITY:
                holding += 1
            if vm.state is V.REQUESTED:
                waiting += 1
    return max(0, min(by_hosts - waiting, site.max_vms - holding))


def grant(wants: Mapping[str, int], slots: int) -> dict[str, int]:
    """Share ``slots`` new VMs between pools that want some: one at a time, round robin by name.

    The same rule for every peer, so no peer wins or loses by how a full site answers it.
    """
    out = dict.fromkeys(wants, 0)
    names = sorted(vo for vo, n in wants.items() if n > 0)
    while slots > 0 and names:
        nxt = []
        for vo in names:
            if slots == 0:
                break
            out[vo] += 1
            slots -= 1
            if out[vo] < wants[vo]:
                nxt.append(vo)
        names = nxt
    return {vo: n for vo, n in out.items() if n > 0}


def boots(granted: Mapping[str, int], why: str, shape: tuple[int, int] | None = None) -> list[Action]:
    """``Boot`` actions; ``shape``: (cores, MiB) of each VM when not the pool's configured one."""
    cores, memory = shape or (0, 0)
    return [Boot(vo, n, why, image=f"{vo}-worker", cores=cores, memory_mib=memory)
            for vo, n in sorted(granted.items())]


class Room:
    """What the site can still place, host by host, for VMs of mixed sizes (first fit).

    The shaped counterpart of :class:`FreeSlots`: the hosts' free (cores, MiB), less the VMs
    already requested and not placed yet, and the site's VM limit. :meth:`take` answers whether
    one more VM of a size fits and, if so, books it.
    """

    def __init__(self, pools: Sequence[Pool], site: SiteCapacity) -> None:
        self.free = [list(h) for h in site.host_free] or [[site.free_cores, site.free_memory_mib]]
        self.vms = 1 << 30  # requested VMs already count in ``holding`` below
        holding = 0
        for pool in pools:
            for vm in pool.vms:
                if vm.state in HOLDS_CAPACITY:
                    holding += 1
                if vm.state is V.REQUESTED:
                    pol = pool.policy
                    self.take(vm.cores or pol.cores_per_vm, vm.memory_mib or pol.memory_mib_per_vm)
        self.vms = site.max_vms - holding

    def take_all(self, sizes: Sequence[tuple[int, int]]) -> bool:
        """Book every VM of ``sizes`` or none (one job's VMs: a request the cloud takes whole)."""
        saved, vms = [h[:] for h in self.free], self.vms
        for c, m in sizes:
            if not self.take(c, m):
                self.free, self.vms = saved, vms
                return False
        return True

    def take(self, cores: int, memory: int) -> bool:
        if self.vms <= 0:
            return False
        for h in self.free:
            if h[0] >= cores and h[1] >= memory:
                h[0] -= cores
                h[1] -= memory
                self.vms -= 1
                return True
        return False


def grant_shaped(wants: Mapping[str, Sequence[Sequence[tuple[int, int]]]],
                 room: Room) -> dict[str, list[tuple[int, int]]]:
    """:func:`grant` for jobs' VMs of given sizes: round robin by VO name, one job's VMs at a
    time (all of them or none, :meth:`Room.take_all`), in each VO's order; a job whose VMs do
    not fit now is refused (asked again next cycle) and the VO's turn goes on with its next job."""
    out: dict[str, list[tuple[int, int]]] = {}
    pos = dict.fromkeys(wants, 0)
    names = sorted(vo for vo, w in wants.items() if w)
    while names:
        nxt = []
        for vo in names:
            want = wants[vo]
            i = pos[vo]
            while i < len(want) and not room.take_all(want[i]):
                i += 1
            if i < len(want):
                out.setdefault(vo, []).extend(want[i])
                i += 1
            pos[vo] = i
            if i < len(want):
                nxt.append(vo)
        names = nxt
    return out


def shaped_boots(granted: Mapping[str, Sequence[tuple[int, int]]], why: str) -> list[Action]:
    """One ``Boot`` per VO and VM size."""
    out: list[Action] = []
    for vo, sizes in sorted(granted.items()):
        count: dict[tuple[int, int], int] = {}
        for size in sizes:
            count[size] = count.get(size, 0) + 1
        out += [Boot(vo, n, why, image=f"{vo}-worker", cores=c, memory_mib=m)
                for (c, m), n in sorted(count.items())]
    return out


def finish(actions: list[Action]) -> Plan:
    """A ``Plan`` of ``actions`` (peers report no per-pool status rows)."""
    return Plan(tuple(actions), ())
