"""Schema migrations with Alembic, run from code so a site needs no alembic.ini.

``vocloud serve`` upgrades the store to the newest schema at start; ``vocloud db upgrade`` does
it explicitly (e.g. before starting several front-ends on one PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from vocloud.store.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _migration_connection(db: Database) -> Iterator[Connection]:
    """A write connection; on SQLite with foreign keys off while it migrates.

    Rebuilding a table (Alembic's batch mode: copy, drop, rename) with foreign keys on would run
    the dropped table's ON DELETE actions — e.g. empty a network's address ranges — or fail. The
    pragma is a no-op inside a transaction, so it is set on the raw connection before the
    migration begins; migrations that rebuild tables run ``PRAGMA foreign_key_check`` themselves.
    """
    with db.engine.connect().execution_options(vocloud_write=True) as conn:
        raw = conn.connection.driver_connection if db.is_sqlite else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        except BaseException:
            if raw is not None:
                conn.invalidate()  # never pool a connection that has foreign keys off
            raise
        if raw is not None:  # committed by now: the pragma takes effect again
            raw.execute("PRAGMA foreign_keys=ON")
            if raw.execute("PRAGMA foreign_keys").fetchone() != (1,):
                conn.invalidate()


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = _config()
    with _migration_connection(db) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def downgrade(db: Database, revision: str) -> None:
    cfg = _config()
    with _migration_connection(db) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference between schema.py and the db."""
    cfg = _config()
    with db.engine.connect().execution_options(vocloud_write=True) as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
