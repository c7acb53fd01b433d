"""What the site looks like right now, for monitoring (``/metrics``): a few set-based queries,
never a walk over rows, so a scrape of a 20,000-VM site costs a handful of GROUP BYs.

Plain data out (no Prometheus types): the front-end that exposes them (``api/metrics.py``)
decides the metric names. Not a per-user read: the metrics endpoint is for the site's monitoring
(docs/operations.md says who may reach it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from vocloud.store.db import Database
from vocloud.store.pools import PoolRow, PoolVMRow
from vocloud.store.schema import VM, Event, Group, Host


@dataclass
class SiteStats:
    hosts_by_state: dict[str, int] = field(default_factory=dict)
    #: host name -> (total cpu_m, allocated cpu_m, used cpu_m, total MiB, allocated MiB, used MiB)
    host_capacity: dict[str, tuple[int, int, int, int, int, int]] = field(default_factory=dict)
    host_monitor_failures: dict[str, int] = field(default_factory=dict)
    #: (state, vo) -> VMs (DONE excluded: it only grows)
    vms: dict[tuple[str, str], int] = field(default_factory=dict)
    #: vo -> the pool controller's last picture (pending_jobs, desired, booting, running, ...)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (vo, pool-VM state) -> pool VMs
    pool_vms: dict[tuple[str, str], int] = field(default_factory=dict)
    #: failed driver steps by lifecycle action (prolog_fail, boot_fail, ...): a counter
    vm_failures: dict[str, int] = field(default_factory=dict)


def site_stats(db: Database) -> SiteStats:
    out = SiteStats()
    with db.read() as s:
        for state, n in s.execute(select(Host.state, func.count()).group_by(Host.state)):
            out.hosts_by_state[state] = n
        for name, tc, ac, uc, tm, am, um, fails in s.execute(select(
                Host.name, Host.total_cpu_m, Host.alloc_cpu_m, Host.used_cpu_m, Host.total_mem,
                Host.alloc_mem, Host.used_mem, Host.monitor_failures)):
            out.host_capacity[name] = (tc, ac, uc, tm, am, um)
            out.host_monitor_failures[name] = fails
        for state, vo, n in s.execute(
                select(VM.state, Group.name, func.count()).join(Group, Group.id == VM.group_id)
                .where(VM.state != "DONE").group_by(VM.state, Group.name)):
            out.vms[(state, vo)] = n
        for vo, status in s.execute(select(PoolRow.vo, PoolRow.status)):
            out.pools[vo] = dict(status or {})
        for vo, state, n in s.execute(
                select(PoolRow.vo, PoolVMRow.state, func.count())
                .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .where(PoolVMRow.state != "GONE").group_by(PoolRow.vo, PoolVMRow.state)):
            out.pool_vms[(vo, state)] = n
        for action, n in s.execute(
                select(Event.action, func.count()).where(Event.kind == "vm")
                .where(Event.action.like("%\\_fail", escape="\\")).group_by(Event.action)):
            out.vm_failures[action] = n
    return out


def boot_latencies(db: Database, since: float) -> list[tuple[int, float, float]]:
    """``(vm id, started_at, seconds from creation to first RUNNING)`` of the VMs that started
    at or after ``since``: the metrics front-end feeds each into a histogram once (it keeps the
    latest ``started_at`` as its watermark and the ids seen at it)."""
    with db.read() as s:
        rows = s.execute(select(VM.id, VM.created_at, VM.started_at)
                         .where(VM.started_at.is_not(None), VM.started_at >= since)).all()
    return [(vm_id, started, max(0.0, started - created)) for vm_id, created, started in rows
            if started is not None]
