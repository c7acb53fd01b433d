"""Group commit on PostgreSQL (store/deferred.py): quota rows written at the commit, last; a
batch call that would wait on a row lock run again alone after the batch; a batch whose summed
charge no longer fits run again call by call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import func, select, text

from tests.support.pgserver import PgServer
from tests.unit.test_group_commit import _cloud as group_commit_cloud
from tests.unit.test_group_commit import _one_batch
from vocloud.errors import QuotaExceeded
from vocloud.model.lifecycle import HOLDS_HOST
from vocloud.model.lifecycle import VMState as S
from vocloud.service import capacity
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import HostSpec
from vocloud.service.vm_batch import Report
from vocloud.store.db import Database
from vocloud.store.schema import VM, AuditRow, Host, Quota

TEMPLATE = "CPU=1\nMEMORY=64\n"
_n = iter(range(1_000_000))


def _cloud(pg_server: PgServer) -> tuple[Cloud, Actor, Actor, str]:
    url = pg_server.create_db(f"pgb_{next(_n)}")
    return (*group_commit_cloud(url), url)


def _used(cloud: Cloud, scope: str, scope_id: int) -> int:
    with cloud.db.read() as s:
        return int(s.scalar(select(Quota.vms_used).where(Quota.scope == scope,
                                                         Quota.scope_id == scope_id)) or 0)


def test_a_call_that_meets_a_locked_row_runs_alone_after_its_batch(pg_server: PgServer) -> None:
    """carol's terminate meets her VM's row locked by another transaction: the batch's other
    calls commit without waiting for it, and the terminate is run again alone afterwards,
    once the row is free — done once, recorded once, never as an error."""
    cloud, _admin, carol, _url = _cloud(pg_server)
    vm_id = cloud.vms.create(carol, TEMPLATE)[0]
    holder = cloud.db.engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM vms WHERE id = :i FOR UPDATE"), {"i": vm_id})
    out: list[list[tuple[bool, Any]]] = []
    runner = threading.Thread(target=lambda: out.append(_one_batch(cloud, [
        lambda: cloud.vms.create(carol, TEMPLATE, name="a"),
        lambda: cloud.vms.action(carol, vm_id, "terminate"),
        lambda: cloud.vms.create(carol, TEMPLATE, name="b")])))
    runner.start()
    deadline = time.monotonic() + 20
    names: list[str] = []
    while time.monotonic() < deadline:  # the batch committed while the row is still held
        with cloud.db.read() as s:
            names = sorted(s.scalars(select(VM.name).where(VM.name.in_(["a", "b"]))))
        if names == ["a", "b"]:
            break
        time.sleep(0.05)
    assert names == ["a", "b"], "the batch waited for the locked row"
    assert runner.is_alive()  # the terminate, alone now, waits for the row
    assert cloud.group_commit.retried == 1
    tx.commit()
    holder.close()
    runner.join(30)
    assert not runner.is_alive()
    results = out[0]
    assert all(good for good, _ in results), results
    with cloud.db.read() as s:
        state = s.scalar(select(VM.state).where(VM.id == vm_id))
        records = s.execute(select(AuditRow.action, AuditRow.result)
                            .where(AuditRow.user_name == "carol")).all()
    assert state == "DONE"  # a pending VM's terminate
    assert sorted(r.result for r in records if r.action == "vms.action") == ["ok"]
    assert _used(cloud, "user", carol.user_id) == 2  # a and b; the terminated VM refunded
    cloud.db.dispose()


def test_a_batch_whose_summed_charge_no_longer_fits_runs_its_calls_alone(
        pg_server: PgServer) -> None:
    """Two creates in one batch fit carol's quota of 2 as the batch read it; meanwhile another
    process creates one of hers. At the batch's end the sum no longer fits: the batch is rolled
    back and its calls run alone, so exactly one of them is refused and the quota is exact."""
    cloud, admin, carol, url = _cloud(pg_server)
    cloud.accounts.set_quota(admin, "user", "carol", vms=2)
    other = Cloud(Database(url))  # another front-end process on the same database
    injected: list[int] = []

    def another_process_creates() -> None:
        with cloud.db.write():  # parked: it runs once the batch is open, after x's and y's reads
            if not injected:
                injected.extend(other.vms.create(carol, TEMPLATE, name="elsewhere"))

    def create(name: str) -> Callable[[], list[int]]:
        return lambda: cloud.vms.create(carol, TEMPLATE, name=name)

    batches0 = cloud.group_commit.batches
    out = _one_batch(cloud, [create("x"), create("y"), another_process_creates])
    assert cloud.group_commit.batches == batches0  # that batch did not commit
    refused = [r for good, r in out if not good]
    assert len(refused) == 1 and isinstance(refused[0], QuotaExceeded), out
    with cloud.db.read() as s:
        live = s.scalar(select(func.count()).select_from(VM).where(
            VM.owner_id == carol.user_id, VM.state != "DONE"))
    assert live == 2 and _used(cloud, "user", carol.user_id) == 2
    assert _used(cloud, "group", carol.group_id) == 2
    other.db.dispose()
    cloud.db.dispose()


def test_charges_in_a_batch_are_checked_against_the_row_plus_the_batch(
        pg_server: PgServer) -> None:
    """In a batch no charge is written before the commit; a later call is still checked
    against what the batch's earlier calls charged, and a refused call's share is dropped."""
    cloud, admin, carol, _url = _cloud(pg_server)
    cloud.accounts.set_quota(admin, "user", "carol", vms=3)

    def create_then_fail() -> None:  # its VM is charged, then the call fails: no charge left
        with cloud.db.write():
            cloud.vms.create(carol, TEMPLATE, name="ghost")
            raise RuntimeError("after the charge")

    batches0 = cloud.group_commit.batches
    out = _one_batch(cloud, [
        lambda: cloud.vms.create(carol, TEMPLATE, count=2),
        lambda: cloud.vms.create(carol, TEMPLATE, count=2),  # 2 + 2 > 3
        lambda: cloud.vms.create(carol, "CPU=1\nMEMORY=64\nNO_SUCH=1\n"),  # refused by its check
        create_then_fail,
        lambda: cloud.vms.create(carol, TEMPLATE)])  # 2 + 1 = 3
    assert [good for good, _ in out] == [True, False, False, False, True], out
    assert isinstance(out[1][1], QuotaExceeded) and "VMs 2+2 > 3" in out[1][1].message
    assert cloud.group_commit.batches == batches0 + 1  # decided in the batch, not on a rerun
    assert _used(cloud, "user", carol.user_id) == 3
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VM).where(VM.name == "ghost")) == 0
        records = sorted(s.execute(select(AuditRow.result).where(
            AuditRow.user_name == "carol", AuditRow.action == "vms.create")).scalars())
    # the batch's records go in at its end: the ghost's "ok" went with its call
    assert records == ["InvalidInput", "QuotaExceeded", "ok", "ok"], records
    cloud.db.dispose()


def test_a_refund_is_written_at_the_commit_so_the_row_stays_free_until_then(
        pg_server: PgServer) -> None:
    """Outside a batch too, a refund is the transaction's last statement: another writer can
    lock the quota row while the refunding transaction still does other work."""
    cloud, _admin, carol, _url = _cloud(pg_server)
    cloud.vms.create(carol, TEMPLATE)
    assert _used(cloud, "user", carol.user_id) == 1
    with cloud.db.write() as s:
        capacity.refund_quota(s, "user", carol.user_id, 1, 1000, 64)
        with cloud.db.engine.connect() as other:  # would fail if the row were locked
            other.execute(text("SET lock_timeout = '200ms'"))
            other.execute(text("SELECT id FROM quotas WHERE scope = 'user' AND scope_id = :u "
                               "FOR UPDATE"), {"u": carol.user_id})
            other.rollback()
        assert s.scalar(select(Quota.vms_used).where(
            Quota.scope == "user", Quota.scope_id == carol.user_id)) == 1  # not yet
    assert _used(cloud, "user", carol.user_id) == 0
    cloud.db.dispose()


R = TypeVar("R")


def _while_held(cloud: Cloud, vm_ids: list[int], who: str, fn: Callable[[], R]) -> R:
    """``fn()``'s answer, called in a thread while another transaction holds these VMs' rows
    (as a user's call does); fails if it is still waiting 10 s later."""
    holder = cloud.db.engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM vms WHERE id = ANY(:i) FOR UPDATE"), {"i": vm_ids})
    out: list[R] = []
    runner = threading.Thread(target=lambda: out.append(fn()))
    runner.start()
    runner.join(10)
    try:
        assert not runner.is_alive(), f"{who} waited for a held row"
    finally:
        tx.rollback()
        holder.close()
        runner.join(30)
    assert len(out) == 1, f"{who} failed"
    return out[0]


def test_the_scheduler_leaves_a_vm_whose_row_a_request_holds_for_its_next_pass(
        pg_server: PgServer) -> None:
    """The scheduler neither waits for a user's call holding a PENDING VM's row (its
    terminate, its hold) nor makes other calls wait behind the rows it locked meanwhile: the
    held VM is skipped this pass, the others placed, and the next pass places it."""
    cloud, admin, carol, _url = _cloud(pg_server)
    [host] = cloud.hosts.create_many(admin, [HostSpec("sk1", cpu=8, memory=8192)])
    held, free = cloud.vms.create(carol, TEMPLATE, count=2)
    out = _while_held(cloud, [held], "the scheduler", lambda: cloud.vms.schedule_many(
        [(held, host["id"]), (free, host["id"])]))
    assert out == {}  # nothing lost a race: the held VM was left, not refused
    with cloud.db.read() as s:
        states = {i: st for i, st in s.execute(select(VM.id, VM.state).where(VM.id.in_([held, free])))}
        alloc = s.scalar(select(Host.running_vms).where(Host.id == host["id"]))
    assert states == {held: "PENDING", free: "PROLOG"} and alloc == 1
    assert cloud.vms.schedule_many([(held, host["id"])]) == {}
    with cloud.db.read() as s:
        assert s.scalar(select(VM.state).where(VM.id == held)) == "PROLOG"
        assert s.scalar(select(Host.running_vms).where(Host.id == host["id"])) == 2
    cloud.db.dispose()


def _wait_for_a_lock_wait(url_conn: Any, timeout: float = 10.0) -> None:
    """Until a backend of this database waits on a lock (the code under test has queued)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if url_conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar():
            return
        time.sleep(0.02)
    raise AssertionError("nothing queued on a lock")


def test_the_lifecycle_leaves_vms_whose_rows_a_request_holds_for_its_next_pass(
        pg_server: PgServer) -> None:
    """Loop results for VMs whose rows a user's call holds are left for the next pass, on all
    three paths (a columns-only move, a move with side effects, an end), and the others are
    applied without waiting. Before: the lifecycle's statement waited for the held row while
    holding the rest of its chunk, and requests queued behind it (REST mix, loops 0.2 s)."""
    cloud, admin, carol, _url = _cloud(pg_server)
    [host] = cloud.hosts.create_many(admin, [HostSpec("lk1", cpu=16, memory=16384)])
    ids = cloud.vms.create(carol, TEMPLATE, count=6)
    assert cloud.vms.schedule_many([(i, host["id"]) for i in ids]) == {}
    ending = ids[4:]
    for state, event in ((S.PROLOG, "prolog_ok"), (S.BOOT, "boot_ok")):
        assert cloud.vms.report_many([Report(i, state, event) for i in ending]) == set(ending)
    for vm_id in ending:
        cloud.vms.action(carol, vm_id, "terminate")
    assert cloud.vms.report_many([Report(i, S.SHUTDOWN, "shutdown_ok") for i in ending]) == set(ending)
    reports = [Report(ids[0], S.PROLOG, "prolog_ok"), Report(ids[1], S.PROLOG, "prolog_ok"),
               Report(ids[2], S.PROLOG, "prolog_fail", "disk"),
               Report(ids[3], S.PROLOG, "prolog_fail", "disk"),
               Report(ids[4], S.EPILOG, "epilog_ok"), Report(ids[5], S.EPILOG, "epilog_ok")]
    held = [ids[0], ids[2], ids[4]]
    out = _while_held(cloud, held, "the lifecycle", lambda: cloud.vms.report_many(reports))
    assert out == {ids[1], ids[3], ids[5]}

    def states() -> list[str]:
        with cloud.db.read() as s:
            got = {i: st for i, st in s.execute(select(VM.id, VM.state).where(VM.id.in_(ids)))}
        return [got[i] for i in ids]

    assert states() == ["PROLOG", "BOOT", "PROLOG", "PROLOG_FAILURE", "EPILOG", "DONE"]
    assert cloud.vms.report_many([r for r in reports if r.vm_id in held]) == set(held)
    final = states()
    assert final == ["BOOT", "BOOT", "PROLOG_FAILURE", "PROLOG_FAILURE", "DONE", "DONE"]
    with cloud.db.read() as s:
        running = s.scalar(select(Host.running_vms).where(Host.id == host["id"]))
    assert running == sum(S(st) in HOLDS_HOST for st in final)
    assert _used(cloud, "user", carol.user_id) == 4
    cloud.db.dispose()


def test_the_scheduler_takes_its_hosts_in_id_order(pg_server: PgServer) -> None:
    """A transaction holding host 1 that then asks for host 2 (id order: the lifecycle's ends,
    the monitor) never meets the scheduler holding host 2 while it waits for host 1, though
    the scheduler's VMs, and the heap, put host 2 first. Before: the scheduler's UPDATE locked
    in its plan's order, and PostgreSQL broke the cycle only after ``deadlock_timeout`` (1 s),
    both transactions' rows held all that time."""
    cloud, admin, carol, _url = _cloud(pg_server)
    h1, h2 = (h["id"] for h in cloud.hosts.create_many(
        admin, [HostSpec("od1", cpu=8, memory=8192), HostSpec("od2", cpu=8, memory=8192)]))
    first, second = cloud.vms.create(carol, TEMPLATE, count=2)
    holder = cloud.db.engine.connect()
    watcher = cloud.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder.execute(text("UPDATE hosts SET error = error WHERE id = :i"), {"i": h1})  # heap: 2, 1
    holder.commit()
    tx = holder.begin()
    holder.execute(text("SET LOCAL lock_timeout = '5s'"))
    holder.execute(text("SELECT id FROM hosts WHERE id = :i FOR NO KEY UPDATE"), {"i": h1})
    out: list[dict[int, str]] = []
    runner = threading.Thread(
        target=lambda: out.append(cloud.vms.schedule_many([(first, h2), (second, h1)])))
    runner.start()
    try:
        _wait_for_a_lock_wait(watcher)
        t0 = time.monotonic()
        holder.execute(text("SELECT id FROM hosts WHERE id = :i FOR NO KEY UPDATE"), {"i": h2})
        waited = time.monotonic() - t0
        tx.commit()
    finally:
        if tx.is_active:
            tx.rollback()
        holder.close()
        watcher.close()
        runner.join(30)
    assert waited < 0.5, f"host 2 was held by the scheduler for {waited:.2f} s"
    assert out == [{}]
    with cloud.db.read() as s:
        assert set(s.scalars(select(VM.state).where(VM.id.in_([first, second])))) == {"PROLOG"}
        assert s.scalar(select(func.sum(Host.running_vms))) == 2
    cloud.db.dispose()


def test_a_pass_leaves_out_the_shutdown_notes_of_vms_a_request_holds(pg_server: PgServer) -> None:
    """The lifecycle's shutdown notes (``bump_attempts``) do not wait for a VM's row a request
    holds either: that VM's note is left out (the next pass sends the request again), the
    others' are written."""
    cloud, admin, carol, _url = _cloud(pg_server)
    [host] = cloud.hosts.create_many(admin, [HostSpec("bn1", cpu=8, memory=8192)])
    ids = cloud.vms.create(carol, TEMPLATE, count=2)
    assert cloud.vms.schedule_many([(i, host["id"]) for i in ids]) == {}
    for state, event in ((S.PROLOG, "prolog_ok"), (S.BOOT, "boot_ok")):
        assert cloud.vms.report_many([Report(i, state, event) for i in ids]) == set(ids)
    for vm_id in ids:
        cloud.vms.action(carol, vm_id, "terminate")
    notes = [Report(i, S.SHUTDOWN, "", "shutdown sent") for i in ids]
    _while_held(cloud, [ids[0]], "the shutdown notes", lambda: cloud.vms.bump_attempts(notes))

    def attempts() -> list[int]:
        with cloud.db.read() as s:
            got = {i: n for i, n in s.execute(select(VM.id, VM.step_attempts).where(VM.id.in_(ids)))}
        return [got[i] for i in ids]

    assert attempts() == [0, 1]
    cloud.vms.bump_attempts(notes)
    assert attempts() == [1, 2]
    cloud.db.dispose()
