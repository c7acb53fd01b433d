"""pool headroom: pools.headroom, spare workers per busy worker (0: none)

Revision ID: 0020
Revises: 0016
Create Date: 2026-12-02 17:10:00

``pools.headroom`` is ``PoolPolicy.headroom`` (``vocloud.elastic.planner``): spare workers kept
beyond the queue's need, as a fraction of the busy ones. Existing pools get 0, the behaviour
before this revision (boot only for jobs that wait).
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both databases: no batch copy of the table
    op.add_column('pools', sa.Column('headroom', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE pools DROP COLUMN headroom")
    else:
        op.drop_column('pools', 'headroom')
