"""The scheduler's bursting step: place tier by tier (core/burst.py) with each pool's cloud
room read from the store, and say why each VM went beyond the site.

A site without cloud hosts (every host on tier 0) places exactly as before, without reading
pools at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from vocloud.core.burst import SITE_ONLY, TieredResult, place_tiered, tier_from, tier_of
from vocloud.core.placement import HostView, PendingVM, SchedPolicy, place
from vocloud.elastic.policy import PoolVM
from vocloud.service.burst import cloud_room, pool_of_vms, record_bursts, users_vms
from vocloud.store.db import Database
from vocloud.store.pools import PoolRow
from vocloud.store.schema import Host


def place_bursting(db: Database, pending: Sequence[PendingVM], hosts: Sequence[HostView],
                   policy: SchedPolicy) -> TieredResult:
    if all(tier_of(h) == 0 for h in hosts):
        return TieredResult(place(pending, hosts, policy))
    with db.read() as s:
        pool_of: dict[int, str] = pool_of_vms(s, (v.id for v in pending))
        room = cloud_room(s)
        for vm_id in users_vms(s, (v.id for v in pending if v.id not in pool_of)):
            pool_of[vm_id] = SITE_ONLY  # a user's own VM: the cloud bills the site
    room[SITE_ONLY] = 0
    return place_tiered(pending, hosts, policy, pool_of, room)


def note_bursts(db: Database, tiered: TieredResult, at: float) -> None:
    """Pool events for the pool workers placed beyond the site this cycle."""
    if tiered.reasons:
        with db.write() as s:
            record_bursts(s, tiered.reasons, at)


def cloud_host_names(hosts: Sequence[Host]) -> frozenset[str]:
    """The hosts on a tier above the site's (cloud regions, partner sites)."""
    return frozenset(h.name for h in hosts if tier_from(h.attrs or {}, h.vmm) > 0)


def mark_cloud(vms: Sequence[PoolVM], host_of: Mapping[int, tuple[object, str | None]],
               cloud_hosts: frozenset[str]) -> tuple[PoolVM, ...]:
    """The planner's workers with ``cloud`` set for those on cloud hosts (they drain first)."""
    if not cloud_hosts:
        return tuple(vms)
    return tuple(dataclasses.replace(v, cloud=True) if (host_of.get(v.vm_id) or (None, None))[1]
                 in cloud_hosts else v for v in vms)


def planner_hosts(hosts: Sequence[Host], pools: Sequence[PoolRow],
                  cloud_workers: Mapping[int, int]) -> list[Host]:
    """The hosts whose free room the pool planner may count: the site's, and of the cloud's
    only what the pools' burst limits leave (room x worker size, summed over pools). Without
    this a full site with a cloud region would make every pool boot workers that only the
    pools with a burst limit may place."""
    cloud = [h for h in hosts if tier_from(h.attrs or {}, h.vmm) > 0]
    if not cloud:
        return list(hosts)
    budget_cpu_m = sum(max(int(p.burst_limit or 0) - cloud_workers.get(p.id, 0), 0) * p.cores * 1000
                       for p in pools)
    budget_mem = sum(max(int(p.burst_limit or 0) - cloud_workers.get(p.id, 0), 0) * p.memory
                     for p in pools)
    out = [h for h in hosts if tier_from(h.attrs or {}, h.vmm) == 0]
    for h in cloud:
        free_cpu = max(min(h.total_cpu_m - h.alloc_cpu_m, budget_cpu_m), 0)
        free_mem = max(min(h.total_mem - h.alloc_mem, budget_mem), 0)
        budget_cpu_m -= free_cpu
        budget_mem -= free_mem
        view = Host(name=h.name, vmm=h.vmm, state=h.state, attrs=h.attrs,
                    total_cpu_m=h.alloc_cpu_m + free_cpu, alloc_cpu_m=h.alloc_cpu_m,
                    total_mem=h.alloc_mem + free_mem, alloc_mem=h.alloc_mem)
        out.append(view)  # a detached copy: never added to a session
    return out
