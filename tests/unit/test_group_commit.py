"""The group commit (store/group_commit.py): many callers' create and act calls in one
transaction, each call all or nothing, checked outside the writer lock, recorded as alone —
on SQLite and, where the test takes ``db_url``, on PostgreSQL too (its batches' own rules:
tests/integration/test_pg_batches.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from vocloud.errors import Forbidden, NotFound, QuotaExceeded
from vocloud.service import audit
from vocloud.service.auth import SYSTEM, Actor
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import VM, AuditRow, Quota, User

TEMPLATE = "CPU=1\nMEMORY=64\n"


def _cloud(tmp_path: Path | str) -> tuple[Cloud, Actor, Actor]:
    """A store with an admin and carol of VO vo-a: SQLite in ``tmp_path``, or the database at
    the URL ``tmp_path`` (the ``db_url`` fixture: both databases)."""
    db = Database(tmp_path if isinstance(tmp_path, str) else f"sqlite:///{tmp_path / 'vocloud.db'}")
    migrate.upgrade(db)
    cloud = Cloud(db)
    cloud.accounts.bootstrap()
    with db.read() as s:
        row = s.scalars(select(User)).one()
    admin = Actor(row.id, row.name, row.group_id, True)
    vo = cloud.accounts.create_group(SYSTEM, "vo-a")
    u = cloud.accounts.create_user(SYSTEM, "carol", vo["id"])
    return cloud, admin, Actor(int(u["id"]), "carol", int(vo["id"]), False)


def _commits(db: Database) -> list[int]:
    seen: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: seen.append(1))
    return seen


def _one_batch(cloud: Cloud, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    """Run ``calls`` from threads of their own so that they land in one batch: the writer
    thread is held on a first call until all of them queued."""
    gate, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        gate.wait()

    first = threading.Thread(target=lambda: cloud.group_commit.run(hold))
    first.start()
    assert held.wait(10)  # the writer thread runs the first call's batch: the others queue
    deadline = time.monotonic() + 10
    out: list[tuple[bool, Any]] = [(False, None)] * len(calls)

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            out[i] = (True, cloud.group_commit.run(fn))
        except Exception as exc:
            out[i] = (False, exc)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    while cloud.group_commit._queue.qsize() < len(calls) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cloud.group_commit._queue.qsize() == len(calls), "the calls did not queue"
    gate.set()
    for t in [first, *threads]:
        t.join(30)
    return out


def test_one_batch_commits_once_and_each_call_gets_its_own_outcome(db_url: str) -> None:
    cloud, admin, carol = _cloud(db_url)
    theirs = cloud.vms.create(admin, TEMPLATE)[0]
    cloud.accounts.set_quota(admin, "user", "carol", vms=2)
    commits = _commits(cloud.db)
    batches0 = cloud.group_commit.batches
    out = _one_batch(cloud, [
        lambda: cloud.vms.create(carol, TEMPLATE, name="a"),
        lambda: cloud.vms.action(carol, theirs, "terminate"),  # not hers
        lambda: cloud.vms.create(carol, TEMPLATE, name="b"),
        lambda: cloud.vms.create(carol, TEMPLATE, name="c"),  # over her quota of 2
        lambda: cloud.vms.create(carol, "CPU=1\nMEMORY=64\nNO_SUCH=1\n"),  # refused by its check
    ])
    assert cloud.group_commit.batches == batches0 + 1  # these five (the held call wrote nothing)
    assert len(commits) == 1
    ok = [r for good, r in out if good]
    assert len(ok) == 2 and all(len(ids) == 1 for ids in ok)
    assert isinstance(out[1][1], (Forbidden, NotFound))
    assert isinstance(out[3][1], QuotaExceeded)
    assert not out[4][0]
    with cloud.db.read() as s:
        names = sorted(s.scalars(select(VM.name).where(VM.owner_id == carol.user_id)))
        assert names == ["a", "b"]
        assert s.scalar(select(VM.state).where(VM.id == theirs)) != "DONE"
        used = s.scalar(select(Quota.vms_used).where(Quota.scope == "user",
                                                     Quota.scope_id == carol.user_id))
        rows = s.execute(select(AuditRow.action, AuditRow.result)
                         .where(AuditRow.user_name == "carol")).all()
    assert used == 2  # exact: the refused call's charge went with its savepoint
    results = sorted(r.result for r in rows)
    assert results.count("ok") == 2 and "QuotaExceeded" in results and len(results) == 5
    cloud.db.dispose()


def test_each_call_is_checked_before_the_batch_takes_the_writer_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call of a batch parses and checks its template before the batch's transaction
    begins: a large hostile template holds up no writer (as alone, test_request_path)."""
    from vocloud.service import vms

    cloud, _admin, carol = _cloud(tmp_path)
    db = cloud.db
    seen: list[int] = []
    real_parse = vms.parse_template  # type: ignore[attr-defined]

    def parse(*a: Any, **k: Any) -> Any:
        seen.append((db.writer_stats() or (0, 0.0, 0.0))[0])
        return real_parse(*a, **k)

    monkeypatch.setattr(vms, "parse_template", parse)
    before = (db.writer_stats() or (0, 0.0, 0.0))[0]
    out = _one_batch(cloud, [lambda: cloud.vms.create(carol, TEMPLATE) for _ in range(3)])
    assert all(good for good, _ in out)
    assert seen == [before] * 3  # no write transaction begun while any of them was parsed
    assert (db.writer_stats() or (0, 0.0, 0.0))[0] == before + 1  # then one for the three
    db.dispose()


