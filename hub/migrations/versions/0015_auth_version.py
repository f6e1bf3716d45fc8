"""auth version: one counter that every change able to refuse an issued token raises

Hub processes cache verified callers and re-read this counter at most a second apart, so a
revocation or suspension reaches every process without a read of the caller's rows on each
request.

Revision ID: 0015
Revises: 0014
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auth_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO auth_version (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table('auth_version')
