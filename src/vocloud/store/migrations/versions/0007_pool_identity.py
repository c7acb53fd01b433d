"""pools act as their VO: pools.owner_id (the VO's pool identity), pools.site_template_id (the
administrator's site template), vms.site_secrets (secrets admitted at creation)

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-02 00:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Plain ADD COLUMN, not a batch copy of ``pools``: dropping the old table with foreign
        # keys on would cascade into pool_vms, pool_events and pool_backoff. (SQLite reflects no
        # ON DELETE of a column-level reference, hence none: deleting a pool's identity is
        # refused by the service instead.)
        op.execute("ALTER TABLE pools ADD COLUMN owner_id INTEGER CONSTRAINT "
                   "fk_pools_owner_id_users REFERENCES users (id)")
        op.execute("ALTER TABLE pools ADD COLUMN site_template_id INTEGER CONSTRAINT "
                   "fk_pools_site_template_id_templates REFERENCES templates (id)")
    else:
        op.add_column('pools', sa.Column('owner_id', sa.Integer(), nullable=True))
        op.add_column('pools', sa.Column('site_template_id', sa.Integer(), nullable=True))
        op.create_foreign_key(op.f('fk_pools_owner_id_users'), 'pools', 'users', ['owner_id'],
                              ['id'])
        op.create_foreign_key(op.f('fk_pools_site_template_id_templates'), 'pools', 'templates',
                              ['site_template_id'], ['id'])
    op.add_column('vms', sa.Column('site_secrets', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no copy
        for table, column in (('vms', 'site_secrets'), ('pools', 'site_template_id'),
                              ('pools', 'owner_id')):
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    op.drop_column('vms', 'site_secrets')
    op.drop_constraint(op.f('fk_pools_site_template_id_templates'), 'pools', type_='foreignkey')
    op.drop_constraint(op.f('fk_pools_owner_id_users'), 'pools', type_='foreignkey')
    op.drop_column('pools', 'site_template_id')
    op.drop_column('pools', 'owner_id')
