"""datasets.owner, drs_presign_requests

A job's output registered as a dataset (a job spec's ``outputs``, a TES task's ``drs://``
outputs) now belongs to the job's submitter and institution; ``owner`` names the submitter.
Datasets registered before keep no owner.

``drs_presign_requests``: a DRS access call waiting for a site's agent to sign a GET URL of
an object in the site's S3 bucket (the hub holds no storage credentials).

Revision ID: 0018
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import hub.types


revision = '0018'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
    op.create_table('drs_presign_requests',
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('signed_url', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=2100), nullable=False),
    sa.Column('ttl_s', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('expires_at', hub.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', hub.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('drs_presign_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drs_presign_requests_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_drs_presign_requests_site_id'), ['site_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('drs_presign_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drs_presign_requests_site_id'))
        batch_op.drop_index(batch_op.f('ix_drs_presign_requests_created_at'))
    op.drop_table('drs_presign_requests')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('owner')