def test_reads_after_a_calls_first_write_see_the_batch(db_url: str) -> None:
    cloud, _admin, carol = _cloud(db_url)

    def create_then_count() -> int:
        cloud.vms.create(carol, TEMPLATE)
        with cloud.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(VM)) or 0)

    out = _one_batch(cloud, [lambda: cloud.vms.create(carol, TEMPLATE), create_then_count])
    assert out[1] == (True, 2)  # the first call's VM, not yet committed, and its own
    cloud.db.dispose()


def test_a_batch_whose_commit_fails_runs_each_call_again_alone(db_url: str) -> None:
    cloud, _admin, carol = _cloud(db_url)
    failed: list[int] = []

    def fail_the_batch(_conn: Any) -> None:
        if not failed and cloud.db.batch is not None and cloud.db.batch.session is not None:
            failed.append(1)
            raise RuntimeError("disk full")

    event.listen(cloud.db.engine, "commit", fail_the_batch)
    def create(i: int) -> Callable[[], list[int]]:
        return lambda: cloud.vms.create(carol, TEMPLATE, name=f"w{i}")

    out = _one_batch(cloud, [create(i) for i in range(3)])
    assert failed == [1]
    assert all(good for good, _ in out), out
    with cloud.db.read() as s:
        names = sorted(s.scalars(select(VM.name)))
        records = s.execute(select(AuditRow.result).where(AuditRow.action == "vms.create")).all()
        used = s.scalar(select(Quota.vms_used).where(Quota.scope == "user",
                                                     Quota.scope_id == carol.user_id))
    assert names == ["w0", "w1", "w2"]  # each once: the failed batch left nothing behind
    assert [r.result for r in records] == ["ok"] * 3
    assert used == 3
    cloud.db.dispose()


def test_a_call_runs_in_its_callers_context(tmp_path: Path) -> None:
    cloud, _admin, carol = _cloud(tmp_path)
    result: list[Any] = []

    def caller() -> None:
        audit.FRONTEND.set("ec2")
        result.append(cloud.group_commit.run(lambda: cloud.vms.create(carol, TEMPLATE)))

    t = threading.Thread(target=caller)
    t.start()
    t.join(20)
    assert result and len(result[0]) == 1
    with cloud.db.read() as s:
        assert s.scalar(select(AuditRow.frontend).where(AuditRow.action == "vms.create")) == "ec2"
    cloud.db.dispose()


