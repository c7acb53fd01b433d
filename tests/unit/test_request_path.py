"""The REST request path's shared pieces (docs/performance.md, "REST request path"): the audit
group commit, the SQLite writers' lock across processes, the prebuilt quota charge."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vocloud.api.common import Who
from vocloud.errors import QuotaExceeded
from vocloud.service import capacity
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import AuditRow, Quota


def _store(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'vocloud.db'}")
    migrate.upgrade(db)
    return db


def test_concurrent_audit_records_are_all_written_once(tmp_path: Path) -> None:
    db = _store(tmp_path)
    cloud = Cloud(db)
    actors = [Actor(i + 100, f"u{i}", 1, False) for i in range(16)]
    writes = 0
    real_write = db.write

    def counting_write():  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return real_write()

    db.write = counting_write  # type: ignore[method-assign]
    start = threading.Barrier(len(actors))

    def calls(a: Actor) -> None:
        start.wait()
        for n in range(25):
            cloud.audit.record(a, "vms.create", f"vm {n}")

    threads = [threading.Thread(target=calls, args=(a,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    db.write = real_write  # type: ignore[method-assign]
    with db.read() as s:
        rows = s.execute(select(AuditRow.user_name, AuditRow.obj)).all()
    assert Counter(rows) == Counter((a.name, f"vm {n}") for a in actors for n in range(25))
    assert writes <= len(rows)  # grouped when they met; never more than one each
    db.dispose()


def test_a_failed_audit_write_releases_every_waiter(tmp_path: Path) -> None:
    db = _store(tmp_path)
    cloud = Cloud(db)

    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("store gone")

    db.write = broken  # type: ignore[method-assign]
    done: list[int] = []

    def call(i: int) -> None:
        cloud.audit.record(Actor(1, "admin", 0, True), "vms.create")
        done.append(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(done) == list(range(8))  # nobody hangs; the calls are not failed by it


def test_the_writer_lock_counts_its_transactions_waits_and_holds(tmp_path: Path) -> None:
    db = _store(tmp_path)
    n0, wait0, hold0 = db.writer_stats() or (0, 0.0, 0.0)
    with db.enclosing_write(), db.write():  # the inner joins: one transaction, one hold
        time.sleep(0.05)
    with db.write():
        pass
    first = threading.Event()

    def other() -> None:
        with db.write():
            first.set()
            time.sleep(0.1)

    t = threading.Thread(target=other)
    t.start()
    assert first.wait(10)
    with db.write():  # waits ~0.1 s for the other thread's hold
        pass
    t.join(10)
    n, wait, hold = db.writer_stats() or (0, 0.0, 0.0)
    assert n - n0 == 4
    assert 0.15 <= hold - hold0 < 5
    assert 0.03 <= wait - wait0 < 5
    db.dispose()


def _hold(path: str, ready: multiprocessing.synchronize.Event, hold_s: float) -> None:
    db = Database(f"sqlite:///{path}")
    with db.write():
        ready.set()
        time.sleep(hold_s)
    db.dispose()


def test_writers_of_two_processes_queue_on_the_file_lock(tmp_path: Path) -> None:
    db = _store(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path / "vocloud.db"), ready, 1.0))
    p.start()
    try:
        assert ready.wait(30)
        t = time.monotonic()
        with db.write() as s:  # waits for the other process's writer, then goes at once
            waited = time.monotonic() - t
            s.execute(select(1))
        assert 0.5 < waited < 5
        assert (tmp_path / "vocloud.db-wlock").stat().st_mode & 0o077 == 0
    finally:
        p.join(30)
    lock = db._write_lock
    assert lock is not None  # nested in one thread: the file lock is taken once, kept to the end
    assert lock.acquire(1) and lock.acquire(1)
    lock.release()
    fd = os.open(tmp_path / "vocloud.db-wlock", os.O_RDWR)
    with pytest.raises(BlockingIOError):  # still held by the outer acquire
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.release()
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    os.close(fd)
    db.dispose()


def test_the_prebuilt_quota_charge_is_exact_and_creates_a_missing_row(tmp_path: Path) -> None:
    db = _store(tmp_path)
    with db.write() as s:
        capacity.charge_quota(s, "user", 42, "bob", 1, 1000, 512)  # no row yet: unlimited
        s.add(Quota(scope="user", scope_id=43, vms_limit=2))
    with db.write() as s:
        capacity.charge_quota(s, "user", 43, "eve", 2, 2000, 256)
    with pytest.raises(QuotaExceeded, match=r"user eve quota exceeded: VMs 2\+1 > 2"), db.write() as s:
        capacity.charge_quota(s, "user", 43, "eve", 1, 1000, 256)
    with db.read() as s:
        used = dict(s.execute(select(Quota.scope_id, Quota.vms_used)).all())
        assert used == {42: 1, 43: 2}
        assert s.scalar(select(func.count()).select_from(Quota)) == 2
    db.dispose()


# ------------------------------------------------------------------ record in the call's transaction
def _admin_and_user(cloud: Cloud) -> tuple[Actor, Actor]:
    from vocloud.service.auth import SYSTEM
    from vocloud.store.schema import User

    cloud.accounts.bootstrap()
    with cloud.db.read() as s:
        admin_row = s.scalars(select(User)).one()
    admin = Actor(admin_row.id, admin_row.name, admin_row.group_id, True)
    vo = cloud.accounts.create_group(SYSTEM, "vo-a")
    u = cloud.accounts.create_user(SYSTEM, "carol", vo["id"])
    return admin, Actor(int(u["id"]), "carol", int(vo["id"]), False)


def _commits(db: Database) -> list[int]:
    from sqlalchemy import event

    seen: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: seen.append(1))
    return seen


def test_a_create_and_its_record_commit_in_one_transaction(tmp_path: Path) -> None:
    db = _store(tmp_path)
    cloud = Cloud(db)
    _admin, carol = _admin_and_user(cloud)
    commits = _commits(db)
    ids = cloud.vms.create(carol, "CPU=1\nMEMORY=64\n", count=2, name="w")
    term = cloud.vms.action(carol, ids[0], "terminate")
    assert term["id"] == ids[0]
    assert len(commits) == 2  # one each: the call's work and its record together
    with db.read() as s:
        rows = s.execute(select(AuditRow.action, AuditRow.obj, AuditRow.result)
                         .where(AuditRow.user_name == "carol").order_by(AuditRow.id)).all()
    assert [tuple(r) for r in rows] == [("vms.create", f"vms {ids[0]},{ids[1]}", "ok"),
                                        ("vms.action", f"vms {ids[0]}", "ok")]
    db.dispose()


def test_the_call_checks_its_input_before_it_takes_the_writer_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's template is parsed and checked outside the store's writer lock, inside the
    audit's enclosing block as on its own: a large hostile template holds up no other writer."""
    from vocloud.service import vms

    db = _store(tmp_path)
    cloud = Cloud(db)
    _admin, carol = _admin_and_user(cloud)
    seen: list[int] = []
    real_parse = vms.parse_template  # type: ignore[attr-defined]

    def parse(*a: Any, **k: Any) -> Any:
        seen.append((db.writer_stats() or (0, 0.0, 0.0))[0])
        return real_parse(*a, **k)

    monkeypatch.setattr(vms, "parse_template", parse)
    before = (db.writer_stats() or (0, 0.0, 0.0))[0]
    cloud.vms.create(carol, "CPU=1\nMEMORY=64\n")
    assert seen and seen[0] == before  # no write transaction begun while it was parsed
    assert (db.writer_stats() or (0, 0.0, 0.0))[0] == before + 1  # then one, record included
    db.dispose()


