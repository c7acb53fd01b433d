"""site_settings, with this installation's instance tag (unique deploy ids per installation)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:30:00
"""
import secrets
import string

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_ALPHABET = string.ascii_lowercase + string.digits


def upgrade() -> None:
    table = op.create_table('site_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_site_settings'))
    )
    tag = "".join(secrets.choice(_ALPHABET) for _ in range(3))
    op.bulk_insert(table, [{"key": "instance_tag", "value": tag}])


def downgrade() -> None:
    op.drop_table('site_settings')
