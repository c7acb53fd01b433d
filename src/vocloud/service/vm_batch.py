"""Set-based state changes for many VMs at once: the loops' fast path (issue 15).

Why: carrying out 10,000 scheduling decisions one transaction, one ORM load and one flush per VM
took 99.6 % of the time to bring 10,000 VMs to RUNNING. These functions apply the *same* lifecycle
table (:func:`~vocloud.model.lifecycle.vm_next`) and the *same* invariants as
:func:`vocloud.service.vms.transition`, but as a few statements per chunk:

* :func:`apply_reports` - loop results (``prolog_ok``, ``boot_ok``, ...), each still a
  compare-and-set on the state the loop saw. A move whose only effect is on the VM's own columns
  is one ``UPDATE ... WHERE id IN (...) AND state = <seen>`` plus one multi-row event insert; any
  other move (one that takes or frees host capacity, refunds quota, records an error) goes
  through ``transition`` for that VM, inside a savepoint, exactly as ``VMService.report`` does.
  On PostgreSQL a VM whose row another transaction holds (a user's call) is skipped (``SKIP
  LOCKED``): the next pass polls it again and reports afresh, so the loop never queues behind a
  request, nor requests behind the rows the loop locked before it queued.
* :func:`schedule` - the scheduler's placements: still-PENDING VMs are locked, host capacity is
  taken with one conditional ``UPDATE`` per host for all its VMs together (``alloc + sum <=
  total``, atomic on both databases, as ``capacity.acquire_host``), and only if that fails are the
  host's VMs tried one by one, so a lost race leaves exactly the VMs that no longer fit PENDING.

On PostgreSQL every transaction here that changes several hosts locks them first, in id order
(:func:`capacity.lock_hosts`; the monitor's pass, ``hosts.report_probes``, too), so no two of
them (the scheduler, the lifecycle's ends and moves with side effects) wait for each other's
host rows in a cycle.

Everything runs in the caller's write transaction: a chunk commits whole or not at all.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from vocloud.errors import VocloudError
from vocloud.model.lifecycle import FAILURES, HOLDS_HOST, TRANSIENT, VMState, vm_next
from vocloud.service import capacity, ipam
from vocloud.store import bulk
from vocloud.store.schema import VM, Event, Host
from vocloud.store.sets import among

log = logging.getLogger("vocloud.service")

#: rows per ``IN (...)`` list: far below SQLite's 32,766 bound variables and PostgreSQL's 65,535
CHUNK = 500
T = TypeVar("T")
#: What :func:`end_rows` needs of each VM (and the template, for :func:`may_name_image`).
_END_COLUMNS = (VM.id, VM.host_id, VM.owner_id, VM.group_id, VM.cpu_m, VM.memory, VM.template)
_MAY_NAME_IMAGE = re.compile("image", re.IGNORECASE)
#: ``vms.transition``: the one per-VM path, passed in (that module builds on this one)
Transition = Callable[[Session, VM, str, str, float], VMState]


@dataclass(frozen=True)
class Report:
    """One loop result: ``event`` for ``vm_id``, applied only if it is still ``expected``."""

    vm_id: int
    expected: VMState
    event: str
    message: str = ""


def chunks(items: Sequence[T], n: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def columns_only(old: VMState, new: VMState, event: str) -> bool:
    """True when ``transition`` would change nothing but the VM's own state columns: no host
    capacity taken or freed (HOLDS_HOST unchanged, no MIGRATE target), no DONE (leases, quota,
    images), no error text (which is per VM)."""
    return (old != VMState.MIGRATE and (old in HOLDS_HOST) == (new in HOLDS_HOST)
            and new != VMState.DONE and not event.endswith("_fail") and new not in FAILURES)


def column_values(new: VMState, event: str, at: float) -> dict[str, Any]:
    """The columns ``transition`` sets on a :func:`columns_only` move, as UPDATE values."""
    values: dict[str, Any] = {"state": new.value, "state_changed_at": at, "step_attempts": 0}
    if new in TRANSIENT:
        values["hard"] = event.endswith("-hard")
    if new == VMState.RUNNING:
        values["error"] = ""
        values["started_at"] = func.coalesce(VM.started_at, at)
    return values


#: What a user's action on one VM reads first (:func:`move_columns_of_one`): the VM's state, the
#: ACL's owner and group, and what the answer shows. Locked on PostgreSQL (``FOR UPDATE OF vms``:
#: not the outer join's host), as ``find(..., lock=True)`` locks it.
_ONE_VM = (
    select(*_END_COLUMNS, VM.name, VM.state, Host.name.label("host_name"))
    .outerjoin(Host, Host.id == VM.host_id)
    .where(VM.id == bindparam("one_id"))
    .with_for_update(of=VM)
)


def one_vm(s: Session, vm_id: int) -> Any:
    """The row of :data:`_ONE_VM` for ``vm_id``, or None."""
    return s.connection().execute(_ONE_VM, {"one_id": vm_id}).first()


def move_columns_of_one(s: Session, row: Any, old: VMState, new: VMState, event: str,
                        message: str, at: float) -> None:
    """``transition`` for one VM on a :func:`columns_only` move (``row``: from :func:`one_vm`,
    in this transaction): one compare-and-set UPDATE and one event, no ORM load or flush. Why:
    a user's terminate of a running VM spent ~1 ms in the ORM's unit of work, most of its time
    in SQLite's writer lock (docs/performance.md, session 13). A copy of this VM in the
    session's identity map is expired, so a later ORM read sees the new state."""
    s.flush()
    res = s.connection().execute(
        update(VM).where(VM.id == row.id).where(VM.state == old.value)
        .values(**column_values(new, event, at)))
    if res.rowcount != 1:  # the row is locked (PostgreSQL) or the writer is alone (SQLite)
        raise RuntimeError(f"VM {row.id} changed under its row lock")
    _expire(s, (row.id,))
    insert_events(s, _event_rows([(row.id, row.host_id, message)], event, old, new, at))


