"""networks belong to groups: VLAN_ID, PHYDEV, reservations (parent_id), net_segments lock rows

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02 00:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('net_segments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bridge', sa.String(length=64), nullable=False),
    sa.Column('vlan_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_net_segments')),
    sa.UniqueConstraint('bridge', 'vlan_id', name='uq_net_segments_bridge_vlan_id')
    )
    with op.batch_alter_table('networks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vlan_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('phydev', sa.String(length=64), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_networks_parent_id'), ['parent_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_networks_parent_id_networks'), 'networks',
                                    ['parent_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('networks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_networks_parent_id_networks'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_networks_parent_id'))
        batch_op.drop_column('parent_id')
        batch_op.drop_column('phydev')
        batch_op.drop_column('vlan_id')
    op.drop_table('net_segments')
