"""dataset manifests in their own table

Listings and dataset pages read ``datasets`` rows; with the manifest (every file's path,
size and checksum) in the same row, a large one made every listing slow (on SQLite the
columns after it are reached through its overflow pages). The manifest moves to
``dataset_manifests``, one row per dataset, read only where it is needed.

Revision ID: 0010
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset_manifests',
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id')
    )
    op.execute("INSERT INTO dataset_manifests (dataset_id, manifest) SELECT id, manifest FROM datasets")
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('manifest')


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('manifest', sa.JSON(), nullable=True))
    op.execute(
        "UPDATE datasets SET manifest = (SELECT m.manifest FROM dataset_manifests m WHERE m.dataset_id = datasets.id)"
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.alter_column('manifest', existing_type=sa.JSON(), nullable=False)
    op.drop_table('dataset_manifests')
