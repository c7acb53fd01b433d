"""Many rows at once: ids handed out in one statement, rows stored in one (issue 15).

Why: a ``vm create --count 500`` on PostgreSQL spent most of its time not storing rows but
*describing* them: SQLAlchemy's multi-row ``INSERT ... VALUES (...), (...) RETURNING`` of 500
rows is a statement of 10,000 parameters that psycopg re-parses on every call (its query cache
keeps only short statements) and PostgreSQL plans afresh, followed by an UPDATE per row (the
stored template names the VM's id, known only after the INSERT) and an INSERT per event row.

* :func:`reserve_ids` takes ``n`` ids of a table before its rows exist: PostgreSQL draws them
  from the table's sequence in one query (``nextval`` over ``generate_series``: never reused,
  possibly not contiguous when another transaction draws at the same time); SQLite reads the
  table's high-water mark in the write transaction it already holds alone (``BEGIN IMMEDIATE``),
  and the INSERT of those ids raises the mark (AUTOINCREMENT, ``store/sqlite_ids.py``).
* :func:`insert_rows` stores rows whose every value is already known: PostgreSQL ``COPY ...
  FROM STDIN`` on the transaction's own connection (one statement, no SQL text per row, nothing
  to parse or plan) from :data:`COPY_FROM` rows on, one INSERT below that; SQLite one prepared
  INSERT run by ``executemany`` in-process.

Both run in the caller's transaction: the rows commit with the rest of it or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, func, insert, literal, select, text
from sqlalchemy.orm import Session

#: The tables :func:`reserve_ids` may take ids of (their names go into SQL text).
_ID_TABLES = frozenset({"vms", "events"})


def reserve_ids(s: Session, table: Table, n: int) -> list[int]:
    """``n`` new ids of ``table`` in ascending order, for rows the caller inserts in the same
    (write) transaction with :func:`insert_rows`."""
    if table.name not in _ID_TABLES:
        raise ValueError(f"reserve_ids: table {table.name!r} is not one of {sorted(_ID_TABLES)}")
    if n <= 0:
        return []
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        return sorted(int(i) for i in conn.execute(select(new_ids_column(table, n))).scalar_one())
    if conn.dialect.name != "sqlite":
        raise NotImplementedError(f"reserve_ids: no way for {conn.dialect.name}")
    # SQLite's next AUTOINCREMENT id is one past the larger of the mark and the largest id.
    top = conn.execute(text(
        f'SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = :t), 0), '
        f'coalesce((SELECT max(id) FROM "{table.name}"), 0))'), {"t": table.name}).scalar()
    first = int(top or 0) + 1
    return list(range(first, first + n))


def new_ids_column(table: Table, n: Any) -> ColumnElement[Any]:
    """PostgreSQL: ``n`` new ids of ``table`` as one array column, for a statement that
    reserves them along with what else it reads — one round trip less than
    :func:`reserve_ids` after it. The ids are taken when that statement runs, whatever the
    caller does next: one it then does not insert is a gap, as ids of a rolled-back
    transaction are."""
    if table.name not in _ID_TABLES:
        raise ValueError(f"new_ids_column: table {table.name!r} is not one of {sorted(_ID_TABLES)}")
    one = func.nextval(func.pg_get_serial_sequence(literal(table.name), literal("id")))
    return select(func.array_agg(one)).select_from(func.generate_series(1, n)).scalar_subquery()


#: On PostgreSQL, fewer rows than this go in one INSERT: COPY costs two round trips (the
#: server's CopyInResponse is awaited before the data goes), an INSERT one, and a REST create's
#: VM and event rows are one each (issue 15: the group-commit thread waited on round trips
#: ~70 % of its time, session 14).
COPY_FROM = 16


def insert_rows(s: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (mappings with the same keys, column names of ``table``) in the caller's
    transaction; columns not given take their server default (e.g. the id's sequence)."""
    if not rows:
        return
    conn = s.connection()
    cols = list(rows[0])
    if conn.dialect.name != "postgresql" or len(rows) < COPY_FROM:
        conn.execute(insert(table), list(rows))
        return
    for c in cols:  # column names go into the COPY statement: only the table's own
        if c not in table.c:
            raise ValueError(f"insert_rows: {table.name} has no column {c!r}")
    quote = conn.dialect.identifier_preparer.quote
    stmt = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in cols)}) FROM STDIN"
    raw: Any = conn.connection.driver_connection  # psycopg's, inside this transaction
    with raw.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row([row[c] for c in cols])


def execute_dml(s: Session, stmt: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Run a prebuilt UPDATE/DELETE of the hot paths (quota charge and refund, a VM's leases)
    on the session's connection, after flushing what the session holds. Why: SQLAlchemy's
    ORM-enabled DML path (``Session.execute``) cost ~0.15 ms a statement against ~0.05 ms for
    the same statement on the connection (docs/performance.md); the flush keeps the order the
    ORM path gave (pending rows are in the database before the statement runs). Returns the
    cursor result (``rowcount``)."""
    s.flush()
    return s.connection().execute(stmt, dict(params or {}))

