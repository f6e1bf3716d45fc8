"""dataset files as rows; paged uploads

A manifest was one JSON value in ``dataset_manifests``: registering 340,000 files held the
whole of it in hub memory several times over. Each file becomes a row of ``dataset_files``
(dataset, path, size, checksum), written and read a page at a time. ``dataset_uploads`` and
``dataset_upload_files`` hold paged registrations until they complete.

Existing manifests are moved into rows, one dataset at a time; the downgrade builds the JSON
values back from the rows (its files in path order, with the digest kept on ``datasets``).

Revision ID: 0011
Revises: 0010
"""

import json

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# On PostgreSQL, paths compare bytewise, the order the manifest digest is taken in.
PATH = sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql")
BATCH = 5000


def upgrade() -> None:
    op.create_table('dataset_files',
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('path', PATH, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('checksum', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id', 'path')
    )
    op.create_table('dataset_uploads',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=300), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('location', sa.String(length=2000), nullable=False),
    sa.Column('algorithm', sa.String(length=20), nullable=False),
    sa.Column('file_count', sa.BigInteger(), nullable=False),
    sa.Column('total_bytes', sa.BigInteger(), nullable=False),
    sa.Column('received_files', sa.BigInteger(), nullable=False),
    sa.Column('received_bytes', sa.BigInteger(), nullable=False),
    sa.Column('next_page', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_dataset_uploads_site_id'), 'dataset_uploads', ['site_id'], unique=False)
    op.create_index(op.f('ix_dataset_uploads_expires_at'), 'dataset_uploads', ['expires_at'], unique=False)
    op.create_table('dataset_upload_files',
    sa.Column('upload_id', sa.String(length=40), nullable=False),
    sa.Column('path', PATH, nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('checksum', sa.String(length=200), nullable=False),
    sa.Column('page', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['dataset_uploads.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('upload_id', 'path')
    )

    conn = op.get_bind()
    files = sa.table('dataset_files', sa.column('dataset_id'), sa.column('path'), sa.column('size'), sa.column('checksum'))
    ids = [r[0] for r in conn.execute(sa.text("SELECT dataset_id FROM dataset_manifests"))]
    for dataset_id in ids:
        raw = conn.execute(sa.text("SELECT manifest FROM dataset_manifests WHERE dataset_id = :d"), {"d": dataset_id}).scalar()
        manifest = json.loads(raw) if isinstance(raw, str) else raw
        rows = [{"dataset_id": dataset_id, "path": f["path"], "size": f["size"], "checksum": f["checksum"]}
                for f in (manifest or {}).get("files", [])]
        for i in range(0, len(rows), BATCH):
            conn.execute(files.insert(), rows[i:i + BATCH])
    op.drop_table('dataset_manifests')


def downgrade() -> None:
    op.create_table('dataset_manifests',
    sa.Column('dataset_id', sa.String(length=40), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id')
    )
    conn = op.get_bind()
    manifests = sa.table('dataset_manifests', sa.column('dataset_id'), sa.column('manifest', sa.JSON()))
    for dataset_id, algorithm, digest in conn.execute(sa.text("SELECT id, checksum_algorithm, manifest_digest FROM datasets")):
        files = [{"path": p, "size": s, "checksum": c} for p, s, c in conn.execute(
            sa.text("SELECT path, size, checksum FROM dataset_files WHERE dataset_id = :d"), {"d": dataset_id})]
        files.sort(key=lambda f: f["path"])
        conn.execute(manifests.insert(), [{"dataset_id": dataset_id,
                                           "manifest": {"algorithm": algorithm, "files": files, "digest": digest}}])
    op.drop_table('dataset_upload_files')
    op.drop_index(op.f('ix_dataset_uploads_expires_at'), table_name='dataset_uploads')
    op.drop_index(op.f('ix_dataset_uploads_site_id'), table_name='dataset_uploads')
    op.drop_table('dataset_uploads')
    op.drop_table('dataset_files')