def _event_rows(rows: Iterable[tuple[int, int | None, str]], event: str, old: VMState,
                new: VMState, at: float) -> list[dict[str, Any]]:
    return [{"time": at, "kind": "vm", "obj_id": vm_id, "action": event, "from_state": old.value,
             "to_state": new.value, "message": msg[:2000], "host_id": host_id}
            for vm_id, host_id, msg in rows]


def insert_events(s: Session, rows: list[dict[str, Any]]) -> None:
    """Many event rows in one statement: PostgreSQL COPY (a few: one INSERT), SQLite one executemany
    (``store/bulk.py``; the ORM's bulk insert spent more time preparing rows than the database
    spent storing them, and psycopg's executemany is still one INSERT per row)."""
    bulk.insert_rows(s, Event.__table__, rows)  # type: ignore[arg-type]


def apply_reports(s: Session, reports: Sequence[Report], at: float,
                  transition: Transition) -> set[int]:
    """Apply loop results in ``s``; returns the ids of the VMs that moved. ``transition`` is
    ``vms.transition``, used for every move with side effects. A result whose VM is locked by
    another transaction (PostgreSQL) is dropped: the steps are idempotent and the next pass
    reports it again if it still holds. Why: at loops every 0.2 s a lifecycle statement that
    waited on one request's VM held the rest of its chunk meanwhile, and the requests that
    wanted those queued behind it (REST mix p99 380-480 ms, docs/performance.md, session 16)."""
    moved: set[int] = set()
    groups: dict[tuple[VMState, str], list[Report]] = defaultdict(list)
    for r in reports:
        groups[(r.expected, r.event)].append(r)
    for (old, event), group in groups.items():
        try:
            new = vm_next(group[0].vm_id, old, event)
        except VocloudError as exc:  # a loop bug: report() would raise the same for each VM
            log.warning("%d VMs: %s", len(group), exc.message)
            continue
        if ends_plainly(old, new, event):
            moved |= _end_many(s, group, old, new, event, at, transition)
            continue
        if not columns_only(old, new, event):
            moved |= _one_by_one(s, group, at, transition)
            continue
        msgs = {r.vm_id: r.message for r in group}
        for part in chunks(sorted(msgs)):
            rows = s.execute(select(VM.id, VM.host_id).where(among(s, VM.id, part))
                             .where(VM.state == old.value)
                             .with_for_update(skip_locked=True)).all()
            if not rows:
                continue
            ids = [vm_id for vm_id, _ in rows]
            s.execute(update(VM).where(among(s, VM.id, ids)).where(VM.state == old.value)
                      .values(**column_values(new, event, at))
                      .execution_options(synchronize_session=False))
            insert_events(s, _event_rows(((i, h, msgs[i]) for i, h in rows), event, old, new, at))
            moved.update(ids)
    return moved


