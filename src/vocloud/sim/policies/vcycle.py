"""A Vcycle-style policy: fill the space by target shares, back off when VMs find no work.

From Vcycle's documented behaviour (vcycle.conf(5), projectvacuum/vcycle): Vcycle does not read
the VO's job queue. It creates VMs "as VM capacity becomes available", choosing the machinetype
(here: the VO) by its ``target_share`` of the space; each VM runs the VO's pilot, which takes
work while there is some and shuts the VM down when there is none. A VM that stops without
having done work "aborts", and then "no new VMs of this type will be created for
``backoff_seconds``"; after the back-off, once one VM has been started, "no more new VMs can be
started for another ``fizzle_seconds``" (one probe VM at a time until a VM finds work).

In the simulator: a joined VM with no job is a pilot that found nothing; it is drained (and shut
down once empty), and if it never ran a job it counts as an abort and starts the VO's back-off.
A VM that did run jobs and then finds the queue empty ends normally (no back-off). New VMs go to
the VO furthest below its target share (by VMs of the space), one at a time, as long as the site
has room and the VO is not backing off. Defaults are Vcycle's (``backoff_seconds`` = 600,
``fizzle_seconds`` = 600).

Worker shapes: a Vcycle machinetype has a fixed size (its ``processors`` option). With the pools'
``worker_shape`` ``job`` or ``host`` (jobs wider than ``cores_per_vm``) each VO's VMs are whole
hosts (``base.worker_size``), which a job wider than a host spans; shares are then counted in
those VMs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from vocloud.elastic.policy import Action, Drain, Plan, Pool, SiteCapacity
from vocloud.elastic.policy import PoolVMState as V
from vocloud.sim.policies.base import (
    Demand,
    FreeSlots,
    PeerContext,
    active,
    boots,
    finish,
    housekeeping,
    worker_size,
)


class Vcycle:
    """Target shares with back-off (module docstring)."""

    def __init__(self, ctx: PeerContext, *, backoff_s: float = 600.0, fizzle_s: float = 600.0) -> None:
        self.ctx = ctx
        self.shape = worker_size(ctx)
        self.slots = FreeSlots(ctx, self.shape)
        # a pool's maximum in VMs of this size
        self.max_vms = max(1, ctx.max_vms * ctx.cores_per_vm // self.shape[0]) if ctx.shaped else ctx.max_vms
        self.backoff_s = backoff_s
        self.fizzle_s = fizzle_s
        self.backoff_until = dict.fromkeys(ctx.vo_names, -1.0)
        self.probe_until = dict.fromkeys(ctx.vo_names, -1.0)  # fizzle hold after a probe
        total = sum(ctx.shares) or 1.0
        self.share = {vo: s / total for vo, s in zip(ctx.vo_names, ctx.shares, strict=True)}

    def __call__(self, demand: Demand, pools: Sequence[Pool], site: SiteCapacity, now: float) -> Plan:
        ctx = self.ctx
        actions: list[Action] = []
        size = dict.fromkeys(ctx.vo_names, 0)
        for pool in pools:
            vo = pool.policy.vo
            actions += housekeeping(pool)
            for vm in pool.vms:
                if active(vm):
                    size[vo] += 1
                if vm.state is V.JOINED_IDLE:
                    # the pilot found no job: the VM ends; with no work ever done, it aborted
                    # (a node's idle-since is its join time until its first job ends)
                    actions.append(Drain(vo, vm.vm_id, "pilot found no work", vm.name))
                    size[vo] -= 1
                    if vm.idle_since is None or vm.joined_at is None or vm.idle_since <= vm.joined_at:
                        self.backoff_until[vo] = now + self.backoff_s
        slots = self.slots(pools, site)
        total = sum(size.values()) + slots
        granted: dict[str, int] = {}
        # the VO furthest below its share first (ties: by name), one VM at a time
        heap = [(size[vo] - self.share[vo] * total, vo) for vo in ctx.vo_names
                if self.share[vo] > 0 and size[vo] < self.max_vms
                and now >= self.backoff_until[vo] and now >= self.probe_until[vo]]
        heapq.heapify(heap)
        while slots > 0 and heap:
            key, vo = heapq.heappop(heap)
            granted[vo] = granted.get(vo, 0) + 1
            size[vo] += 1
            slots -= 1
            if self.backoff_until[vo] > 0:  # after a back-off: one probe, then wait fizzle_seconds
                self.backoff_until[vo] = -1.0
                self.probe_until[vo] = now + self.fizzle_s
            elif size[vo] < self.max_vms:
                heapq.heappush(heap, (key + 1, vo))
        return finish(actions + boots(granted, "target share", self.shape if ctx.shaped else None))