def test_a_record_that_cannot_be_written_takes_the_call_with_it(tmp_path: Path) -> None:
    from vocloud.store.schema import VM

    db = _store(tmp_path)
    cloud = Cloud(db)
    _admin, carol = _admin_and_user(cloud)

    def broken(*_a: Any) -> None:
        raise RuntimeError("audit table gone")

    cloud.audit._in_call = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="audit table gone"):
        cloud.vms.create(carol, "CPU=1\nMEMORY=64\n")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 0  # no VM without its record
        assert s.scalar(select(Quota.vms_used).where(Quota.scope == "user")) in (None, 0)
        failed = s.execute(select(AuditRow.action, AuditRow.result)).all()
    assert [tuple(r) for r in failed] == [("vms.create", "InternalError")]
    db.dispose()


def test_a_refused_call_is_rolled_back_and_still_recorded(tmp_path: Path) -> None:
    from vocloud.errors import Forbidden, NotFound
    from vocloud.store.schema import VM

    db = _store(tmp_path)
    cloud = Cloud(db)
    admin, carol = _admin_and_user(cloud)
    mine = cloud.vms.create(admin, "CPU=1\nMEMORY=64\n")[0]
    cloud.accounts.set_quota(admin, "user", "carol", vms=1)
    cloud.vms.create(carol, "CPU=1\nMEMORY=64\n")
    with pytest.raises(QuotaExceeded):
        cloud.vms.create(carol, "CPU=1\nMEMORY=64\n")
    with pytest.raises((Forbidden, NotFound)):  # the administrator's VM is not carol's
        cloud.vms.action(carol, mine, "terminate")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 2
        assert s.scalar(select(VM.state).where(VM.id == mine)) != "DONE"
        rows = s.execute(select(AuditRow.action, AuditRow.result)
                         .where(AuditRow.user_name == "carol").order_by(AuditRow.id)).all()
    assert [tuple(r) for r in rows] == [("vms.create", "ok"), ("vms.create", "QuotaExceeded"),
                                        ("vms.action", rows[2][1])]
    assert rows[2][1] in ("Forbidden", "NotFound")
    db.dispose()


