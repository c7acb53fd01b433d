"""Schema migrations: the Alembic chain builds exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import Base


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
