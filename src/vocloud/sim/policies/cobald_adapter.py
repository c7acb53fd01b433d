"""COBalD's own controllers driving the simulated pools, through an adapter as TARDIS's drones.

The controllers are the ``cobald`` package's (PyPI, the optional extra ``peers``), not a
re-implementation: ``LinearController`` and ``RelativeSupplyController`` are constructed with
their real arguments and called through their synchronous ``regulate(interval)``, once per poll
with ``interval`` = the poll interval, which is what their own ``run()`` loop does every
``interval`` seconds. Between controller and pool sits ``cobald``'s ``Standardiser``, as TARDIS
builds it for each machine type (``Standardiser(FactoryPool(...), minimum=cores,
granularity=cores)``, and the site quota as ``maximum``): here one VM of the pool's shape as
minimum and granularity, the pool's maximum as maximum.

:class:`VmPool` presents one VO's pool with COBalD's ``Pool`` interface the way TARDIS's
``FactoryPool`` of drones does:

* ``supply``: the VMs joined to the batch system and not draining (a TARDIS drone supplies its
  resources once it is integrated, 0 while it is requested or booting, 0 once told to drain);
* ``allocation`` / ``utilisation``: the mean over supplying VMs of the share of each VM's cores
  that jobs hold (the batch system's view of a drone; the simulated jobs use what they hold, so
  the two are equal), and 1.0 for a pool that supplies nothing ("undefined fitness is assumed
  good, so that we eventually get real data", as in ``cobald.composite``);
* ``demand``: what the controller set. After each ``regulate`` the pool does what
  ``FactoryPool.run`` does each cycle: if supply exceeds demand, release children (VMs), the
  ones supplying the least used resources first, until the children's demand is within the
  target; otherwise spawn new children until the children's demand covers the target. Released
  VMs are drained (never killed: running jobs finish) or, when not joined yet, withdrawn.

Worker shapes: a TARDIS machine type has a fixed size, and COBalD's demand is in that type's
resources. With the pools' ``worker_shape`` ``job`` or ``host`` (jobs wider than ``cores_per_vm``)
the drones are whole-host VMs (``base.worker_size``: the one machine type that serves every job a
host can hold, wider jobs spanning drones) and supply, demand, ``minimum`` and ``granularity`` are
in cores, as TARDIS's ``Standardiser(..., minimum=cores, granularity=cores)``. COBalD still does
not read the queue: a pool grows only while its drones are well used, so a wide job waiting on an
idle pool does not make it grow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cobald.controller.linear import LinearController
from cobald.controller.relative_supply import RelativeSupplyController
from cobald.decorator.limiter import Limiter
from cobald.interfaces import Pool as CobaldPool

from vocloud.elastic.policy import (
    Action,
    Drain,
    Plan,
    Pool,
    PoolVM,
    Shutdown,
    ShutdownCause,
    SiteCapacity,
)
from vocloud.elastic.policy import PoolVMState as V
from vocloud.sim.policies.base import (
    Demand,
    FreeSlots,
    PeerContext,
    boots,
    finish,
    grant,
    housekeeping,
    worker_size,
)

_CHILD = (V.REQUESTED, V.BOOTING, V.JOINED_IDLE, V.JOINED_BUSY)  # children "in the hatchery"
_RELEASE_ORDER = {V.REQUESTED: 0, V.BOOTING: 1, V.JOINED_IDLE: 2, V.JOINED_BUSY: 3}


def _used(vm: PoolVM, cores: int) -> float:
    """The share of ``vm``'s cores that jobs hold (a drone's allocation in the batch system)."""
    if vm.state is not V.JOINED_BUSY:
        return 0.0
    return 1.0 - min(vm.free_cores, cores) / cores


class VmPool(CobaldPool):  # type: ignore[misc]  # cobald ships no type information
    """One VO's VMs as a COBalD ``Pool`` (module docstring)."""

    def __init__(self, cores: int, unit: int = 1) -> None:
        self.cores = cores
        self.unit = unit  # resources one drone supplies: 1 (a VM) or its cores (shaped pools)
        self._demand = 0.0
        self.vms: tuple[PoolVM, ...] = ()
        self._supply = 0.0
        self._fitness = 1.0

    def refresh(self, vms: tuple[PoolVM, ...]) -> None:
        """Take this poll's view of the VMs (the batch system's answer, cached for the cycle)."""
        self.vms = vms
        joined = used = 0.0
        for vm in vms:
            if vm.state is V.JOINED_BUSY:
                joined += 1
                used += _used(vm, self.cores)
            elif vm.state is V.JOINED_IDLE:
                joined += 1
        self._supply = joined * self.unit
        self._fitness = used / joined if joined else 1.0

    @property
    def supply(self) -> float:
        return self._supply

    @property
    def demand(self) -> float:
        return self._demand

    @demand.setter
    def demand(self, value: float) -> None:
        self._demand = value

    @property
    def utilisation(self) -> float:
        return self._fitness

    @property
    def allocation(self) -> float:
        return self._fitness

    def adjust(self, vo: str) -> tuple[int, list[Action]]:
        """``FactoryPool``'s cycle: (VMs to spawn, release actions) for the current demand."""
        children = [vm for vm in self.vms if vm.state in _CHILD]
        target = self._demand / self.unit  # in drones
        if self._supply > self._demand:
            hit_list = sorted(children, key=lambda vm: (_used(vm, self.cores), _RELEASE_ORDER[vm.state],
                                                        -vm.vm_id))
            excess = len(children) - target
            out: list[Action] = []
            for vm in hit_list:
                if excess < 1:
                    break
                excess -= 1
                if vm.state in (V.REQUESTED, V.BOOTING):
                    out.append(Shutdown(vo, vm.vm_id, "demand below supply", vm.name, ShutdownCause.SURPLUS))
                else:
                    out.append(Drain(vo, vm.vm_id, "demand below supply", vm.name))
            return 0, out
        return max(0, math.ceil(target - len(children))), []  # spawn until children cover it


