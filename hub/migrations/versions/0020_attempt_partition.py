"""attempts.partition, attempts.node_started

The broker now places a job on one of a site's partitions (the one where it finishes first,
near-ties by cost), and the agent submits it there; the attempt keeps that partition, so the
ledger prices the attempt on it. The agent reports whether the attempt's node had to be
started (a powered-down cloud node) so that the ledger charges the start-up only then.
Existing rows keep NULL: unknown, priced as before (the cheapest partition that fits, the
start-up charged on cloud partitions).

Revision ID: 0020
Revises: 0018
"""

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partition', sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column('node_started', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_column('node_started')
        batch_op.drop_column('partition')