def test_only_single_transaction_calls_on_the_audits_own_store_join_it(tmp_path: Path) -> None:
    from vocloud.service import audit

    db = _store(tmp_path)
    cloud = Cloud(db)
    assert {"vms.create", "vms.action"} == audit.IN_CALL_TRANSACTION
    other = Database(f"sqlite:///{tmp_path / 'vocloud.db'}")
    svc = type(cloud.vms)(other)
    cloud.audit.instrument(svc, "vms")
    _admin, carol = _admin_and_user(cloud)
    done: list[list[int]] = []
    t = threading.Thread(target=lambda: done.append(svc.create(carol, "CPU=1\nMEMORY=64\n")))
    t.start()
    t.join(20)  # another Database object: its own transaction, no wait on the audit's lock
    assert done and len(done[0]) == 1
    other.dispose()
    db.dispose()


# ------------------------------------------------------------------ one threadpool hop
def _app_client(tmp_path: Path) -> tuple[Cloud, str, Any]:
    from fastapi.testclient import TestClient

    from vocloud.api.rest import create_app
    from vocloud.service.auth import SYSTEM

    cloud = Cloud(_store(tmp_path))
    cloud.accounts.bootstrap()
    token = str(cloud.accounts.new_token(SYSTEM, "admin")["token"])
    return cloud, token, TestClient(create_app(cloud))


def test_authentication_runs_in_the_routes_own_thread_call(tmp_path: Path) -> None:
    cloud, token, client = _app_client(tmp_path)
    seen: dict[str, int] = {}
    real_auth, real_list = cloud.authenticate_with, cloud.hosts.list

    def auth(credentials: Any) -> Any:
        seen["auth"] = threading.get_ident()
        return real_auth(credentials)

    def listing(actor: Any) -> Any:
        seen["route"] = threading.get_ident()
        assert isinstance(actor, Actor) and actor.name == "admin"  # an Actor, never the pending one
        return real_list(actor)

    cloud.authenticate_with = auth  # type: ignore[method-assign]
    cloud.hosts.list = listing  # type: ignore[method-assign]
    with client:
        assert client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # refused credentials: the route never runs
        seen.clear()
        bad = client.get("/api/v1/hosts", headers={"Authorization": "Bearer vc_nope"})
        assert bad.status_code == 401 and "route" not in seen
    cloud.db.dispose()
    assert seen["auth"] != threading.get_ident()


