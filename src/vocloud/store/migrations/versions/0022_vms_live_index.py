"""vms live index: a partial index on the ids of VMs not DONE

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 02:30:00

``vm list`` (live VMs, in id order, ``limit`` of them) walked the primary key past every DONE
VM below the first live one: a site's whole history, growing forever. ``ix_vms_live_id`` holds
only the live VMs' ids, so the list reads ``limit`` index entries whatever the history.
"""
from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

LIVE = sa.text("state <> 'DONE'")


def upgrade() -> None:
    op.create_index('ix_vms_live_id', 'vms', ['id'], postgresql_where=LIVE, sqlite_where=LIVE)


def downgrade() -> None:
    op.drop_index('ix_vms_live_id', table_name='vms')
