"""Which pool workers run beyond the site, read from the store (core/burst.py decides tiers).

``pool list`` shows each pool's site and cloud workers apart, and the scheduler gives a pool
only the cloud room its burst limit leaves; both count the same way: a worker is a *cloud*
worker when its VM's host is on a tier above 0 (a cloud region by default).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from vocloud.core.burst import tier_from
from vocloud.elastic.policy import PoolVMState
from vocloud.model.lifecycle import VMState
from vocloud.store.pools import PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import VM, Host, User


def worker_split(s: Session) -> dict[int, tuple[int, int]]:
    """Pool id -> (site workers, cloud workers) among its workers whose VM has a host."""
    out: dict[int, tuple[int, int]] = {}
    rows = s.execute(
        select(PoolVMRow.pool_id, Host.vmm, Host.attrs)
        .join(VM, VM.id == PoolVMRow.vm_id).join(Host, Host.id == VM.host_id)
        .where(PoolVMRow.state != PoolVMState.GONE.value)
        .where(VM.state != VMState.DONE.value))
    for pool_id, vmm, attrs in rows:
        site, cloud = out.get(pool_id, (0, 0))
        if tier_from(attrs or {}, vmm) > 0:
            cloud += 1
        else:
            site += 1
        out[pool_id] = (site, cloud)
    return out


def pool_of_vms(s: Session, vm_ids: Iterable[int]) -> dict[int, str]:
    """VM id -> its pool's VO, for the VMs that are pool workers."""
    ids = list(vm_ids)
    out: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        for vm_id, vo in s.execute(select(PoolVMRow.vm_id, PoolRow.vo)
                                   .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                                   .where(PoolVMRow.vm_id.in_(ids[i:i + 500]))):
            if vm_id is not None:
                out[int(vm_id)] = str(vo)
    return out


def users_vms(s: Session, vm_ids: Iterable[int]) -> set[int]:
    """The VMs among ``vm_ids`` whose owner is not an administrator."""
    ids = list(vm_ids)
    out: set[int] = set()
    for i in range(0, len(ids), 500):
        out.update(int(v) for v in s.scalars(
            select(VM.id).join(User, User.id == VM.owner_id)
            .where(VM.id.in_(ids[i:i + 500])).where(User.is_admin.is_(False))))
    return out


def cloud_room(s: Session) -> dict[str, int]:
    """Pool VO -> cloud workers it may still add (its burst limit minus those it runs)."""
    split = worker_split(s)
    return {vo: max(int(limit or 0) - split.get(pid, (0, 0))[1], 0)
            for pid, vo, limit in s.execute(select(PoolRow.id, PoolRow.vo, PoolRow.burst_limit))}


def record_bursts(s: Session, reasons: dict[int, str], at: float) -> None:
    """A ``burst`` pool event for each pool worker the scheduler sent beyond the site, with the
    reason (``pool events`` then says why each cloud worker was booted)."""
    if not reasons:
        return
    ids = list(reasons)
    for vm_id, pool_id in s.execute(select(PoolVMRow.vm_id, PoolVMRow.pool_id)
                                    .where(PoolVMRow.vm_id.in_(ids))):
        s.add(PoolEventRow(pool_id=pool_id, time=at, action="burst", count=1, vm_id=vm_id,
                           reason=reasons[int(vm_id or 0)][:2000]))