def ends_plainly(old: VMState, new: VMState, event: str) -> bool:
    """True for a move into DONE whose effects ``transition`` would apply the same way to every
    VM: its host share freed, its quota refunded, its leases dropped, its end time set. Not from
    MIGRATE (two hosts' shares) nor by a failure event (an error text per VM)."""
    return new == VMState.DONE and old != VMState.MIGRATE and not event.endswith("_fail")


def _end_many(s: Session, group: Sequence[Report], old: VMState, new: VMState, event: str,
              at: float, transition: Transition) -> set[int]:
    """VMs still in ``old`` move to DONE with ``transition``'s effects, as a few statements per
    chunk (:func:`end_rows`). Why: the REST mix's terminates end ~150 VMs a second, and one
    ``transition`` per VM held SQLite's writer lock for ~150 ms a lifecycle pass, every other
    write waiting (docs/performance.md, session 13)."""
    moved: set[int] = set()
    per_vm: set[int] = set()
    msgs = {r.vm_id: r.message for r in group}
    locked = [s.execute(select(*_END_COLUMNS).where(among(s, VM.id, part))
                        .where(VM.state == old.value).with_for_update(skip_locked=True)).all()
              for part in chunks(sorted(msgs))]
    if old in HOLDS_HOST:  # all their hosts in id order, not chunk by chunk (lock_hosts)
        capacity.lock_hosts(s, (row.host_id for rows in locked for row in rows
                                if row.host_id is not None))
    for rows in locked:
        plain = []
        for row in rows:
            if may_name_image(row.template):
                per_vm.add(row.id)
            else:
                plain.append(row)
        end_rows(s, plain, old, new, event, msgs, at)
        moved.update(row.id for row in plain)
    if per_vm:
        moved |= _one_by_one(s, [r for r in group if r.vm_id in per_vm], at, transition)
    return moved


def may_name_image(template: str | None) -> bool:
    """True if a stored template may name an image (``vms._image_ids`` reads DISK IMAGE_ID and
    KERNEL_IMAGE/INITRD_IMAGE): such a VM's end also frees its images, in ``transition``, one
    VM at a time. A superset test: at worst a VM without images takes that path."""
    return template is not None and _MAY_NAME_IMAGE.search(template) is not None


def end_rows(s: Session, rows: Sequence[Any], old: VMState, new: VMState, event: str,
             msgs: Mapping[int, str], at: float) -> None:
    """``transition``'s move into DONE (:func:`ends_plainly`) for VMs locked in this transaction
    in state ``old`` whose templates name no image (``rows``: :data:`_END_COLUMNS`): the rows,
    their hosts' shares (summed per host), their owners' and groups' quotas (summed per row),
    their leases, their events (message ``msgs[id]``), a few statements in all."""
    if not rows:
        return
    ids = [row.id for row in rows]
    s.flush()
    res = s.connection().execute(
        update(VM).where(among(s, VM.id, ids)).where(VM.state == old.value)
        .values(state=new.value, state_changed_at=at, step_attempts=0, ended_at=at))
    if res.rowcount != len(ids):  # the rows are locked (PostgreSQL) or the writer is alone
        raise RuntimeError(f"{len(ids) - res.rowcount} of {len(ids)} VMs changed under their lock")
    _expire(s, ids)
    if old in HOLDS_HOST:
        capacity.release_hosts(s, ((row.host_id, row.cpu_m, row.memory)
                                   for row in rows if row.host_id is not None))
    ipam.release_vms(s, ids)
    insert_events(s, _event_rows(((row.id, row.host_id, msgs[row.id]) for row in rows),
                                 event, old, new, at))
    # last: the quota rows every create and end of these owners' VMs waits on (vms.create)
    capacity.refund_quotas(s, [(scope, scope_id, row.cpu_m, row.memory) for row in rows
                               for scope, scope_id in (("user", row.owner_id),
                                                       ("group", row.group_id))])


def _expire(s: Session, ids: Iterable[int]) -> None:
    """Copies of these VMs in the session's identity map are expired after a Core UPDATE, so a
    later ORM read in the same transaction (a group-commit batch's next call) sees the rows."""
    for vm_id in ids:
        cached = s.identity_map.get(s.identity_key(VM, vm_id))
        if cached is not None:
            s.expire(cached)


