"""prices on partitions, cost in the usage ledger, institutions' budgets, run-time stats per site and kind

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa

import hub.types


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('budgets',
    sa.Column('institution', sa.String(length=200), nullable=False),
    sa.Column('monthly_limit', sa.Float(), nullable=False),
    sa.Column('warn_at', sa.Float(), nullable=False),
    sa.Column('enforce', sa.Boolean(), nullable=False),
    sa.Column('updated_at', hub.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('institution')
    )
    op.create_table('runtime_stats',
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('mean', sa.Float(), nullable=False),
    sa.Column('m2', sa.Float(), nullable=False),
    sa.Column('updated_at', hub.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('site_id', 'kind')
    )
    with op.batch_alter_table('partitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spot', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('cost', sa.JSON(), nullable=True))
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.drop_column('cost')
    with op.batch_alter_table('partitions', schema=None) as batch_op:
        batch_op.drop_column('cost')
        batch_op.drop_column('spot')
    op.drop_table('runtime_stats')
    op.drop_table('budgets')
