"""pool prestage: pools.prestage, pre-staging the pool's image before its boots

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03 05:00:00

``pools.prestage`` is the pool's pre-stage mode (``vocloud.core.prestage.Mode``: ``off``,
``start``, ``wait``); NULL, what existing pools get, means the site's ``pool_prestage`` setting
(docs/image-distribution.md).
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('pools', sa.Column('prestage', sa.String(8), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE pools DROP COLUMN prestage")
    else:
        op.drop_column('pools', 'prestage')
