"""Object ids are never reused, on SQLite as on PostgreSQL.

Why: an id is how users, scripts and the event history name an object. SQLite's plain
``INTEGER PRIMARY KEY`` hands out ``max(id) + 1``, so purging the newest VM gave its id to the
next VM — of another user — which then showed the old VM's history (events are keyed by id)
and deploy id. ``AUTOINCREMENT`` keeps a high-water mark in ``sqlite_sequence`` instead;
PostgreSQL sequences never go back in the first place.

Two traps this module closes for migrations:

* SQLAlchemy does not reflect ``AUTOINCREMENT``, so an Alembic batch operation that recreates
  a table (every ``ALTER`` beyond ``ADD COLUMN`` on SQLite) silently drops it, and with it the
  high-water mark. :func:`batch_keeping_ids` recreates a table with the keyword kept and the
  mark restored; later migrations that alter these tables must use it.
* A table migrated from a store that had no high-water mark yet may have lost its newest ids
  already; the event history still names them, so :func:`high_water` counts those too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import op
from sqlalchemy import Connection, text

#: Tables whose ids users see, and the event kind that records each (``""``: none).
NEVER_REUSED: dict[str, str] = {
    "groups": "group", "users": "user", "acls": "", "hosts": "host", "vms": "vm",
    "templates": "", "images": "image", "networks": "vnet", "pools": "", "datastores": "",
    "audit": "", "host_leases": "",
}

#: The keyword argument that makes a table AUTOINCREMENT on SQLite (ignored elsewhere).
AUTOINCREMENT: dict[str, Any] = {"sqlite_autoincrement": True}


def is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def sequences(conn: Connection) -> dict[str, int]:
    """SQLite's high-water marks (empty when no table has AUTOINCREMENT yet)."""
    exists = conn.execute(text(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='sqlite_sequence'")).scalar()
    if not exists:
        return {}
    return {str(name): int(seq) for name, seq in conn.execute(text("SELECT name, seq FROM sqlite_sequence"))}


def high_water(conn: Connection, table: str) -> int:
    """The highest id ``table`` ever handed out, as far as the store still knows it."""
    marks = [sequences(conn).get(table, 0),
             int(conn.execute(text(f'SELECT coalesce(max(id), 0) FROM "{table}"')).scalar() or 0)]
    kind = NEVER_REUSED.get(table, "")
    if kind:
        marks.append(int(conn.execute(text(
            "SELECT coalesce(max(obj_id), 0) FROM events WHERE kind = :k"), {"k": kind}).scalar() or 0))
    return max(marks)


def set_high_water(conn: Connection, table: str, mark: int) -> None:
    """Raise ``table``'s high-water mark to ``mark`` (never lowers it)."""
    row = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).first()
    if row is None:
        if mark > 0:
            conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :m)"),
                         {"t": table, "m": mark})
    elif int(row[0]) < mark:
        conn.execute(text("UPDATE sqlite_sequence SET seq = :m WHERE name = :t"), {"t": table, "m": mark})


def autoincrement_tables(conn: Connection) -> set[str]:
    """The tables whose SQLite definition says AUTOINCREMENT (for checks and tests)."""
    rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type='table'"))
    return {str(name) for name, sql in rows if sql and "AUTOINCREMENT" in str(sql).upper()}


@contextmanager
def batch_keeping_ids(table: str, **kwargs: Any) -> Iterator[Any]:
    """``op.batch_alter_table`` that, on SQLite, recreates ``table`` with AUTOINCREMENT and its
    high-water mark kept. Elsewhere it is the plain batch operation (ALTER TABLE)."""
    conn = op.get_bind()
    if not is_sqlite(conn):
        with op.batch_alter_table(table, **kwargs) as batch:
            yield batch
        return
    mark = high_water(conn, table)
    with op.batch_alter_table(table, recreate="always", table_kwargs=AUTOINCREMENT, **kwargs) as batch:
        yield batch
    set_high_water(conn, table, mark)
