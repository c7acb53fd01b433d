"""pool worker shapes: pools.worker_shape (fixed | job | host), each worker's own size

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-02 06:40:00

``pools.worker_shape`` says how a pool sizes its workers (``vocloud.elastic.shape``); existing
pools keep ``fixed``, the behaviour before this revision. ``pool_vms.cores``/``memory`` record the
size a plan chose for a worker (NULL: the pool's ``cores``/``memory``, as for every older row).
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both databases: no batch copy of the tables
    op.add_column('pools', sa.Column('worker_shape', sa.String(length=8), nullable=False,
                                     server_default='fixed'))
    op.add_column('pool_vms', sa.Column('cores', sa.Integer(), nullable=True))
    op.add_column('pool_vms', sa.Column('memory', sa.Integer(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE pool_vms DROP COLUMN memory")
        op.execute("ALTER TABLE pool_vms DROP COLUMN cores")
        op.execute("ALTER TABLE pools DROP COLUMN worker_shape")
    else:
        op.drop_column('pool_vms', 'memory')
        op.drop_column('pool_vms', 'cores')
        op.drop_column('pools', 'worker_shape')
