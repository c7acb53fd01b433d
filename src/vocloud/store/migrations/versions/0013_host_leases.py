"""hypervisors leased from the batch system; VMs with a known run time (WALLTIME)

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-02 06:30:00

``host_leases``: one row per batch job whose node becomes a transient host
(docs/host-leases.md). ``vms.walltime``: the VM's declared run time, which is what lets the
scheduler put it on a leased host only if it ends before the lease does.
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('partition', sa.String(length=128), nullable=False),
    sa.Column('walltime', sa.Float(), nullable=False),
    sa.Column('vmm', sa.String(length=32), nullable=False),
    sa.Column('cpu_m', sa.BigInteger(), nullable=False),
    sa.Column('memory', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('registered', sa.Boolean(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=True),
    sa.Column('host_name', sa.String(length=128), nullable=False),
    sa.Column('lease_end', sa.Float(), nullable=True),
    sa.Column('ending_at', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_leases')),
    sqlite_autoincrement=True,  # ids never reused (store/sqlite_ids.py)
    )
    # plain ADD COLUMN on both databases: no batch copy of the vms table
    op.add_column('vms', sa.Column('walltime', sa.Float(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        op.execute("ALTER TABLE vms DROP COLUMN walltime")
    else:
        op.drop_column('vms', 'walltime')
    op.drop_table('host_leases')
