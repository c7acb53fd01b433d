"""``vm list`` of live VMs (service/vms.py ``_list_stmt``): served by ``ix_vms_live_id`` on both
databases, so its cost is its ``limit``, not the store's DONE history; the same rows and keys
from both databases' JSON builders."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql

from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store.db import Database
from vocloud.store.schema import VM, User

TEMPLATE = "CPU=1\nMEMORY=64\n"
KEYS = {"id", "name", "user", "group", "state", "stat", "cpu", "memory", "host", "created_at",
        "started_at", "ended_at", "owner_id", "group_id", "host_id"}


def _admin(db: Database) -> tuple[Cloud, Actor]:
    cloud = Cloud(db)
    cloud.accounts.bootstrap()
    with db.read() as s:
        u = s.scalars(select(User)).one()
    return cloud, Actor(u.id, u.name, u.group_id, True)


def _plan(db: Database, cloud: Cloud, limit: int) -> str:
    """The plan of the live list as the service runs it: with its parameters bound, not
    inlined (a partial index serves only a predicate it can prove from the statement's own
    text) — on PostgreSQL the generic plan, which a prepared statement ends up with."""
    stmt = cloud.vms._list_stmt("live", True, None)
    if db.is_sqlite:
        compiled = stmt.compile(dialect=db.engine.dialect)
        params = compiled.construct_params({"limit": limit})
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                        tuple(params[k] for k in compiled.positiontup or ()))
            return "\n".join(str(r) for r in rows)
    dialect = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    compiled = stmt.compile(dialect=dialect)
    params = compiled.construct_params({"limit": limit})
    args = ", ".join(_literal(params[k]) for k in compiled.positiontup or ())
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("PREPARE live_list AS " + str(compiled).replace("%%", "%"))
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE live_list({args})")
        return "\n".join(str(r) for r in rows)


def _literal(value: object) -> str:
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def test_the_live_list_reads_the_live_index_not_the_history(db: Database) -> None:
    cloud, admin = _admin(db)
    ids = cloud.vms.create(admin, TEMPLATE, count=3000, name="h")
    with db.write() as s:  # a long history: all but the newest 100 ended
        s.execute(update(VM).where(VM.id <= ids[2899]).values(state="DONE"))
    with db.write() as s:
        s.execute(text("ANALYZE"))
    rows = cloud.vms.list(admin, limit=50)
    assert [r["id"] for r in rows] == ids[2900:2950]
    assert all(set(r) == KEYS and r["state"] == "PENDING" and r["stat"] == "pend" for r in rows)
    assert rows[0]["cpu"] == 1 and rows[0]["memory"] == 64 and rows[0]["user"] == admin.name
    assert "ix_vms_live_id" in _plan(db, cloud, 50)
    assert [r["id"] for r in cloud.vms.list(admin, include_done=True, limit=3)] == ids[:3]
    assert cloud.vms.list(admin, state="done", limit=2)[1]["state"] == "DONE"
