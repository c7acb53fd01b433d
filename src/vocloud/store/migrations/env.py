"""Alembic environment: runs on the connection that vocloud hands it (see store/migrate.py)."""

from __future__ import annotations

from alembic import context

from vocloud.store import pools as _pools  # noqa: F401  (registers the pool tables)
from vocloud.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("vocloud migrations run through vocloud.store.migrate.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
