"""A dataset's files: one row each in ``dataset_files``, written and read in batches.

Nothing here holds a whole manifest except ``manifest_of``, which builds the ``Manifest`` the
agents' audit and transfer work carries. Files are read in path order by keyset (``path >
last``), which the primary key's index serves on both databases (on PostgreSQL the column is
in the "C" collation, so the order is the one the manifest digest is taken in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Engine, insert
from sqlmodel import Session, col, select

from hub.datasets.models import Dataset, DatasetFile
from hub.db import transaction
from shared.schemas.datasets import ChecksumAlgorithm, Manifest, ManifestFile, ManifestFilesPage

#: Rows written or read per statement.
BATCH = 5000

Row = tuple[str, int, str]


def add(session: Session, dataset_id: str, rows: Iterable[Row]) -> None:
    """Insert files of ``dataset_id``, ``BATCH`` rows a statement."""
    batch: list[dict[str, Any]] = []
    for path, size, checksum in rows:
        batch.append({"dataset_id": dataset_id, "path": path, "size": size, "checksum": checksum})
        if len(batch) == BATCH:
            session.execute(insert(DatasetFile), batch)
            batch = []
    if batch:
        session.execute(insert(DatasetFile), batch)


def batch_after(session: Session, dataset_id: str, after: str | None, limit: int) -> list[Row]:
    """Up to ``limit`` files of the dataset whose path sorts after ``after``, in path order."""
    stmt = select(DatasetFile.path, DatasetFile.size, DatasetFile.checksum).where(DatasetFile.dataset_id == dataset_id)
    if after is not None:
        stmt = stmt.where(col(DatasetFile.path) > after)
    return [tuple(r) for r in session.exec(stmt.order_by(col(DatasetFile.path)).limit(limit)).all()]  # type: ignore[misc]


def iter_rows(session: Session, dataset_id: str) -> Iterator[Row]:
    """Every file of the dataset, in path order, ``BATCH`` rows in memory at a time."""
    after: str | None = None
    while rows := batch_after(session, dataset_id, after, BATCH):
        yield from rows
        after = rows[-1][0]


def entries(session: Session, dataset_id: str) -> Iterator[dict[str, Any]]:
    """Every file of the dataset as a manifest entry (path, size, checksum), in path order, streamed."""
    for path, size, checksum in iter_rows(session, dataset_id):
        yield {"path": path, "size": size, "checksum": checksum}


def page(session: Session, ds: Dataset, after: str | None, limit: int) -> ManifestFilesPage:
    rows = batch_after(session, ds.id, after, limit)
    return ManifestFilesPage(
        dataset=ds.id,
        algorithm=ChecksumAlgorithm(ds.checksum_algorithm),
        digest=ds.manifest_digest,
        file_count=ds.file_count,
        total_bytes=ds.total_bytes,
        files=[ManifestFile.model_construct(path=p, size=s, checksum=c) for p, s, c in rows],
        next_after=rows[-1][0] if len(rows) == limit else None,
    )


def manifest_of(session: Session, ds: Dataset) -> Manifest:
    """The whole manifest, for the agents' audit and transfer work (whose wire payload carries
    it). Rows were checked when they were registered, so they are not validated again."""
    files = [ManifestFile.model_construct(path=p, size=s, checksum=c) for p, s, c in iter_rows(session, ds.id)]
    return Manifest.model_construct(algorithm=ChecksumAlgorithm(ds.checksum_algorithm), files=files, digest=ds.manifest_digest)


def stream_json(engine: Engine, ds: Dataset) -> Iterator[bytes]:
    """The manifest as the JSON of ``Manifest``, a batch of rows at a time, each batch read in
    its own short transaction (a slow reader holds no transaction open)."""
    yield b'{"algorithm":' + json.dumps(ds.checksum_algorithm).encode() + b',"files":['
    after: str | None = None
    first = True
    while True:
        with transaction(engine) as session:
            rows = batch_after(session, ds.id, after, BATCH)
        if not rows:
            break
        text = ",".join(json.dumps({"path": p, "size": s, "checksum": c}, ensure_ascii=False) for p, s, c in rows)
        yield (text if first else "," + text).encode()
        first = False
        after = rows[-1][0]
    yield b'],"digest":' + json.dumps(ds.manifest_digest).encode() + b"}"
