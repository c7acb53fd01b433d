"""Host capacity and quota accounting, done with conditional UPDATEs.

Each change is a single ``UPDATE ... WHERE <still fits>`` whose row count says whether it won.
That is atomic on SQLite and PostgreSQL alike, so two transactions racing for the last core of a
host (or the last VM of a quota) cannot both succeed, whatever their isolation level.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.orm import Session

from vocloud.errors import InvalidInput, NoCapacity, QuotaExceeded
from vocloud.model.vmspec import cpu_centi
from vocloud.store.bulk import execute_dml
from vocloud.store.deferred import Deferred, deferred_in
from vocloud.store.schema import Host, Quota
from vocloud.store.sets import among


def cores(milli: int) -> float:
    return milli / 1000.0


#: The most CPU any quantity may hold, in cores (a BIGINT of milli-cores holds far more; this
#: keeps sums of many such values inside it too).
MAX_CORES = 1_000_000_000


def milli(cpu: float) -> int:
    """Cores to milli-cores. NaN, infinities and absurd sizes are refused (``round`` would raise
    on the first two, and the store cannot hold the last)."""
    if cpu != cpu or not -MAX_CORES <= cpu <= MAX_CORES:
        raise InvalidInput(f"CPU must be a finite number of at most {MAX_CORES} cores, got {cpu!r}")
    return round(cpu * 1000)


MAX_QUOTA_VMS = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
MAX_QUOTA_CPU = 10**12  # cores; thousandths of it still fit a 64-bit column
MAX_QUOTA_MEM = 1 << 40  # MiB (1 EiB): far beyond any site, and sums of it fit 64 bits


def quota_cpu_m(cpu: float) -> int:
    """A CPU quota limit in thousandths: -1 (unlimited), 0, or at least 0.01 rounded *up* to a
    hundredth, the same fixed point as a VM's CPU, so a limit never rounds to "nothing left"
    and never below what a VM of that size needs. NaN and infinities are refused.
    """
    if not math.isfinite(cpu):
        raise InvalidInput(f"quota cpu must be a finite number, got {cpu!r}", attribute="cpu")
    if cpu == -1:
        return -1
    if cpu < 0:
        raise InvalidInput(f"quota cpu must be >= 0 or -1 (unlimited), got {cpu!r}", attribute="cpu")
    if cpu > MAX_QUOTA_CPU:
        raise InvalidInput(f"quota cpu must be at most {MAX_QUOTA_CPU}, got {cpu!r}", attribute="cpu")
    if cpu == 0:
        return 0
    return cpu_centi(repr(cpu), "quota cpu") * 10


def quota_int(label: str, value: int, ceiling: int) -> int:
    """A VMs or memory quota limit: -1 (unlimited) or 0..ceiling."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"quota {label} must be an integer, got {value!r}", attribute=label)
    if value < -1 or value > ceiling:
        raise InvalidInput(f"quota {label} must be -1 (unlimited) or between 0 and {ceiling}, "
                           f"got {value}", attribute=label)
    return value


def acquire_host(session: Session, host_id: int, cpu_m: int, mem: int) -> bool:
    """Reserve capacity on a host; False if it no longer fits (someone else got there first)."""
    stmt = (
        update(Host)
        .where(Host.id == host_id)
        .where(Host.alloc_cpu_m + cpu_m <= Host.total_cpu_m)
        .where(Host.alloc_mem + mem <= Host.total_mem)
        .values(
            alloc_cpu_m=Host.alloc_cpu_m + cpu_m,
            alloc_mem=Host.alloc_mem + mem,
            running_vms=Host.running_vms + 1,
        )
        .execution_options(synchronize_session=False)
    )
    res: CursorResult[tuple[()]] = session.execute(stmt)  # type: ignore[assignment]
    return res.rowcount == 1


def acquire_host_or_raise(session: Session, host: Host, cpu_m: int, mem: int) -> None:
    if not acquire_host(session, host.id, cpu_m, mem):
        session.refresh(host)
        raise NoCapacity(
            f"host {host.name} has {cores(host.total_cpu_m - host.alloc_cpu_m):g} CPU and "
            f"{host.total_mem - host.alloc_mem} MiB free; {cores(cpu_m):g} CPU and {mem} MiB needed"
        )


def lock_hosts(session: Session, host_ids: Iterable[int]) -> None:
    """PostgreSQL: lock these host rows in id order, before a transaction changes several of
    them. Why: an UPDATE locks rows in its plan's order (over a small table, a hash join: the
    heap's order), so the scheduler taking capacity on some hosts and the lifecycle freeing it
    on others could lock two hosts in opposite orders; the server broke each such cycle only
    after its 1 s ``deadlock_timeout``, with both loops' VM rows held that long (issue 15: the
    REST mix at loops 0.2 s, p99 380-580 ms). ``FOR NO KEY UPDATE``: what an UPDATE of the
    row takes anyway, so foreign-key checks (``FOR KEY SHARE``, an event naming the host) do
    not wait. SQLite admits one writer at a time: nothing to order."""
    ids = sorted(set(host_ids))
    if not ids or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(select(Host.id).where(among(session, Host.id, ids))
                    .order_by(Host.id).with_for_update(key_share=True)).all()


