"""TES tasks: the TES-only facts of jobs made through /ga4gh/tes/v1, and their tags

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tes_tasks',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('task', sa.JSON(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.create_index(op.f('ix_tes_tasks_name'), 'tes_tasks', ['name'], unique=False)
    op.create_table('tes_tags',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('value', sa.String(length=1000), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'key')
    )
    op.create_index('ix_tes_tags_key_value', 'tes_tags', ['key', 'value'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tes_tags_key_value', table_name='tes_tags')
    op.drop_table('tes_tags')
    op.drop_index(op.f('ix_tes_tasks_name'), table_name='tes_tasks')
    op.drop_table('tes_tasks')
