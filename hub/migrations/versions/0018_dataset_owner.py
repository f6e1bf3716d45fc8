"""datasets.owner

A job's output registered as a dataset (a job spec's ``outputs``, a TES task's ``drs://``
outputs) now belongs to the job's submitter and institution; ``owner`` names the submitter.
Datasets registered before keep no owner.

Revision ID: 0018
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0018'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('owner')