def test_concurrent_creates_and_terminates_keep_quotas_exact(db_url: str) -> None:
    cloud, admin, carol = _cloud(db_url)
    cloud.accounts.set_quota(admin, "user", "carol", vms=15)
    refused: list[int] = []

    def terminate(vm_id: int) -> Callable[[], Any]:
        return lambda: cloud.vms.action(carol, vm_id, "terminate")

    def work() -> None:
        for _ in range(10):
            try:
                ids = cloud.group_commit.run(lambda: cloud.vms.create(carol, TEMPLATE))
            except QuotaExceeded:
                refused.append(1)
                continue
            if ids[0] % 2:
                cloud.group_commit.run(terminate(ids[0]))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with cloud.db.read() as s:
        live = s.scalar(select(func.count()).select_from(VM).where(VM.state != "DONE"))
        used = s.scalar(select(Quota.vms_used).where(Quota.scope == "user",
                                                     Quota.scope_id == carol.user_id))
        made = s.scalar(select(func.count()).select_from(VM))
    assert used == live and live is not None and live <= 15
    assert made == 80 - len(refused)
    assert cloud.group_commit.calls > 0
    cloud.db.dispose()


def test_a_closed_group_commit_runs_calls_in_the_callers_thread(tmp_path: Path) -> None:
    cloud, _admin, carol = _cloud(tmp_path)
    cloud.group_commit.run(lambda: cloud.vms.create(carol, TEMPLATE))
    cloud.group_commit.close()
    me = threading.get_ident()
    assert cloud.group_commit.run(threading.get_ident) == me
    assert len(cloud.group_commit.run(lambda: cloud.vms.create(carol, TEMPLATE))) == 1
    cloud.db.dispose()


def test_a_call_whose_statement_fails_leaves_the_others_whole(db_url: str) -> None:
    """A call whose flush fails in the database (here a duplicate key against an earlier call
    of the same batch) is rolled back to its savepoint; the calls after it still commit."""
    from sqlalchemy.exc import IntegrityError

    from vocloud.store.schema import SiteSetting

    cloud, _admin, _carol = _cloud(db_url)

    def put(key: str, value: str) -> Callable[[], None]:
        def call() -> None:
            with cloud.db.write() as s:
                s.add(SiteSetting(key=key, value=value))
        return call

    sent: list[str] = []
    event.listen(cloud.db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    out = _one_batch(cloud, [put("gc-a", "1"), put("gc-a", "2"), put("gc-b", "3")])
    assert out[0][0] and out[2][0], out
    assert not out[1][0] and isinstance(out[1][1], IntegrityError)
    with cloud.db.read() as s:
        rows = dict(s.execute(select(SiteSetting.key, SiteSetting.value)
                              .where(SiteSetting.key.like("gc-%"))).tuples().all())
    assert rows == {"gc-a": "1", "gc-b": "3"}
    kinds = [st.split(" sa_")[0] for st in sent if "SAVEPOINT" in st]
    # PostgreSQL: the calls' savepoints stay open to the commit (one round trip less per call)
    released = 0 if not cloud.db.is_sqlite else 2
    assert kinds.count("SAVEPOINT") == 3 and kinds.count("ROLLBACK TO SAVEPOINT") == 1
    assert kinds.count("RELEASE SAVEPOINT") == released, kinds
    sent.clear()  # outside a batch (the same pooled connection), savepoints are released
    with cloud.db.write() as s, s.begin_nested():
        s.add(SiteSetting(key="gc-c", value="4"))
    assert [st.split(" sa_")[0] for st in sent if "SAVEPOINT" in st] == [
        "SAVEPOINT", "RELEASE SAVEPOINT"]
    cloud.db.dispose()
