"""Paged registration: a dataset too large for one body arrives as a description, then pages
of files, then a completion at which the hub checks them. Memory stays bounded by a page.

1. ``start``: the description, location, checksum algorithm and the number of files and bytes
   to come. Nothing is visible yet: an upload is not a dataset.
2. ``add_page``: pages numbered from 0, in order, each of at most ``MAX_PAGE_FILES`` files.
   A path already received in another page is refused (409 naming it); a page sent again
   (its answer was lost) is accepted if it lists the same files, so the agent can resume at
   ``next_page``.
3. ``complete``: the count and bytes must match what ``start`` announced, and the digest the
   hub computes, streaming the received files in path order, must match the agent's. Only then
   are the dataset and its AVAILABLE replica created (the files copied into ``dataset_files``
   by one INSERT ... SELECT), in one transaction.

Only the agent that started an upload may add to it, complete or cancel it. An upload with
no page for ``dataset_upload_ttl_s`` is discarded by the hub's sweep (``expire``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import delete, insert, literal
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets import service
from hub.datasets.models import Dataset, DatasetFile, DatasetUpload, DatasetUploadFile
from hub.errors import Conflict, NotFound
from hub.settings import HubSettings
from hub.types import utcnow
from shared.schemas.datasets import (
    MAX_PAGE_FILES,
    ChecksumAlgorithm,
    DatasetUploadCreate,
    DatasetUploadPublic,
    ManifestDigest,
    ManifestPageIn,
    UploadComplete,
)

log = logging.getLogger("cryomesh.hub.uploads")

#: Rows read per statement while the digest is computed.
BATCH = 5000
#: Paths looked up per statement when a page is checked for paths already received.
LOOKUP = 500


def start(session: Session, principal: Principal, data: DatasetUploadCreate, settings: HubSettings) -> DatasetUpload:
    site = service.agent_site(session, principal)
    assert site.id is not None
    service.refuse_duplicate(session, site, data.location)
    service.owner_of(session, site, data.source_job)  # refused now rather than after every page
    up = DatasetUpload(
        id=f"up-{uuid.uuid4().hex[:16]}",
        site_id=site.id,
        client_id=principal.label(),
        body=data.model_dump(mode="json"),
        location=data.location,
        algorithm=data.algorithm.value,
        file_count=data.file_count,
        total_bytes=data.total_bytes,
        expires_at=utcnow() + timedelta(seconds=settings.dataset_upload_ttl_s),
    )
    session.add(up)
    session.flush()
    log.info("upload %s started by %s: %d files for %s", up.id, up.client_id, up.file_count, up.location)
    return up


def get_own(session: Session, principal: Principal, upload_id: str) -> DatasetUpload:
    """The upload, if the caller is the agent that started it: people get 403, other agents
    (of this site or another) 404, as if it did not exist."""
    site = service.agent_site(session, principal)
    up = session.get(DatasetUpload, upload_id)
    if up is None or up.site_id != site.id or up.client_id != principal.label() or up.expires_at <= utcnow():
        raise NotFound(f"no upload {upload_id!r} (uploads expire when no page arrives for a while; start again)")
    return up


def add_page(
    session: Session, principal: Principal, upload_id: str, data: ManifestPageIn, settings: HubSettings
) -> DatasetUpload:
    up = get_own(session, principal, upload_id)
    if data.page < up.next_page:
        _same_as_received(session, up, data)
        return up
    if data.page > up.next_page:
        raise Conflict(f"upload {up.id} expects page {up.next_page} next, not page {data.page}")
    if up.received_files + len(data.files) > up.file_count:
        raise Conflict(
            f"upload {up.id} announced {up.file_count} files; {up.received_files} received and this page adds {len(data.files)}"
        )
    paths = [f.path for f in data.files]
    for i in range(0, len(paths), LOOKUP):
        dup = session.exec(
            select(DatasetUploadFile.path).where(
                DatasetUploadFile.upload_id == up.id, col(DatasetUploadFile.path).in_(paths[i : i + LOOKUP])
            )
        ).first()
        if dup is not None:
            raise Conflict(f"{dup!r} was already received in an earlier page of upload {up.id}; each path is listed once")
    session.execute(
        insert(DatasetUploadFile),
        [{"upload_id": up.id, "path": f.path, "size": f.size, "checksum": f.checksum, "page": data.page} for f in data.files],
    )
    up.received_files += len(data.files)
    up.received_bytes += sum(f.size for f in data.files)
    up.next_page += 1
    up.expires_at = utcnow() + timedelta(seconds=settings.dataset_upload_ttl_s)
    session.add(up)
    session.flush()
    return up


def _same_as_received(session: Session, up: DatasetUpload, data: ManifestPageIn) -> None:
    """A page sent again is fine if it is the page received; anything else is a 409."""
    stored = {
        (p, s, c)
        for p, s, c in session.exec(
            select(DatasetUploadFile.path, DatasetUploadFile.size, DatasetUploadFile.checksum).where(
                DatasetUploadFile.upload_id == up.id, DatasetUploadFile.page == data.page
            )
        )
    }
    if stored != {(f.path, f.size, f.checksum) for f in data.files}:
        raise Conflict(f"page {data.page} of upload {up.id} was already received with other files; send page {up.next_page}")


def _digest_of_received(session: Session, up: DatasetUpload) -> ManifestDigest:
    digest = ManifestDigest(up.algorithm)
    after: str | None = None
    while True:
        stmt = select(DatasetUploadFile.path, DatasetUploadFile.size, DatasetUploadFile.checksum).where(
            DatasetUploadFile.upload_id == up.id
        )
        if after is not None:
            stmt = stmt.where(col(DatasetUploadFile.path) > after)
        rows = session.exec(stmt.order_by(col(DatasetUploadFile.path)).limit(BATCH)).all()
        if not rows:
            return digest
        for path, size, checksum in rows:
            digest.add(path, size, checksum)
        after = rows[-1][0]


def complete(session: Session, principal: Principal, upload_id: str, data: UploadComplete) -> Dataset:
    up = get_own(session, principal, upload_id)
    if (up.received_files, up.received_bytes) != (up.file_count, up.total_bytes):
        raise Conflict(
            f"upload {up.id} announced {up.file_count} files of {up.total_bytes} bytes and has received "
            f"{up.received_files} files of {up.received_bytes} bytes; send page {up.next_page} onwards, then complete"
        )
    digest = _digest_of_received(session, up).hexdigest()
    if digest != data.digest:
        raise Conflict(
            f"the files received for upload {up.id} have digest {digest}, not {data.digest}: the manifest changed while it "
            f"was sent or a page was altered; nothing was registered (cancel the upload and register again)"
        )
    site = service.agent_site(session, principal)
    service.refuse_duplicate(session, site, up.location)
    body = DatasetUploadCreate.model_validate(up.body)
    ds = service.create(session, principal, site, body, up.algorithm, digest, up.file_count, up.total_bytes)
    session.execute(
        insert(DatasetFile).from_select(
            ["dataset_id", "path", "size", "checksum"],
            select(literal(ds.id), DatasetUploadFile.path, DatasetUploadFile.size, DatasetUploadFile.checksum).where(
                DatasetUploadFile.upload_id == up.id
            ),
        )
    )
    _discard(session, up)
    log.info("upload %s completed as dataset %s (%d files)", up.id, ds.id, ds.file_count)
    return ds


def cancel(session: Session, principal: Principal, upload_id: str) -> None:
    _discard(session, get_own(session, principal, upload_id))


def _discard(session: Session, up: DatasetUpload) -> None:
    session.execute(delete(DatasetUploadFile).where(col(DatasetUploadFile.upload_id) == up.id))
    session.execute(delete(DatasetUpload).where(col(DatasetUpload.id) == up.id))
    session.flush()


def expire(session: Session) -> int:
    """Discard uploads whose time ran out (run by the sweep); returns how many."""
    stale = session.exec(select(DatasetUpload).where(col(DatasetUpload.expires_at) <= utcnow())).all()
    for up in stale:
        log.info("upload %s by %s expired with %d of %d files", up.id, up.client_id, up.received_files, up.file_count)
        _discard(session, up)
    return len(stale)


def to_public(up: DatasetUpload, settings: HubSettings) -> DatasetUploadPublic:
    return DatasetUploadPublic(
        id=up.id,
        location=up.location,
        algorithm=ChecksumAlgorithm(up.algorithm),
        file_count=up.file_count,
        total_bytes=up.total_bytes,
        received_files=up.received_files,
        received_bytes=up.received_bytes,
        next_page=up.next_page,
        max_page_files=MAX_PAGE_FILES,
        max_page_bytes=settings.max_body_bytes,
        expires_at=up.expires_at,
        created_at=up.created_at,
    )