def _one_by_one(s: Session, group: Sequence[Report], at: float,
                transition: Transition) -> set[int]:
    """The moves with side effects: ``transition`` per VM, each in its own savepoint so one VM's
    refusal (no capacity left, say) leaves the others' results standing. On PostgreSQL the VMs
    not held elsewhere are locked first, then their hosts, each in id order
    (:func:`capacity.lock_hosts`), so this pass and the scheduler never lock two hosts in
    opposite orders."""
    moved: set[int] = set()
    if s.get_bind().dialect.name == "postgresql":  # the VMs, then their hosts, each in id order
        held: set[int] = set()
        hosts: set[int] = set()
        for part in chunks(sorted({r.vm_id for r in group})):
            rows = s.execute(select(VM.id, VM.host_id, VM.target_host_id)
                             .where(among(s, VM.id, part)).order_by(VM.id)
                             .with_for_update(skip_locked=True)).all()
            held.update(row.id for row in rows)
            hosts.update(h for row in rows for h in row[1:] if h is not None)
        capacity.lock_hosts(s, hosts)
        group = [r for r in group if r.vm_id in held]
    for r in group:
        try:
            with s.begin_nested():
                vm = s.get(VM, r.vm_id, with_for_update=True)
                if vm is None or vm.state != r.expected.value:
                    continue
                transition(s, vm, r.event, r.message, at)
                moved.add(r.vm_id)
        except VocloudError as exc:
            log.warning("VM %s (%s): %s", r.vm_id, r.expected, exc.message)
    return moved


def schedule(s: Session, placements: Sequence[tuple[int, int]], at: float,
             reasons: Mapping[int, str] | None = None) -> dict[int, str]:
    """Move still-PENDING VMs to their hosts (``scheduled``: PENDING -> PROLOG, taking host
    capacity). Returns ``{vm_id: why}`` for the VMs that lost a race for their host (they stay
    PENDING and are retried next cycle); VMs no longer PENDING are skipped silently."""
    lost: dict[int, str] = {}
    wanted = dict(placements)
    # every host of the placements in id order, before any chunk (lock_hosts); the VMs' rows,
    # taken after them, are skipped when held, never waited for
    capacity.lock_hosts(s, wanted.values())
    for part in chunks(sorted(wanted)):
        # SKIP LOCKED (PostgreSQL): a VM whose row a user's call holds (its terminate, its hold)
        # is left for the next pass instead of waited for — the scheduler never queues behind
        # a request, nor makes requests queue behind the locks it took while it waited
        rows = s.execute(select(VM.id, VM.cpu_m, VM.memory).where(among(s, VM.id, part))
                         .where(VM.state == VMState.PENDING.value)
                         .with_for_update(skip_locked=True)).all()
        by_host: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for vm_id, cpu_m, mem in rows:
            vm_next(vm_id, VMState.PENDING, "scheduled")  # the table decides, as in transition
            by_host[wanted[vm_id]].append((vm_id, cpu_m, mem))
        placed: list[tuple[int, int]] = []
        if _acquire_every_host(s, by_host):
            placed = [(vm_id, host_id) for host_id, vms in by_host.items() for vm_id, _, _ in vms]
            by_host = {}
        for host_id, vms in sorted(by_host.items()):
            if _acquire_all(s, host_id, vms):
                placed += [(vm_id, host_id) for vm_id, _, _ in vms]
                continue
            for vm_id, cpu_m, mem in vms:  # part of them may still fit
                if capacity.acquire_host(s, host_id, cpu_m, mem):
                    placed.append((vm_id, host_id))
                else:
                    lost[vm_id] = f"lost a race for host {host_id}: it has no room left"
        if placed:
            new = VMState.PROLOG
            _set_hosts(s, placed, new, at)
            insert_events(s, _event_rows(
                ((vm_id, host_id, (reasons or {}).get(vm_id, f"to host {host_id}"))
                 for vm_id, host_id in placed),
                "scheduled", VMState.PENDING, new, at))
    if lost:
        for part in chunks(sorted(lost)):
            s.execute(update(VM), [{"id": i, "sched_message": lost[i]} for i in part])
    return lost


