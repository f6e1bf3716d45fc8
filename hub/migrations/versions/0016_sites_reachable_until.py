"""sites.reachable_until

Each heartbeat now writes when its site becomes unreachable without another one
(``last_heartbeat_at + interval × missed_heartbeats``), so the sweep marks silent sites with
one indexed UPDATE instead of loading every online site. Existing rows get it from their
last heartbeat, with the default setting of three missed beats and the 15 s default interval
where a site never said its own.

Revision ID: 0016
Revises: 0015
"""

from datetime import timedelta

from alembic import op
import sqlalchemy as sa
import hub.types


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

#: The defaults of ``missed_heartbeats`` and ``heartbeat_interval_s`` when this was written.
MISSED, INTERVAL_S = 3, 15.0


def upgrade() -> None:
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reachable_until', hub.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_sites_reachable_until'), ['reachable_until'], unique=False)
    sites = sa.table(
        'sites',
        sa.column('id', sa.Integer),
        sa.column('last_heartbeat_at', hub.types.UTCDateTime(timezone=True)),
        sa.column('heartbeat_interval_s', sa.Float),
        sa.column('reachable_until', hub.types.UTCDateTime(timezone=True)),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(sites.c.id, sites.c.last_heartbeat_at, sites.c.heartbeat_interval_s)
                        .where(sites.c.last_heartbeat_at.is_not(None))).all()  # fmt: skip
    for site_id, last, interval in rows:
        until = last + timedelta(seconds=(interval or INTERVAL_S) * MISSED)
        conn.execute(sites.update().where(sites.c.id == site_id).values(reachable_until=until))


def downgrade() -> None:
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sites_reachable_until'))
        batch_op.drop_column('reachable_until')
