"""the EC2 front-end: access_keys (sealed SigV4 secrets), key_pairs, tags, instance_launches

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'access_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key_id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_access_keys_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_access_keys')),
        sa.UniqueConstraint('key_id', name=op.f('uq_access_keys_key_id')),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f('ix_access_keys_user_id'), 'access_keys', ['user_id'], unique=False)
    op.create_table(
        'key_pairs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('pair_id', sa.String(length=32), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('key_type', sa.String(length=16), nullable=False),
        sa.Column('public_key', sa.Text(), nullable=False),
        sa.Column('fingerprint', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_key_pairs_owner_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_key_pairs')),
        sa.UniqueConstraint('owner_id', 'name', name='uq_key_pairs_owner_id'),
        sa.UniqueConstraint('pair_id', name=op.f('uq_key_pairs_pair_id')),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'tags',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('obj_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('value', sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'obj_id', 'key', name=op.f('pk_tags')),
    )
    op.create_table(
        'instance_launches',
        sa.Column('vm_id', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('image_ref', sa.String(length=32), nullable=False),
        sa.Column('instance_type', sa.String(length=64), nullable=False),
        sa.Column('key_name', sa.String(length=255), nullable=False),
        sa.Column('client_token', sa.String(length=64), nullable=True),
        sa.Column('reservation', sa.String(length=32), nullable=False),
        sa.Column('launch_index', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name=op.f('fk_instance_launches_vm_id_vms'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('vm_id', name=op.f('pk_instance_launches')),
    )
    op.create_index('ix_instance_launches_owner_token', 'instance_launches',
                    ['owner_id', 'client_token'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_instance_launches_owner_token', table_name='instance_launches')
    op.drop_table('instance_launches')
    op.drop_table('tags')
    op.drop_table('key_pairs')
    op.drop_index(op.f('ix_access_keys_user_id'), table_name='access_keys')
    op.drop_table('access_keys')