def release_host(session: Session, host_id: int, cpu_m: int, mem: int) -> None:
    """Free one VM's share of its host (the statement :func:`release_hosts` runs per host)."""
    execute_dml(session, _RELEASE_MANY, {"h_id": host_id, "h_cpu_m": cpu_m, "h_mem": mem, "h_vms": 1})


#: A host's share of one or many VMs, freed (:func:`release_host`, :func:`release_hosts`).
_RELEASE_MANY = (
    update(Host)
    .where(Host.id == bindparam("h_id"))
    .values(
        alloc_cpu_m=Host.alloc_cpu_m - bindparam("h_cpu_m"),
        alloc_mem=Host.alloc_mem - bindparam("h_mem"),
        running_vms=Host.running_vms - bindparam("h_vms"),
    )
    .execution_options(synchronize_session=False)
)


def release_hosts(session: Session, shares: Iterable[tuple[int, int, int]]) -> None:
    """Free the ``(host_id, cpu_m, mem)`` shares of many VMs that end together: summed per
    host, one statement per host in one executemany, host by host in id order (the order every
    writer locks hosts in on PostgreSQL). The same sums :func:`release_host` takes a VM at a
    time, without a statement per VM (issue 15: a lifecycle pass ending 150 VMs one by one held
    SQLite's writer lock ~150 ms, the REST mix's slowest requests)."""
    per: dict[int, list[int]] = {}
    for host_id, cpu_m, mem in shares:
        acc = per.setdefault(host_id, [0, 0, 0])
        acc[0] += cpu_m
        acc[1] += mem
        acc[2] += 1
    if per:
        session.flush()
        session.connection().execute(_RELEASE_MANY, [
            {"h_id": host_id, "h_cpu_m": cpu_m, "h_mem": mem, "h_vms": n}
            for host_id, (cpu_m, mem, n) in sorted(per.items())])


def ensure_quota(session: Session, scope: str, scope_id: int) -> None:
    exists = session.scalar(
        select(Quota.id).where(Quota.scope == scope).where(Quota.scope_id == scope_id)
    )
    if exists is None:
        session.add(Quota(scope=scope, scope_id=scope_id))
        session.flush()


#: The conditional charge, built once (it runs twice per VM create: building the expression
#: tree each time cost more CPU than executing it).
_CHARGE = (
    update(Quota)
    .where(Quota.scope == bindparam("q_scope"))
    .where(Quota.scope_id == bindparam("q_scope_id"))
    .where((Quota.vms_limit < 0) | (Quota.vms_used + bindparam("q_vms") <= Quota.vms_limit))
    .where((Quota.cpu_m_limit < 0) | (Quota.cpu_m_used + bindparam("q_cpu_m") <= Quota.cpu_m_limit))
    .where((Quota.mem_limit < 0) | (Quota.mem_used + bindparam("q_mem") <= Quota.mem_limit))
    .values(
        vms_used=Quota.vms_used + bindparam("q_vms"),
        cpu_m_used=Quota.cpu_m_used + bindparam("q_cpu_m"),
        mem_used=Quota.mem_used + bindparam("q_mem"),
    )
    .execution_options(synchronize_session=False)
)


#: A quota row's usage and limits, unlocked (a PostgreSQL batch's check, :func:`charge_quota`).
_USAGE = (
    select(Quota.vms_used, Quota.vms_limit, Quota.cpu_m_used, Quota.cpu_m_limit, Quota.mem_used,
           Quota.mem_limit)
    .where(Quota.scope == bindparam("q_scope"))
    .where(Quota.scope_id == bindparam("q_scope_id"))
)


