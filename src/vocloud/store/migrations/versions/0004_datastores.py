"""datastores; image-size quota; images know their datastore and whether vocloud owns the file

Revision ID: 0004
Revises: 0005 (re-chained after nets' 0005, already on main)
Create Date: 2026-12-02 00:10:00

The quota's ``image_mib_used`` is filled from the images already registered, so deleting one of
them later refunds what it was charged and usage never goes negative. The ``default`` datastore
row is made by the daemon at start (it alone knows the data directory), not here.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datastores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datastores')),
    sa.UniqueConstraint('name', name=op.f('uq_datastores_name')),
    sqlite_autoincrement=True,  # ids never reused (store/sqlite_ids.py)
    )
    with op.batch_alter_table('quotas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_mib_limit', sa.BigInteger(), nullable=False,
                                      server_default='-1'))
        batch_op.add_column(sa.Column('image_mib_used', sa.BigInteger(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('datastore_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('uploaded', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.create_foreign_key(batch_op.f('fk_images_datastore_id_datastores'), 'datastores',
                                    ['datastore_id'], ['id'])
    for scope, column in (('user', 'owner_id'), ('group', 'group_id')):
        op.execute(
            "UPDATE quotas SET image_mib_used = (SELECT COALESCE(SUM(images.size_mib), 0) "
            f"FROM images WHERE images.{column} = quotas.scope_id) WHERE quotas.scope = '{scope}'"
        )


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_images_datastore_id_datastores'), type_='foreignkey')
        batch_op.drop_column('uploaded')
        batch_op.drop_column('datastore_id')
    with op.batch_alter_table('quotas', schema=None) as batch_op:
        batch_op.drop_column('image_mib_used')
        batch_op.drop_column('image_mib_limit')
    op.drop_table('datastores')
