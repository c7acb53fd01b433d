"""pools.burst_limit: how many workers a VO's pool may run beyond the site (docs/bursting.md)

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02 06:20:00

0 (the default, and what every existing pool gets) keeps the pool on the site's own hosts.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('pools', sa.Column('burst_limit', sa.Integer(), nullable=False,
                                     server_default='0'))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE pools DROP COLUMN burst_limit")
    else:
        op.drop_column('pools', 'burst_limit')