def charge_quota(session: Session, scope: str, scope_id: int, name: str,
                 vms: int, cpu_m: int, mem: int, lock: bool = False) -> None:
    """Add usage if it stays within every limit, else raise QuotaExceeded naming the limit.
    The charge is tried first; only when it does not apply is the row looked at (a missing
    row is created, unlimited, and the charge tried again). Callers charge last: the row stays
    locked until their commit (``store/deferred.py``). In a group-commit batch on PostgreSQL
    the charge waits for the batch's end instead (:func:`_charge_in_batch`), unless ``lock``:
    a caller that relies on the row's lock to serialize one user's creates (EC2's
    ClientToken, ``vms.create``'s ``within``)."""
    params = {"q_scope": scope, "q_scope_id": scope_id, "q_vms": vms, "q_cpu_m": cpu_m, "q_mem": mem}
    deferred = None if lock else deferred_in(session)
    if deferred is not None and deferred.in_batch and _charge_in_batch(
            session, deferred, params, name):
        return
    res: CursorResult[tuple[()]] = execute_dml(session, _CHARGE, params)
    if res.rowcount == 1:
        return
    q = session.scalars(
        select(Quota).where(Quota.scope == scope).where(Quota.scope_id == scope_id)
    ).first()
    if q is None:
        ensure_quota(session, scope, scope_id)
        res = execute_dml(session, _CHARGE, params)
        if res.rowcount == 1:
            return
        q = session.scalars(
            select(Quota).where(Quota.scope == scope).where(Quota.scope_id == scope_id)
        ).one()
    session.refresh(q)
    parts = _over(q.vms_used, q.vms_limit, q.cpu_m_used, q.cpu_m_limit, q.mem_used, q.mem_limit,
                  vms, cpu_m, mem)
    raise QuotaExceeded(f"{scope} {name} quota exceeded: {parts or 'limit reached'}",
                        scope=scope, scope_id=scope_id)


def _charge_in_batch(session: Session, deferred: Deferred, params: dict[str, Any],
                     name: str) -> bool:
    """A batch's charge: checked against the quota row (read once per batch) plus the batch's
    sum so far, then added to that sum, written at the batch's end conditionally
    (:func:`_write_sums`): a stale check costs a rerun, never a wrong sum. False if the row
    does not exist yet (the caller creates and charges it at once)."""
    scope, scope_id = params["q_scope"], params["q_scope_id"]
    key = (scope, scope_id)
    row = deferred.read.get((_QUOTA_KIND, key))
    if row is None:
        session.flush()
        found = session.connection().execute(_USAGE, params).first()
        if found is None:
            return False
        row = deferred.read[(_QUOTA_KIND, key)] = tuple(found)
    vms_used, vms_limit, cpu_m_used, cpu_m_limit, mem_used, mem_limit = row
    vms, cpu_m, mem = params["q_vms"], params["q_cpu_m"], params["q_mem"]
    pend = deferred.pending(_QUOTA_KIND, key, 3)
    parts = _over(vms_used + pend[0], vms_limit, cpu_m_used + pend[1], cpu_m_limit,
                  mem_used + pend[2], mem_limit, vms, cpu_m, mem)
    if parts is not None:
        raise QuotaExceeded(f"{scope} {name} quota exceeded: {parts}", scope=scope,
                            scope_id=scope_id)
    deferred.add(_QUOTA_KIND, key, (vms, cpu_m, mem), _write_sums)
    return True


def _over(vms_used: int, vms_limit: int, cpu_m_used: int, cpu_m_limit: int, mem_used: int,
          mem_limit: int, vms: int, cpu_m: int, mem: int) -> str | None:
    """What a charge would exceed (one clause per limit, for the error), None if it fits."""
    parts = []
    if vms_limit >= 0 and vms_used + vms > vms_limit:
        parts.append(f"VMs {vms_used}+{vms} > {vms_limit}")
    if cpu_m_limit >= 0 and cpu_m_used + cpu_m > cpu_m_limit:
        parts.append(f"CPU {cores(cpu_m_used):g}+{cores(cpu_m):g} > {cores(cpu_m_limit):g}")
    if mem_limit >= 0 and mem_used + mem > mem_limit:
        parts.append(f"MEMORY {mem_used}+{mem} > {mem_limit} MiB")
    return ", ".join(parts) if parts else None


#: The refund (every VM that ends, twice): built once, as the charge.
_REFUND = (
    update(Quota)
    .where(Quota.scope == bindparam("q_scope"))
    .where(Quota.scope_id == bindparam("q_scope_id"))
    .values(
        vms_used=Quota.vms_used - bindparam("q_vms"),
        cpu_m_used=Quota.cpu_m_used - bindparam("q_cpu_m"),
        mem_used=Quota.mem_used - bindparam("q_mem"),
    )
    .execution_options(synchronize_session=False)
)


def refund_quota(session: Session, scope: str, scope_id: int, vms: int, cpu_m: int, mem: int) -> None:
    _refund(session, {(scope, scope_id): [vms, cpu_m, mem]})


#: The order of quota rows' locks (see :func:`refund_quotas`).
_QUOTA_LOCK_ORDER = {"user": 0, "group": 1}


