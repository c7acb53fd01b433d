"""The ``burst`` scenario: the elastic site, plus a cloud the pools overflow into when it is full.

The same production code as the ``elastic`` scenario (the planner, the lifecycle table), with
the daemon's bursting step in the middle: VMs are placed by
:func:`vocloud.core.burst.place_tiered`, site hosts first, the cloud's hosts (tier 1) only for
what the site cannot hold this cycle; the planner counts the cloud's free room only within the
pools' burst limit, and drains cloud workers first (``PoolVM.cloud``), as
``engine/pools.py`` does. What the cloud differs in:

* **capacity**: ``cloud_cores`` (in hosts of the site's shape, the region's declared capacity);
* **boot time**: its own distribution (cloud instances boot slower and spread wider than a
  local guest from a cached image);
* **price**: per core-hour, charged from placement to shutdown (EC2 bills from ``pending``).

The scenario reports the cloud's share next to the usual figures: cloud VMs, cloud
core-hours and their cost, peak cloud VMs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vocloud.core.burst import place_tiered
from vocloud.core.placement import HostView, PendingVM
from vocloud.elastic.policy import PoolVM, SiteCapacity
from vocloud.sim.dist import Duration
from vocloud.sim.elastic import ElasticKnobs, ElasticSite, SimVM
from vocloud.sim.engine import GONE, JOINED, Simulation
from vocloud.sim.metrics import ScenarioResult, compute
from vocloud.sim.sites import SiteSpec
from vocloud.sim.workload import Workload


@dataclass(frozen=True, slots=True)
class BurstKnobs:
    """The cloud a ``burst`` run overflows into (defaults: a modest public-cloud region)."""

    cloud_cores: int = 140  # the region's declared capacity (LPC-EGEE's whole site again)
    boot: Duration = field(default_factory=lambda: Duration("lognormal", 120.0, 0.5))
    price_core_hour: float = 0.05  # USD per core-hour
    burst_limit: int = 0  # per pool; 0: as many as the cloud holds


class BurstSite(ElasticSite):
    """Elastic pools on the site's hosts plus ``cloud_cores`` of cloud hosts (module docstring)."""

    name = "burst"

    def __init__(self, w: Workload, spec: SiteSpec, *, burst: BurstKnobs, knobs: ElasticKnobs,
                 penalty: float, boot: Duration, shutdown: Duration, rng: random.Random,
                 poll_interval: float) -> None:
        super().__init__(w, spec, knobs=knobs, penalty=penalty, boot=boot, shutdown=shutdown, rng=rng,
                         poll_interval=poll_interval)
        self.burst = burst
        self.site_hosts = spec.hosts
        cloud_hosts = -(-max(burst.cloud_cores, 0) // spec.cores_per_host)
        n = spec.hosts + cloud_hosts
        per_host = spec.cores_per_host // self.vm_cores if self.vm_cores <= spec.cores_per_host else 0
        cloud_vms = cloud_hosts * per_host
        limit = burst.burst_limit or cloud_vms
        self.max_vms_site += min(cloud_vms, limit * len(self.policies))
        self.policies = [dataclasses.replace(p, max_vms=p.max_vms + min(limit, cloud_vms))
                         for p in self.policies]
        self.host_used_cpu = [0] * n
        self.host_used_mem = [0] * n
        self.host_vms = [0] * n
        self._views = [None] * n
        self._host_free = [(spec.cores_per_host, spec.mem_per_host)] * n
        self.cloud_limit = limit
        self.total_cores = spec.total_cores + cloud_hosts * spec.cores_per_host  # utilization's base
        # the cloud's share
        self.cloud_boots = 0
        self.cloud_core_seconds = 0.0
        self.cloud_vms_now = 0
        self.peak_cloud_vms = 0

    def is_cloud(self, host: int | None) -> bool:
        return host is not None and host >= self.site_hosts

    # ------------------------------------------------------------ planner input
    def _pool_vm(self, vm: SimVM) -> PoolVM:
        pv = super()._pool_vm(vm)
        return dataclasses.replace(pv, cloud=True) if self.is_cloud(vm.host) else pv

    def _site(self) -> SiteCapacity:
        """The planner sees the cloud's room only within the pools' burst limits."""
        if self._site_cap is None:
            cloud_now = [0] * len(self.policies)
            for vm in self.vms.values():
                if self.is_cloud(vm.host):
                    cloud_now[vm.vo] += 1
            room_vms = sum(max(self.cloud_limit - c, 0) for c in cloud_now)
            free = list(self._host_free)
            budget = room_vms * self.vm_cores
            for h in range(self.site_hosts, len(free)):
                cores = min(free[h][0], budget)
                budget -= cores
                free[h] = (cores, free[h][1] if cores else 0)
            self._site_cap = SiteCapacity(
                max_vms=self.max_vms_site, free_cores=sum(c for c, _ in free),
                free_memory_mib=sum(m for _, m in free), host_free=tuple(free),
                reserve_after_s=self.reserve_after_s)
        return self._site_cap

    # ------------------------------------------------------------ placement and accounting
    def _place(self, now: float, sim: Simulation) -> bool:
        if not self._requested:
            return False
        spec = self.spec
        hosts = [
            HostView(id=h, name=f"host{h:05d}", total_cpu=float(spec.cores_per_host),
                     total_mem=spec.mem_per_host, used_cpu=float(self.host_used_cpu[h]),
                     used_mem=self.host_used_mem[h], running_vms=self.host_vms[h],
                     attrs={"HYPERVISOR": "ec2"} if self.is_cloud(h) else {})
            for h in range(len(self.host_used_cpu))
            if spec.cores_per_host - self.host_used_cpu[h] >= self.vm_cores
            and spec.mem_per_host - self.host_used_mem[h] >= self.vm_mem
        ]
        if not hosts:
            return False
        requested = list(self._requested.values())
        pool_of = {vm.vm_id: self.w.vo_names[vm.vo] for vm in requested}
        cloud_now = dict.fromkeys(self.w.vo_names, 0)
        for vm in self.vms.values():
            if self.is_cloud(vm.host):
                cloud_now[self.w.vo_names[vm.vo]] += 1
        room = {vo: max(self.cloud_limit - n, 0) for vo, n in cloud_now.items()}
        out = place_tiered([PendingVM(vm.vm_id, float(vm.cores), vm.memory) for vm in requested], hosts,
                           self.sched_policy, pool_of, room)
        for p in out.result.placements:
            vm = self._placed(p.vm_id, p.host_id, now)
            cloud = self.is_cloud(p.host_id)
            t = (self.burst.boot if cloud else self.boot).draw(self.rng)
            self.boots += 1
            self.boot_core_seconds += vm.cores * t
            if cloud:
                self.cloud_boots += 1
                self.cloud_vms_now += 1
                self.peak_cloud_vms = max(self.peak_cloud_vms, self.cloud_vms_now)
            self._in_flight += 1
            sim.push(now + t, JOINED, vm.vm_id)
        return bool(out.result.placements)

    def handle(self, kind: int, payload: int, now: float, sim: Simulation) -> None:
        vm = self.vms.get(payload)
        if kind == GONE and vm is not None and self.is_cloud(vm.host):
            self.cloud_core_seconds += vm.cores * (now - vm.placed_at)
            self.cloud_vms_now -= 1
        super().handle(kind, payload, now, sim)

    def finish(self, now: float) -> None:
        super().finish(now)
        for vm in self.vms.values():
            if self.is_cloud(vm.host):
                self.cloud_core_seconds += vm.cores * (now - vm.placed_at)

    def cloud_figures(self) -> dict[str, float | int | str]:
        hours = self.cloud_core_seconds / 3600.0
        return {
            "cloud_cores": self.burst.cloud_cores,
            "cloud_boot_time": str(self.burst.boot),
            "cloud_price_core_hour": self.burst.price_core_hour,
            "cloud_burst_limit": self.burst.burst_limit,
            "cloud_vms_booted": self.cloud_boots,
            "cloud_peak_vms": self.peak_cloud_vms,
            "cloud_core_hours": round(hours, 1),
            "cloud_cost": round(hours * self.burst.price_core_hour, 2),
        }


def run_burst(w: Workload, config: SimConfigLike, rng: random.Random, interval: float,
              progress: Callable[[float], None] | None) -> ScenarioResult:
    """Replay ``w`` on the site plus the cloud; the cloud's figures go in ``extra``."""
    site = BurstSite(w, config.spec, burst=config.burst, knobs=config.knobs, penalty=config.penalty,
                     boot=config.boot, shutdown=config.shutdown, rng=rng,
                     poll_interval=config.poll_interval)
    sim = Simulation(w, site, sample_interval=interval, progress=progress)
    st = sim.run()
    site.finish(st.t_last)
    if site.refused_shutdowns:
        raise AssertionError(f"burst: the plan asked to shut down {site.refused_shutdowns} busy VM(s)")
    return compute(
        "burst", w, st, total_cores=site.total_cores, factor=site.factor, boots=site.boots,
        boot_core_seconds=site.boot_core_seconds, idle_vm_seconds=site.idle_node_seconds(st.t_last),
        vm_core_seconds=site.vm_core_seconds,
        extra={"polls": site.polls, "planner_calls": site.plans, "peak_vms": site.peak_vms,
               "jobs_killed": 0, "refused_shutdowns": site.refused_shutdowns, **site.cloud_figures()},
    )


class SimConfigLike(Protocol):
    """The fields of ``sim.run.SimConfig`` a burst run reads (no import cycle with run.py)."""

    @property
    def spec(self) -> SiteSpec: ...
    @property
    def burst(self) -> BurstKnobs: ...
    @property
    def knobs(self) -> ElasticKnobs: ...
    @property
    def penalty(self) -> float: ...
    @property
    def boot(self) -> Duration: ...
    @property
    def shutdown(self) -> Duration: ...
    @property
    def poll_interval(self) -> float: ...
