"""registry changes: the counter the broker's kept site views read before anything else

Every transaction that writes what a site view reads (sites, partitions, software, policies,
replicas, run-time statistics) raises it as it commits (hub/broker/changes.py), so a
submission on an unchanged registry reads one row instead of scanning every site. It had
been kept as a second row of ``auth_version``, a table with another meaning; it has its own
table now.

Revision ID: 0022
Revises: 0021
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('registry_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO registry_changes (id, version) VALUES (1, 0)")
    op.execute("DELETE FROM auth_version WHERE id <> 1")


def downgrade() -> None:
    op.drop_table('registry_changes')
