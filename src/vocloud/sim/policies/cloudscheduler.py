"""A cloudscheduler-style rule: a VM per waiting job, retire a VM idle for N minutes.

From cloudscheduler's documented behaviour (hep-gc/cloud-scheduler README, "Users submit their
jobs to a Condor job queue, and Cloud Scheduler boots VMs to suit those jobs"; csv2's machine
poller "monitored by csv2's main scheduler to make decisions about increasing or reducing the
number of running vms to match the job queue", retiring a machine through condor and then
terminating the VM): each cycle, for each VO, boot one VM for every idle (waiting) job that no
idle or starting VM will take, up to the pool's maximum; a VM idle for ``idle_minutes`` is
retired (drained, then terminated once empty); N is the site's idle timeout, the one vocloud's
planner uses (5 minutes by default), so only the rule differs. No boot-rate limit, no fair share beyond the
cloud answering "full": when the site is full, the free slots go round robin to the VOs that ask
(``base.grant``), as a cloud that refuses the rest until the next cycle would.

Worker shapes (``PeerContext.worker_shape``, the option vocloud's pools have): cloudscheduler
boots VMs "to suit those jobs" (csv2 matches each job's requested cores and memory to a VM
flavour), so with ``job`` each waiting job no spare worker will take gets a VM of its own size,
and a job wider than a host gets whole-host VMs it spans (as Slurm spans nodes); with ``host``
whole-host VMs, as many as the job needs; with ``fixed`` (the default) one ``cores_per_vm`` VM per
job that fits one. Spare capacity is counted in cores: free cores of the pool's joined VMs and all
cores of the VMs still starting. One job's VMs are one request, which the cloud grants whole or
refuses until the next cycle (``base.Room.take_all``); requests go on hosts first fit, round robin
between VOs, one job at a time (``base.grant_shaped``). A VM idle for N minutes is retired even
if its VO has jobs waiting (with shaped workers an idle VM and a waiting job coexist only when
the job needs more than the idle VMs). Nothing reserves room for a wide job: it starts when a
cycle finds room for all its VMs at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from vocloud.elastic.policy import Action, Drain, Plan, Pool, SiteCapacity
from vocloud.elastic.policy import PoolVMState as V
from vocloud.sim.policies.base import (
    Demand,
    FreeSlots,
    PeerContext,
    Room,
    active,
    boots,
    finish,
    grant,
    grant_shaped,
    housekeeping,
    job_vms,
    shaped_boots,
)


class CloudScheduler:
    """The rule above; ``idle_minutes`` is the retirement timer (csv2's keep-alive; default: the
    site's idle timeout).

    ``every_poll`` is False: the rule depends on time only through the idle timer, which the
    elastic site already wakes the planner for (its idle deadlines use the same timeout), so
    the site may skip polls where nothing changed; ``test_sim_policies`` checks that this gives
    the same figures as deciding at every poll.
    """

    every_poll = False

    def __init__(self, ctx: PeerContext, *, idle_minutes: float | None = None) -> None:
        self.ctx = ctx
        self.slots = FreeSlots(ctx)
        self.idle_s = ctx.idle_timeout_s if idle_minutes is None else idle_minutes * 60.0

    def __call__(self, demand: Demand, pools: Sequence[Pool], site: SiteCapacity, now: float) -> Plan:
        if self.ctx.shaped:
            return self._shaped(demand, pools, site, now)
        ctx = self.ctx
        actions: list[Action] = []
        wants: dict[str, int] = {}
        for pool in pools:
            vo = pool.policy.vo
            actions += housekeeping(pool)
            waiting = sum(1 for j in demand.get(vo, ()) if j.cores <= ctx.cores_per_vm
                          and j.memory_mib <= ctx.memory_mib_per_vm)
            spare = sum(1 for vm in pool.vms if vm.state in (V.REQUESTED, V.BOOTING, V.JOINED_IDLE))
            size = sum(1 for vm in pool.vms if active(vm))
            want = min(waiting - spare, ctx.max_vms - size)
            if want > 0:
                wants[vo] = want
            elif not waiting:
                for vm in pool.vms:
                    if vm.state is V.JOINED_IDLE:
                        since = vm.idle_since if vm.idle_since is not None else (vm.joined_at or now)
                        if now - since >= self.idle_s:
                            actions.append(Drain(vo, vm.vm_id, f"idle {now - since:.0f} s", vm.name))
        granted = grant(wants, self.slots(pools, site))
        return finish(actions + boots(granted, "a VM per waiting job"))

    def _retire(self, pool: Pool, now: float) -> list[Action]:
        vo = pool.policy.vo
        out: list[Action] = []
        for vm in pool.vms:
            if vm.state is V.JOINED_IDLE:
                since = vm.idle_since if vm.idle_since is not None else (vm.joined_at or now)
                if now - since >= self.idle_s:
                    out.append(Drain(vo, vm.vm_id, f"idle {now - since:.0f} s", vm.name))
        return out

    def _shaped(self, demand: Demand, pools: Sequence[Pool], site: SiteCapacity, now: float) -> Plan:
        """The rule with VMs of the job's size (module docstring)."""
        ctx = self.ctx
        actions: list[Action] = []
        wants: dict[str, list[list[tuple[int, int]]]] = {}
        for pool in pools:
            vo = pool.policy.vo
            actions += housekeeping(pool)
            actions += self._retire(pool, now)
            jobs = demand.get(vo, ())
            if not jobs:
                continue
            spare = size = 0
            for vm in pool.vms:
                if vm.state in (V.REQUESTED, V.BOOTING):
                    spare += vm.cores or ctx.cores_per_vm
                elif vm.state in (V.JOINED_IDLE, V.JOINED_BUSY):
                    spare += vm.free_cores
                if active(vm):
                    size += 1
            room_vms = ctx.max_vms - size
            want: list[list[tuple[int, int]]] = []
            for job in jobs:
                if room_vms <= 0:
                    break
                take = min(spare, job.cores)
                spare -= take
                if take < job.cores:
                    per_core = job.memory_mib / job.cores if job.cores else 0
                    rest = job.cores - take
                    vms = job_vms(ctx, rest, int(per_core * rest))
                    if len(vms) > room_vms:
                        continue  # more than the pool may still boot: not now
                    want.append(vms)
                    room_vms -= len(vms)
            if want:
                wants[vo] = want
        granted = grant_shaped(wants, Room(pools, site)) if wants else {}
        return finish(actions + shaped_boots(granted, "VMs to suit the waiting jobs"))
