"""VO worker-node pools: pools, pool_vms, pool_events, pool_backoff

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:05:38
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vo', sa.String(length=128), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('image', sa.String(length=128), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.Column('memory', sa.Integer(), nullable=False),
    sa.Column('min_vms', sa.Integer(), nullable=False),
    sa.Column('max_vms', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('idle_timeout', sa.Float(), nullable=False),
    sa.Column('boot_timeout', sa.Float(), nullable=False),
    sa.Column('max_lifetime', sa.Float(), nullable=True),
    sa.Column('max_boots_per_minute', sa.Integer(), nullable=False),
    sa.Column('scale_down_delay', sa.Float(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('deleting', sa.Boolean(), nullable=False),
    sa.Column('status', sa.JSON(), nullable=False),
    sa.Column('status_at', sa.Float(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_pools_group_id_groups')),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], name=op.f('fk_pools_template_id_templates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pools')),
    sa.UniqueConstraint('vo', name=op.f('uq_pools_vo'))
    )
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pools_group_id'), ['group_id'], unique=False)

    op.create_table('pool_backoff',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('retry_at', sa.Float(), nullable=False),
    sa.Column('last_failure', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_backoff_pool_id_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_backoff')),
    sa.UniqueConstraint('pool_id', 'key', name='uq_pool_backoff_pool_id_key')
    )
    op.create_table('pool_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_events_pool_id_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_events'))
    )
    with op.batch_alter_table('pool_events', schema=None) as batch_op:
        batch_op.create_index('ix_pool_events_pool_id_id', ['pool_id', 'id'], unique=False)

    op.create_table('pool_vms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_since', sa.Float(), nullable=False),
    sa.Column('requested_at', sa.Float(), nullable=False),
    sa.Column('joined_at', sa.Float(), nullable=True),
    sa.Column('idle_since', sa.Float(), nullable=True),
    sa.Column('running_jobs', sa.Integer(), nullable=False),
    sa.Column('free_cores', sa.Integer(), nullable=False),
    sa.Column('free_memory', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=128), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_vms_pool_id_pools'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_pool_vms_vm_id_vms'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_vms')),
    sa.UniqueConstraint('name', name=op.f('uq_pool_vms_name')),
    sa.UniqueConstraint('vm_id', name=op.f('uq_pool_vms_vm_id'))
    )
    with op.batch_alter_table('pool_vms', schema=None) as batch_op:
        batch_op.create_index('ix_pool_vms_pool_id_state', ['pool_id', 'state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pool_vms', schema=None) as batch_op:
        batch_op.drop_index('ix_pool_vms_pool_id_state')

    op.drop_table('pool_vms')
    with op.batch_alter_table('pool_events', schema=None) as batch_op:
        batch_op.drop_index('ix_pool_events_pool_id_id')

    op.drop_table('pool_events')
    op.drop_table('pool_backoff')
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pools_group_id'))

    op.drop_table('pools')