def refund_quotas(session: Session, refunds: Iterable[tuple[str, int, int, int]]) -> None:
    """Refund ``(scope, scope_id, cpu_m, mem)`` of one VM each, for many VMs at once: summed per
    quota row, one executemany. The same totals :func:`refund_quota` gives a VM at a time, and
    the rows in the order every writer locks quota rows on PostgreSQL: users' before groups'
    (a create charges its user, then its group), each by id. Groups first deadlocked with
    creates (bench_scale --rest on PostgreSQL, session 13)."""
    per: dict[tuple[str, int], list[int]] = {}
    for scope, scope_id, cpu_m, mem in refunds:
        acc = per.setdefault((scope, scope_id), [0, 0, 0])
        acc[0] += 1
        acc[1] += cpu_m
        acc[2] += mem
    _refund(session, per)


def _refund(session: Session, per: dict[tuple[str, int], list[int]]) -> None:
    """Refund ``[vms, cpu_m, mem]`` per quota row: on PostgreSQL at the commit, last
    (``store/deferred.py``); on SQLite now, in lock order, one executemany."""
    if not per:
        return
    deferred = deferred_in(session)
    if deferred is not None:
        for key, (vms, cpu_m, mem) in per.items():
            deferred.add(_QUOTA_KIND, key, (-vms, -cpu_m, -mem), _write_sums)
        return
    session.flush()
    session.connection().execute(_REFUND, [
        {"q_scope": scope, "q_scope_id": scope_id, "q_vms": vms, "q_cpu_m": cpu_m, "q_mem": mem}
        for (scope, scope_id), (vms, cpu_m, mem) in sorted(per.items(), key=_lock_order)])


def _lock_order(item: tuple[tuple[str, int], object]) -> tuple[int, int]:
    (scope, scope_id), _ = item
    return _QUOTA_LOCK_ORDER[scope], scope_id


#: :class:`Deferred` kind of the quota sums
_QUOTA_KIND = "quota"


def _write_sums(session: Session, sums: dict[Hashable, list[int]]) -> None:
    """A PostgreSQL transaction's quota sums, at its commit, row by row in lock order: a net refund
    unconditionally (as a refund alone), a net charge only if it still fits; if it no longer
    does (another process charged the row since the batch's calls read it), the batch fails and
    its calls run again alone, each charged at once."""
    rows = sorted(((key, acc) for key, acc in sums.items() if isinstance(key, tuple)),
                  key=_lock_order)
    conn = session.connection()
    for (scope, scope_id), (vms, cpu_m, mem) in rows:
        if vms == cpu_m == mem == 0:
            continue
        params = {"q_scope": scope, "q_scope_id": scope_id}
        if vms <= 0 and cpu_m <= 0 and mem <= 0:
            conn.execute(_REFUND, {**params, "q_vms": -vms, "q_cpu_m": -cpu_m, "q_mem": -mem})
            continue
        res = conn.execute(_CHARGE, {**params, "q_vms": vms, "q_cpu_m": cpu_m, "q_mem": mem})
        if res.rowcount != 1:
            raise QuotaRace(f"{scope} {scope_id}: the batch's quota charge no longer fits")


class QuotaRace(RuntimeError):
    """A batch's summed charge no longer fits its quota row: the batch is run again call by
    call (never seen by a caller)."""


# ---------------------------------------------------------------- image repository bytes (0004)
def image_room(session: Session, scope: str, scope_id: int) -> int | None:
    """MiB still free under a user's or group's image quota; None when unlimited."""
    q = session.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == scope_id)).first()
    if q is None or q.image_mib_limit < 0:
        return None
    return max(0, q.image_mib_limit - q.image_mib_used)


def charge_images(session: Session, scope: str, scope_id: int, name: str, mib: int) -> None:
    """Add ``mib`` of image files if it stays within the limit, else QuotaExceeded (conditional
    UPDATE, as for VMs: two uploads racing for the last GiB cannot both win)."""
    ensure_quota(session, scope, scope_id)
    stmt = (
        update(Quota)
        .where(Quota.scope == scope)
        .where(Quota.scope_id == scope_id)
        .where((Quota.image_mib_limit < 0) | (Quota.image_mib_used + mib <= Quota.image_mib_limit))
        .values(image_mib_used=Quota.image_mib_used + mib)
        .execution_options(synchronize_session=False)
    )
    res: CursorResult[tuple[()]] = session.execute(stmt)  # type: ignore[assignment]
    if res.rowcount == 1:
        return
    q = session.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == scope_id)).one()
    session.refresh(q)
    raise QuotaExceeded(f"{scope} {name} quota exceeded: IMAGES {q.image_mib_used}+{mib} > "
                        f"{q.image_mib_limit} MiB", scope=scope, scope_id=scope_id)


def refund_images(session: Session, scope: str, scope_id: int, mib: int) -> None:
    session.execute(
        update(Quota)
        .where(Quota.scope == scope)
        .where(Quota.scope_id == scope_id)
        .values(image_mib_used=Quota.image_mib_used - mib)
        .execution_options(synchronize_session=False)
    )
