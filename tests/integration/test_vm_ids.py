"""Ids are never reused (issue 9, finding 9): a purged VM's id, history and deploy id stay its own."""

from __future__ import annotations

from sqlalchemy import text

from tests.support.helpers import admin, user_in
from vocloud.service.cloud import Cloud
from vocloud.store import sqlite_ids
from vocloud.store.schema import Base

SMALL = "CPU=1\nMEMORY=128\n"


def test_purged_newest_vm_id_is_not_reused(cloud: Cloud) -> None:
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    bob = user_in(cloud, "bob", "cms")
    first = cloud.vms.create(alice, SMALL, count=3, name="mine")
    old = cloud.vms.show(alice, first[-1])
    cloud.vms.action(alice, first[-1], "terminate")
    cloud.vms.delete(alice, first[-1])  # purge the newest VM
    (new,) = cloud.vms.create(bob, SMALL, name="theirs")
    assert new > first[-1]
    shown = cloud.vms.show(bob, new)
    assert shown["deploy_id"] != old["deploy_id"]
    assert all("alice" not in e["message"] for e in shown["history"]), shown["history"]
    assert [e["action"] for e in shown["history"]] == ["create"]
    # and for every other kind whose ids users see
    g = cloud.accounts.create_group(a, "lhcb")["id"]
    cloud.accounts.delete_group(a, "lhcb")
    assert cloud.accounts.create_group(a, "lhcb2")["id"] > g
    h = cloud.hosts.create(a, "h9", cpu=1, memory=128)["id"]
    cloud.hosts.delete(a, h)
    assert cloud.hosts.create(a, "h10", cpu=1, memory=128)["id"] > h


def test_every_user_visible_table_is_autoincrement(cloud: Cloud) -> None:
    """Declared in the models (so a new table is a conscious choice) and true in the store."""
    for name in sqlite_ids.NEVER_REUSED:
        assert Base.metadata.tables[name].dialect_options["sqlite"]["autoincrement"], name
    if cloud.db.is_sqlite:
        with cloud.db.engine.connect() as conn:
            assert set(sqlite_ids.NEVER_REUSED) <= sqlite_ids.autoincrement_tables(conn)
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1


def test_a_create_takes_its_ids_in_order_and_in_its_first_statement(cloud: Cloud) -> None:
    """Ids ascend within a create and across creates, a refused create takes none that a later
    one would miss (SQLite) or leaves a gap (PostgreSQL: taken with the owner, in one round
    trip — no statement of their own)."""
    from sqlalchemy import event

    from vocloud.errors import NotFound

    alice = user_in(cloud, "alice", "atlas")
    sent: list[str] = []
    event.listen(cloud.db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    first = cloud.vms.create(alice, SMALL, count=3)
    assert first == sorted(first) and len(set(first)) == 3
    creating = [st for st in sent if "nextval" in st or "FROM users" in st]
    if cloud.db.is_sqlite:
        assert not any("nextval" in st for st in sent)
    else:
        assert len(creating) == 1 and "nextval" in creating[0], creating
    try:
        cloud.vms.create(alice, SMALL + "DISK=[IMAGE=\"no-such-image\"]\n")
    except NotFound:
        pass
    else:
        raise AssertionError("a create naming a missing image was not refused")
    (after,) = cloud.vms.create(alice, SMALL)
    assert after == first[-1] + 1 if cloud.db.is_sqlite else after > first[-1]
    assert cloud.vms.show(alice, after)["deploy_id"].endswith(f"-{after}")