class Cobald:
    """One COBalD pipeline per VO: ``controller >> Limiter(min, max, granularity) >> VmPool``."""

    def __init__(self, ctx: PeerContext, kind: str, **settings: float) -> None:
        self.ctx = ctx
        self.shape = worker_size(ctx)
        self.slots = FreeSlots(ctx, self.shape)
        self.interval = ctx.poll_interval
        self.pools: dict[str, VmPool] = {}
        self.controllers: dict[str, Any] = {}
        cores = self.shape[0]
        unit = cores if ctx.shaped else 1
        # the site's VMs of this size bound a pool, as the quota bounds TARDIS's machine type
        drones = ctx.max_vms * ctx.cores_per_vm // cores if ctx.shaped else ctx.max_vms
        for vo in ctx.vo_names:
            pool = VmPool(cores, unit)
            limited = Limiter(pool, minimum=unit, maximum=max(drones, 1) * unit, granularity=unit)
            if kind == "linear":
                ctl: Any = LinearController(limited, **settings)
            elif kind == "relative":
                ctl = RelativeSupplyController(limited, **settings)
            else:
                raise ValueError(f"unknown COBalD controller {kind!r}")
            self.pools[vo] = pool
            self.controllers[vo] = ctl
        # VO -> the VMs view at which its last pass changed nothing (see __call__)
        self._quiet: dict[str, tuple[PoolVM, ...]] = {}

    def __call__(self, demand: Demand, pools: Sequence[Pool], site: SiteCapacity, now: float) -> Plan:
        ctx = self.ctx
        actions: list[Action] = []
        by_vo = {p.policy.vo: p for p in pools}
        wants: dict[str, int] = {}
        for vo in ctx.vo_names:
            pool = by_vo.get(vo)
            vms = pool.vms if pool is not None else ()
            if self._quiet.get(vo) is vms:
                # A fixed point: the same VMs (the site hands the same tuple while nothing
                # changed) gave no demand change and no action last time; regulate and the
                # factory cycle are deterministic in those inputs, so they would again.
                continue
            vm_pool = self.pools[vo]
            vm_pool.refresh(vms)
            kept = housekeeping(pool) if pool is not None else []
            before = vm_pool.demand
            self.controllers[vo].regulate(self.interval)
            spawn, released = vm_pool.adjust(vo)
            actions += kept + released
            if spawn:
                wants[vo] = spawn
            if kept or released or spawn or vm_pool.demand != before:
                self._quiet.pop(vo, None)
            else:
                self._quiet[vo] = vms
        granted = grant(wants, self.slots(pools, site)) if wants else {}
        shape = self.shape if self.ctx.shaped else None
        return finish(actions + boots(granted, "COBalD demand above supply", shape))
