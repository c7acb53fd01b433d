"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 00:13:17.744408
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('acls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=32), nullable=False),
    sa.Column('resource', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=32), nullable=False),
    sa.Column('rights', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_acls'))
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('obj_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=24), nullable=False),
    sa.Column('to_state', sa.String(length=24), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_kind_obj', ['kind', 'obj_id'], unique=False)

    op.create_table('groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_groups_name'))
    )
    op.create_table('hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('vmm', sa.String(length=32), nullable=False),
    sa.Column('transport', sa.String(length=255), nullable=False),
    sa.Column('cluster', sa.String(length=128), nullable=False),
    sa.Column('total_cpu_m', sa.BigInteger(), nullable=False),
    sa.Column('total_mem', sa.BigInteger(), nullable=False),
    sa.Column('alloc_cpu_m', sa.BigInteger(), nullable=False),
    sa.Column('alloc_mem', sa.BigInteger(), nullable=False),
    sa.Column('running_vms', sa.Integer(), nullable=False),
    sa.Column('used_cpu_m', sa.BigInteger(), nullable=False),
    sa.Column('used_mem', sa.BigInteger(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('monitored_at', sa.Float(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('name', name=op.f('uq_hosts_name'))
    )
    op.create_table('quotas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('scope_id', sa.Integer(), nullable=False),
    sa.Column('vms_limit', sa.Integer(), nullable=False),
    sa.Column('cpu_m_limit', sa.BigInteger(), nullable=False),
    sa.Column('mem_limit', sa.BigInteger(), nullable=False),
    sa.Column('vms_used', sa.Integer(), nullable=False),
    sa.Column('cpu_m_used', sa.BigInteger(), nullable=False),
    sa.Column('mem_used', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotas')),
    sa.UniqueConstraint('scope', 'scope_id', name='uq_quotas_scope_scope_id')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_users_group_id_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_users_token_hash'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_group_id'), ['group_id'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('size_mib', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('persistent', sa.Boolean(), nullable=False),
    sa.Column('running_vms', sa.Integer(), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_images_group_id_groups')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_images_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('name', name=op.f('uq_images_name'))
    )
    op.create_table('networks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('bridge', sa.String(length=64), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_networks_group_id_groups')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_networks_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_networks')),
    sa.UniqueConstraint('name', name=op.f('uq_networks_name'))
    )
    op.create_table('templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_templates_group_id_groups')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_templates_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_templates')),
    sa.UniqueConstraint('name', name=op.f('uq_templates_name'))
    )
    op.create_table('vms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=True),
    sa.Column('target_host_id', sa.Integer(), nullable=True),
    sa.Column('cpu_m', sa.BigInteger(), nullable=False),
    sa.Column('vcpu', sa.Integer(), nullable=False),
    sa.Column('memory', sa.BigInteger(), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('requirements', sa.Text(), nullable=True),
    sa.Column('rank', sa.Text(), nullable=True),
    sa.Column('deploy_id', sa.String(length=64), nullable=False),
    sa.Column('sched_message', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('state_changed_at', sa.Float(), nullable=False),
    sa.Column('step_attempts', sa.Integer(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_vms_group_id_groups')),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_vms_host_id_hosts')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_vms_owner_id_users')),
    sa.ForeignKeyConstraint(['target_host_id'], ['hosts.id'], name=op.f('fk_vms_target_host_id_hosts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vms'))
    )
    with op.batch_alter_table('vms', schema=None) as batch_op:
        batch_op.create_index('ix_vms_group_id_id', ['group_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vms_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vms_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index('ix_vms_state_id', ['state', 'id'], unique=False)

    op.create_table('address_ranges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('network_id', sa.Integer(), nullable=False),
    sa.Column('ip_start', sa.BigInteger(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=True),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], name=op.f('fk_address_ranges_network_id_networks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_address_ranges'))
    )
    with op.batch_alter_table('address_ranges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_address_ranges_network_id'), ['network_id'], unique=False)

    op.create_table('leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('network_id', sa.Integer(), nullable=False),
    sa.Column('ip', sa.BigInteger(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=True),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], name=op.f('fk_leases_network_id_networks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_leases_vm_id_vms')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leases')),
    sa.UniqueConstraint('network_id', 'ip', name='uq_leases_network_id_ip')
    )
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leases_vm_id'), ['vm_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leases_vm_id'))

    op.drop_table('leases')
    with op.batch_alter_table('address_ranges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_address_ranges_network_id'))

    op.drop_table('address_ranges')
    with op.batch_alter_table('vms', schema=None) as batch_op:
        batch_op.drop_index('ix_vms_state_id')
        batch_op.drop_index(batch_op.f('ix_vms_owner_id'))
        batch_op.drop_index(batch_op.f('ix_vms_host_id'))
        batch_op.drop_index('ix_vms_group_id_id')

    op.drop_table('vms')
    op.drop_table('templates')
    op.drop_table('networks')
    op.drop_table('images')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_group_id'))

    op.drop_table('users')
    op.drop_table('quotas')
    op.drop_table('hosts')
    op.drop_table('groups')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_kind_obj')

    op.drop_table('events')
    op.drop_table('acls')

