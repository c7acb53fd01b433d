"""PostgreSQL connections (store/db.py): a read holds no transaction open; a pooled connection
that died is replaced before use."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from tests.support.pgserver import PgServer
from vocloud.service import auth
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database

_n = itertools.count()


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[Database]:
    database = Database(pg_server.create_db(f"pgc_{next(_n)}"))
    migrate.upgrade(database)
    yield database
    database.dispose()


def _backend_pid(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(db: Database, pid: int) -> None:
    """End ``pid``'s backend from a connection outside the store's pool (as a server restart
    or an administrator's pg_terminate_backend would)."""
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_reads_hold_no_transaction_open_writes_do(pg: Database) -> None:
    """A read is a statement in autocommit (no BEGIN/ROLLBACK round trips; reads take no
    locks); a write is still one transaction."""
    with pg.read() as s:
        s.execute(text("SELECT 1"))
        raw = s.connection().connection.dbapi_connection
        assert raw is not None
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pg.write() as s:
        s.execute(text("SELECT 1"))
        raw = s.connection().connection.dbapi_connection
        assert raw is not None
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    with pg.read() as s:  # back in the pool, the connection is no longer in autocommit for writers
        s.execute(text("SELECT 1"))
    with pg.write() as s:
        s.execute(text("SELECT 1"))
        raw = s.connection().connection.dbapi_connection
        assert raw is not None and raw.autocommit is False


def test_bearer_authentication_reads_outside_a_transaction(
        pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every REST request authenticates: one statement, with no transaction around it."""
    cloud = Cloud(pg)
    token = cloud.accounts.bootstrap()
    assert token is not None
    seen: list[Any] = []
    lookup = auth.BearerTokens.authenticate

    def watched(self: auth.BearerTokens, conn: Any, credentials: auth.Credentials) -> auth.Actor:
        actor = lookup(self, conn, credentials)
        seen.append(conn.connection.dbapi_connection.info.transaction_status)
        return actor

    monkeypatch.setattr(auth.BearerTokens, "authenticate", watched)
    assert cloud.authenticate(token).is_admin
    assert seen == [psycopg.pq.TransactionStatus.IDLE]


def test_a_pooled_connection_that_died_is_replaced_before_use(pg: Database) -> None:
    """The pool pings before every checkout (pool_pre_ping): a connection whose backend ended
    while it sat in the pool (a restart, a promoted standby) is replaced, never handed out."""
    pid = _backend_pid(pg)  # now idle in the pool
    _terminate(pg, pid)
    assert _backend_pid(pg) != pid  # pinged, found dead, replaced: the read never saw it
