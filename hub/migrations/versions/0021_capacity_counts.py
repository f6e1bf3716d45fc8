"""capacity_latest: the counts a network summary adds up, as integer columns

A network summary summed CPUs and GPUs by model out of every site's snapshot JSON (two
passes of the database's JSON functions over every row: at 10,000 sites most of a summary's
time, paid again after every heartbeat). The counts are now columns written with the
snapshot: cpus_total, cpus_free, gpus_total, gpus_free (all models), gpu_model (the site's
only model, NULL for none or several) and gpu_models (how many). Existing rows are filled
from their JSON here. A partial index finds the sites with several GPU models. On SQLite
only, narrow indexes let a summary read neither the snapshots nor the sites' rows:
capacity_latest (site_id, counts) and (received_at), sites (status, reachability,
updated_at, last_heartbeat_at, id); PostgreSQL's summary hash-joins the tables without
them, and there they would make every snapshot update non-HOT.

Revision ID: 0021
Revises: 0020
"""

from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

_COUNTS = ('cpus_total', 'cpus_free', 'gpus_total', 'gpus_free')

_SQLITE_FILL = """
UPDATE capacity_latest SET
    cpus_total = coalesce(json_extract(totals, '$.cpus_total'), 0),
    cpus_free = coalesce(json_extract(totals, '$.cpus_free'), 0),
    gpus_total = (SELECT coalesce(sum(json_extract(g.value, '$.total')), 0) FROM json_each(totals, '$.gpus') g),
    gpus_free = (SELECT coalesce(sum(json_extract(g.value, '$.free')), 0) FROM json_each(totals, '$.gpus') g),
    gpu_models = (SELECT count(*) FROM json_each(totals, '$.gpus')),
    gpu_model = CASE WHEN (SELECT count(*) FROM json_each(totals, '$.gpus')) = 1
        THEN (SELECT g.key FROM json_each(totals, '$.gpus') g) END"""

_PG_FILL = """
UPDATE capacity_latest SET
    cpus_total = coalesce((totals::json ->> 'cpus_total')::bigint, 0),
    cpus_free = coalesce((totals::json ->> 'cpus_free')::bigint, 0),
    gpus_total = (SELECT coalesce(sum((g.value ->> 'total')::bigint), 0) FROM json_each(totals::json -> 'gpus') g),
    gpus_free = (SELECT coalesce(sum((g.value ->> 'free')::bigint), 0) FROM json_each(totals::json -> 'gpus') g),
    gpu_models = (SELECT count(*) FROM json_each(totals::json -> 'gpus')),
    gpu_model = CASE WHEN (SELECT count(*) FROM json_each(totals::json -> 'gpus')) = 1
        THEN (SELECT g.key FROM json_each(totals::json -> 'gpus') g) END"""


def upgrade() -> None:
    with op.batch_alter_table('capacity_latest', schema=None) as batch_op:
        for name in _COUNTS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('gpu_model', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('gpu_models', sa.Integer(), server_default=sa.text('0'), nullable=False))
    sqlite = op.get_bind().dialect.name == 'sqlite'
    op.execute(_SQLITE_FILL if sqlite else _PG_FILL)
    if sqlite:  # read by SQLite's summary; on PostgreSQL they would only cost heartbeats
        op.create_index(
            'ix_capacity_latest_sums',
            'capacity_latest',
            ['site_id', 'gpu_model', 'cpus_total', 'cpus_free', 'gpus_total', 'gpus_free'],
        )
        op.create_index('ix_capacity_latest_received_at', 'capacity_latest', ['received_at'])
        op.create_index(
            'ix_sites_summary', 'sites', ['status', 'reachability', 'updated_at', 'last_heartbeat_at', 'id']
        )
    op.create_index(
        'ix_capacity_latest_several_gpus',
        'capacity_latest',
        ['site_id'],
        sqlite_where=sa.text('gpu_models > 1'),
        postgresql_where=sa.text('gpu_models > 1'),
    )


def downgrade() -> None:
    op.drop_index('ix_capacity_latest_several_gpus', table_name='capacity_latest')
    if op.get_bind().dialect.name == 'sqlite':
        op.drop_index('ix_sites_summary', table_name='sites')
        op.drop_index('ix_capacity_latest_sums', table_name='capacity_latest')
        op.drop_index('ix_capacity_latest_received_at', table_name='capacity_latest')
    with op.batch_alter_table('capacity_latest', schema=None) as batch_op:
        batch_op.drop_column('gpu_models')
        batch_op.drop_column('gpu_model')
        for name in reversed(_COUNTS):
            batch_op.drop_column(name)
