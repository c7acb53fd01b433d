"""object ids never reused (SQLite AUTOINCREMENT), host monitoring backoff columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:20:00

On SQLite every table whose ids users see is recreated with AUTOINCREMENT; its high-water mark
starts at the highest id the store still knows (rows, or events naming a purged object), so an id
purged before this migration is not handed out again either. PostgreSQL sequences never reuse
ids: only the host columns are added there.
"""
from alembic import op
import sqlalchemy as sa

from vocloud.store.sqlite_ids import NEVER_REUSED, batch_keeping_ids, is_sqlite


revision = '0006'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with batch_keeping_ids('hosts') as batch_op:
        batch_op.add_column(sa.Column('monitor_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('monitor_failing_since', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('monitor_next_at', sa.Float(), nullable=True))
    if is_sqlite(op.get_bind()):
        existing = set(sa.inspect(op.get_bind()).get_table_names())
        for table in NEVER_REUSED:  # tables later migrations add are made AUTOINCREMENT by them
            if table != 'hosts' and table in existing:
                with batch_keeping_ids(table):
                    pass
        problems = op.get_bind().execute(sa.text("PRAGMA foreign_key_check")).all()
        if problems:
            raise RuntimeError(f"foreign keys broken by the table rebuild: {problems[:5]}")


def downgrade() -> None:
    # AUTOINCREMENT is kept: ids that were never reused stay so (0003 works on either table form)
    with batch_keeping_ids('hosts') as batch_op:
        batch_op.drop_column('monitor_next_at')
        batch_op.drop_column('monitor_failing_since')
        batch_op.drop_column('monitor_failures')
