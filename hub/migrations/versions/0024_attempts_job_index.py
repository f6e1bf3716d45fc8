"""attempts: no index of job_id alone

The unique (job_id, number) constraint's index already finds a job's attempts (job_id leads
it, on SQLite and PostgreSQL alike), so the index of job_id alone only cost every attempt
written one more index entry (a broker pass writes an attempt for each job it places).

Revision ID: 0024
Revises: 0023
"""

from alembic import op


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_attempts_job_id', table_name='attempts')


def downgrade() -> None:
    op.create_index('ix_attempts_job_id', 'attempts', ['job_id'], unique=False)
