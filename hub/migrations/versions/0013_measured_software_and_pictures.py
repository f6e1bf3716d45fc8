"""measured software beside declared software; small pictures of jobs and datasets

``site_software`` rows say where they came from (``source``: declared by the site's admin
or measured by its agent) and, when measured, the build (cpu/cuda), MPI, the install path
and when. ``pictures`` holds the small PNGs agents make of a job's results (2D class
averages) and of a dataset's images (particle thumbnails).

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa

import hub.types


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('site_software', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=10), server_default='declared', nullable=False))
        batch_op.add_column(sa.Column('build', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('mpi', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('path', sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column('measured_at', hub.types.UTCDateTime(timezone=True), nullable=True))
    op.create_table('pictures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=10), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('caption', sa.String(length=300), nullable=True),
    sa.Column('share', sa.Float(), nullable=True),
    sa.Column('pixel_size_a', sa.Float(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('png', sa.LargeBinary(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('created_at', hub.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subject', 'subject_id', 'name')
    )
    with op.batch_alter_table('pictures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pictures_subject_id'), ['subject_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pictures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pictures_subject_id'))
    op.drop_table('pictures')
    with op.batch_alter_table('site_software', schema=None) as batch_op:
        batch_op.drop_column('measured_at')
        batch_op.drop_column('path')
        batch_op.drop_column('mpi')
        batch_op.drop_column('build')
        batch_op.drop_column('source')
