"""Schema migrations: the Alembic chain builds exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store import migrate, sqlite_ids
from vocloud.store.db import Database
from vocloud.store.schema import Base
from vocloud.store.sqlite_ids import NEVER_REUSED


def _diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_upgrade_from_empty_matches_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.current_revision(db) is None
        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.head_revision()
        assert _diff(db) == []
        # upgrading again is a no-op
        migrate.upgrade(db)
        assert migrate.current_revision(db) == migrate.head_revision()
    finally:
        db.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate.upgrade(db)
        migrate.downgrade(db, "base")
        assert migrate.current_revision(db) is None
        tables = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        migrate.upgrade(db)
        assert _diff(db) == []
    finally:
        db.dispose()


def _insert(conn: Connection, table: str, **values: object) -> int:
    cols = ", ".join(values)
    marks = ", ".join(f":{k}" for k in values)
    return int(conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id"),
                            values).scalar_one())


def _vm(conn: Connection, user: int, group: int, host: int) -> int:
    return _insert(conn, "vms", name="v", owner_id=user, group_id=group, state="RUNNING", host_id=host,
                   cpu_m=1000, vcpu=1, memory=128, template="CPU=1", deploy_id="", sched_message="",
                   error="", state_changed_at=1.0, step_attempts=0, hard=False, created_at=1.0)


def test_upgrade_from_0003_with_data_keeps_rows_and_never_reuses_ids(db_url: str) -> None:
    """A store written at 0003 — whose newest VM was purged — upgrades with every row (and every
    row of the tables that point at rebuilt ones) intact; the purged VM's id is not handed out
    again, so its history does not appear on a new VM."""
    db = Database(db_url)
    try:
        migrate.upgrade(db, "0003")
        with db.engine.begin() as conn:
            g = _insert(conn, "groups", name="oneadmin", description="", created_at=1.0)
            u = _insert(conn, "users", name="admin", group_id=g, is_admin=True, enabled=True,
                        token_hash="x" * 64, created_at=1.0)
            h = _insert(conn, "hosts", name="h1", state="ERROR", vmm="sim", transport="local",
                        cluster="default", total_cpu_m=8000, total_mem=1024, alloc_cpu_m=0, alloc_mem=0,
                        running_vms=0, used_cpu_m=0, used_mem=0, attrs="{}", error="ssh: host key",
                        created_at=1.0)
            net = _insert(conn, "networks", name="n", owner_id=u, group_id=g, bridge="br0", template="",
                          public=False, created_at=1.0)
            _insert(conn, "address_ranges", network_id=net, ip_start=167772160, size=10)
            vms = [_vm(conn, u, g, h) for _ in range(3)]
            _insert(conn, "leases", network_id=net, ip=167772161, mac="02:00:0a:00:00:01",
                    vm_id=vms[1], held=False)
            for vm in vms:
                _insert(conn, "events", time=1.0, kind="vm", obj_id=vm, action="create",
                        from_state="", to_state="PENDING", message=f"history of VM {vm}")
            conn.execute(text("DELETE FROM vms WHERE id = :i"), {"i": vms[2]})  # purge the newest
        migrate.upgrade(db)
        assert _diff(db) == []
        with db.engine.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                      for t in ("groups", "users", "hosts", "networks", "address_ranges", "vms",
                                "leases", "events")}
            assert counts == {"groups": 1, "users": 1, "hosts": 1, "networks": 1, "address_ranges": 1,
                              "vms": 2, "leases": 1, "events": 3}
            row = conn.execute(text("SELECT error, monitor_failures, monitor_next_at FROM hosts")).one()
            assert tuple(row) == ("ssh: host key", 0, None)
            if db.is_sqlite:
                assert set(NEVER_REUSED) <= sqlite_ids.autoincrement_tables(conn)
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        cloud = Cloud(db)
        actor = Actor(u, "admin", g, True)
        (new,) = cloud.vms.create(actor, "CPU=1\nMEMORY=128")
        assert new == vms[2] + 1
        history = [e["message"] for e in cloud.vms.show(actor, new)["history"]]
        assert not any("history of VM" in m for m in history), history
        with db.engine.connect() as conn:  # a new connection from the pool has foreign keys on
            if db.is_sqlite:
                assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        db.dispose()