def test_credentials_are_checked_before_the_body(tmp_path: Path) -> None:
    """A request with bad credentials *and* a bad body is refused as unauthenticated (401), as
    when authentication ran before validation; with good credentials the body's error shows."""
    cloud, token, client = _app_client(tmp_path)
    with client:
        for headers in ({}, {"Authorization": "Bearer vc_nope"}, {"Authorization": "Basic eA=="}):
            r = client.post("/api/v1/vms", json={"count": "many"}, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            r = client.get("/api/v1/vms/notanid", headers=headers)
            assert r.status_code == 401, (headers, r.text)
        r = client.post("/api/v1/vms", json={"count": "many"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400 and "count" in r.json()["message"]
    cloud.db.dispose()


def test_a_who_route_outside_one_hop_is_refused_at_construction(tmp_path: Path) -> None:
    from fastapi import APIRouter, FastAPI

    from vocloud.api.common import OneHopRoute, check_one_hop

    for fails in (True, False):
        r = APIRouter() if fails else APIRouter(route_class=OneHopRoute)

        @r.get("/x")
        def x(who: Who) -> str:
            return who.name

        app = FastAPI()
        app.include_router(r)
        if fails:
            with pytest.raises(RuntimeError, match="OneHopRoute"):
                check_one_hop(app)
        else:
            check_one_hop(app)


def test_the_write_routes_authenticate_in_their_group_commit_call(tmp_path: Path) -> None:
    """POST /vms and POST /vms/{id}/action take no worker thread: the credentials are checked
    in the call the group commit runs, before the service is called; refused, nothing runs."""
    cloud, token, client = _app_client(tmp_path)
    seen: dict[str, str] = {}
    real_auth, real_create = cloud.authenticate_with, cloud.vms.create

    def auth(credentials: Any) -> Any:
        seen["auth"] = threading.current_thread().name
        return real_auth(credentials)

    def create(actor: Any, *a: Any, **k: Any) -> Any:
        seen["create"] = threading.current_thread().name
        assert isinstance(actor, Actor) and actor.name == "admin"
        return real_create(actor, *a, **k)

    cloud.authenticate_with = auth  # type: ignore[method-assign]
    cloud.vms.create = create  # type: ignore[method-assign]
    good = {"Authorization": f"Bearer {token}"}
    with client:
        r = client.post("/api/v1/vms", json={"template": "CPU=1\nMEMORY=64\n"}, headers=good)
        assert r.status_code == 201, r.text
        vm = r.json()["ids"][0]
        assert seen == {"auth": "vocloud-group-commit", "create": "vocloud-group-commit"}
        r = client.post(f"/api/v1/vms/{vm}/action", json={"action": "terminate"}, headers=good)
        assert r.status_code == 200 and r.json()["id"] == vm
        calls = cloud.group_commit.calls
        seen.clear()
        for headers in ({}, {"Authorization": "Bearer vc_nope"}):
            r = client.post("/api/v1/vms", json={"template": "CPU=1\nMEMORY=64\n"}, headers=headers)
            assert r.status_code == 401 and "create" not in seen, r.text
            r = client.post(f"/api/v1/vms/{vm}/action", json={"action": "hold"}, headers=headers)
            assert r.status_code == 401, r.text
        assert cloud.group_commit.calls == calls  # refused before any write
    cloud.db.dispose()


def test_a_write_whose_caller_left_before_it_began_is_not_done(tmp_path: Path) -> None:
    import asyncio

    cloud = Cloud(_store(tmp_path))
    gate, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        gate.wait()

    first = threading.Thread(target=lambda: cloud.group_commit.run(hold))
    first.start()
    assert held.wait(10)
    ran: list[int] = []

    async def leave() -> None:
        future = cloud.group_commit.submit(lambda: ran.append(1))
        assert future is not None  # SQLite: a group commit
        task = asyncio.ensure_future(asyncio.wrap_future(future))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(leave())
    gate.set()
    first.join(10)
    assert cloud.group_commit.run(lambda: 7) == 7  # the writer goes on
    assert ran == []
    cloud.db.dispose()


def test_a_batch_reads_each_credential_once(tmp_path: Path) -> None:
    """The calls of one group-commit batch authenticate before its transaction opens, one after
    another: one credential is read once for them all, another credential on its own, and a
    bad one is refused in every call that sends it (a refusal is never remembered)."""
    import asyncio

    from vocloud.api.common import PendingActor, in_group_commit
    from vocloud.errors import Unauthorized
    from vocloud.service.auth import SYSTEM, Credentials

    cloud = Cloud(_store(tmp_path))
    admin_token = cloud.accounts.bootstrap()
    vo = cloud.accounts.create_group(SYSTEM, "vo-a")
    carol_token = cloud.accounts.create_user(SYSTEM, "carol", vo["id"])["token"]
    reads: list[str] = []
    real_auth = cloud.authenticate_with

    def auth(credentials: Any) -> Any:
        reads.append(credentials.value)
        return real_auth(credentials)

    cloud.authenticate_with = auth  # type: ignore[method-assign]
    tokens = [admin_token, carol_token, admin_token, "vc_nope", admin_token, carol_token, "vc_nope"]
    gate, held = threading.Event(), threading.Event()

    def hold() -> None:  # the writer thread busy: the calls below queue into one batch
        held.set()
        gate.wait()

    first = threading.Thread(target=lambda: cloud.group_commit.run(hold))
    first.start()
    assert held.wait(10)

    async def calls() -> list[Any]:
        def whose(actor: Actor) -> str:
            with cloud.db.write():  # a write: the call joins the batch's transaction
                return actor.name

        pending = [asyncio.ensure_future(in_group_commit(
            cloud, PendingActor(cloud, Credentials("bearer", t or "")), whose)) for t in tokens]
        await asyncio.sleep(0.2)
        gate.set()
        return list(await asyncio.gather(*pending, return_exceptions=True))

    batches = cloud.group_commit.batches
    out = asyncio.run(calls())
    first.join(10)
    assert out[:3] == ["admin", "carol", "admin"] and out[4:6] == ["admin", "carol"]
    assert isinstance(out[3], Unauthorized) and isinstance(out[6], Unauthorized)
    assert cloud.group_commit.batches == batches + 1  # the five that write, in one batch
    assert sorted(reads) == sorted([admin_token, carol_token, "vc_nope", "vc_nope"])
    cloud.db.dispose()