def _set_hosts(s: Session, placed: Sequence[tuple[int, int]], new: VMState, at: float) -> None:
    """The placed VMs' rows (locked, still PENDING): host, state and clock. PostgreSQL: one
    ``UPDATE ... FROM unnest(ids, hosts)`` for the chunk (psycopg's executemany is one UPDATE
    per row, each a round of the pipeline and a plan); SQLite: one prepared UPDATE run by
    ``executemany`` in-process (the ORM's bulk path cost more than the SQL)."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text(
            "UPDATE vms SET host_id = p.host_id, state = :state, sched_message = '', "
            "state_changed_at = :at, step_attempts = 0, hard = false "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:hosts AS integer[])) AS p(id, host_id) "
            "WHERE vms.id = p.id"),
            {"state": new.value, "at": at, "ids": [v for v, _ in placed],
             "hosts": [h for _, h in placed]})
        return
    vt: Table = VM.__table__  # type: ignore[assignment]
    conn.execute(
        update(vt).where(vt.c.id == bindparam("b_id")).values(
            host_id=bindparam("b_host"), state=new.value, sched_message="",
            state_changed_at=at, step_attempts=0, hard=False),
        [{"b_id": vm_id, "b_host": host_id} for vm_id, host_id in placed])


#: ``_acquire_every_host`` on PostgreSQL: each host's conditional UPDATE (``alloc + sum <=
#: total``) for all hosts of a chunk in one statement; its row count is the number that fit.
_ACQUIRE_PG = text(
    "UPDATE hosts SET alloc_cpu_m = hosts.alloc_cpu_m + p.cpu, alloc_mem = hosts.alloc_mem + p.mem, "
    "running_vms = hosts.running_vms + p.n "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:cpu AS bigint[]), CAST(:mem AS bigint[]), "
    "CAST(:n AS integer[])) AS p(id, cpu, mem, n) "
    "WHERE hosts.id = p.id AND hosts.alloc_cpu_m + p.cpu <= hosts.total_cpu_m "
    "AND hosts.alloc_mem + p.mem <= hosts.total_mem")


def _acquire_every_host(s: Session, by_host: dict[int, list[tuple[int, int, int]]]) -> bool:
    """The common case in one go: every host still has room for all its VMs. The statement is
    the same conditional UPDATE as :func:`_acquire_all` (SQLite: an executemany; PostgreSQL: one
    ``UPDATE ... FROM unnest(...)`` for all the hosts, not one statement per host); if the total
    row count says any host refused, the savepoint is rolled back and the caller goes host by
    host. Only where the driver reports exact executemany row counts (SQLite, psycopg)."""
    if len(by_host) < 2 or not s.get_bind().dialect.supports_sane_multi_rowcount:
        return False
    t: Table = Host.__table__  # type: ignore[assignment]
    stmt = (update(t).where(t.c.id == bindparam("h_id"))
            .where(t.c.alloc_cpu_m + bindparam("h_cpu") <= t.c.total_cpu_m)
            .where(t.c.alloc_mem + bindparam("h_mem") <= t.c.total_mem)
            .values(alloc_cpu_m=t.c.alloc_cpu_m + bindparam("h_cpu"),
                    alloc_mem=t.c.alloc_mem + bindparam("h_mem"),
                    running_vms=t.c.running_vms + bindparam("h_n")))
    params = [{"h_id": h, "h_cpu": sum(v[1] for v in vms), "h_mem": sum(v[2] for v in vms),
               "h_n": len(vms)} for h, vms in sorted(by_host.items())]
    nested = s.begin_nested()
    conn = s.connection()
    if conn.dialect.name == "postgresql":  # the same conditions, one statement for all hosts
        res = conn.execute(_ACQUIRE_PG, {
            "ids": [p["h_id"] for p in params], "cpu": [p["h_cpu"] for p in params],
            "mem": [p["h_mem"] for p in params], "n": [p["h_n"] for p in params]})
    else:
        res = conn.execute(stmt, params)
    if res.rowcount == len(params):
        nested.commit()
        return True
    nested.rollback()
    return False


def _acquire_all(s: Session, host_id: int, vms: Sequence[tuple[int, int, int]]) -> bool:
    """Take the capacity of all ``vms`` on the host in one conditional UPDATE, or none of it."""
    cpu_m = sum(v[1] for v in vms)
    mem = sum(v[2] for v in vms)
    stmt = (update(Host).where(Host.id == host_id)
            .where(Host.alloc_cpu_m + cpu_m <= Host.total_cpu_m)
            .where(Host.alloc_mem + mem <= Host.total_mem)
            .values(alloc_cpu_m=Host.alloc_cpu_m + cpu_m, alloc_mem=Host.alloc_mem + mem,
                    running_vms=Host.running_vms + len(vms))
            .execution_options(synchronize_session=False))
    res: CursorResult[tuple[()]] = s.execute(stmt)  # type: ignore[assignment]
    return res.rowcount == 1
