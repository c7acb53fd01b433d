"""the audit log (who changed what, through which front-end); events remember the VM's host

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02 03:10:00

``events.host_id`` lets accounting charge each stretch of a VM's life to the host it ran on,
across migrations; older events keep NULL and are charged to the VM's current host.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('user_name', sa.String(length=128), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('frontend', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('obj', sa.String(length=160), nullable=False),
    sa.Column('result', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit')),
    sqlite_autoincrement=True,  # ids never reused (store/sqlite_ids.py)
    )
    op.create_index('ix_audit_time', 'audit', ['time'], unique=False)
    op.create_index('ix_audit_user_id_id', 'audit', ['user_id', 'id'], unique=False)
    # plain ADD COLUMN on both databases: no batch copy of the events table
    op.add_column('events', sa.Column('host_id', sa.Integer(), nullable=True))
    op.create_index('ix_events_kind_obj_id_time', 'events', ['kind', 'obj_id', 'time', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_events_kind_obj_id_time', table_name='events')
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE events DROP COLUMN host_id")
    else:
        op.drop_column('events', 'host_id')
    op.drop_index('ix_audit_user_id_id', table_name='audit')
    op.drop_index('ix_audit_time', table_name='audit')
    op.drop_table('audit')
