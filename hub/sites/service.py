"""Service functions of the facility registry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub.auth.policy import ensure_can_edit_site, ensure_can_read_site
from hub.auth.principal import Principal
from hub.errors import BadRequest, Conflict, Forbidden
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow
from hub.sites.queries import SiteFilter, get_site_by_name, list_sites, site_children
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.sites import Partition, SiteCreate, SitePublic, SiteStatus, SiteUpdate, Software, StorageEndpoint
from shared.schemas.software import MeasuredSoftware


def _replace_children(
    session: Session,
    site_id: int,
    partitions: list[Partition] | None,
    software: list[Software] | None,
    storage: list[StorageEndpoint] | None,
) -> None:
    if partitions is not None:
        session.execute(delete(PartitionRow).where(PartitionRow.site_id == site_id))  # type: ignore[arg-type]
        session.add_all(PartitionRow(site_id=site_id, **p.model_dump(mode="json")) for p in partitions)
    if software is not None:  # what the admin declares; what the agent measured stays
        session.execute(
            delete(SoftwareRow).where(SoftwareRow.site_id == site_id, SoftwareRow.source == "declared")  # type: ignore[arg-type]
        )
        session.add_all(SoftwareRow(site_id=site_id, **s.model_dump()) for s in software)
    if storage is not None:
        session.execute(delete(StorageRow).where(StorageRow.site_id == site_id))  # type: ignore[arg-type]
        session.add_all(StorageRow(site_id=site_id, **e.model_dump()) for e in storage)


def record_measured_software(session: Session, site_id: int, found: list[MeasuredSoftware], at: datetime) -> None:
    """Replace the site's measured software with what its agent just reported (one row per
    CUDA architecture of a GPU build, so the broker matches a job's ``cuda_arch`` as for
    declared software). The agent reports only changes, so this runs rarely."""
    session.execute(
        delete(SoftwareRow).where(SoftwareRow.site_id == site_id, SoftwareRow.source == "measured")  # type: ignore[arg-type]
    )
    for m in found:
        archs: list[str | None] = [*m.cuda_archs] or [None]
        for arch in archs:
            session.add(
                SoftwareRow(site_id=site_id, name=m.name.lower(), version=m.version, cuda_arch=arch, notes=m.notes,
                            source="measured", build=m.build, mpi=m.mpi, path=m.path, measured_at=at)
            )  # fmt: skip


def create_site(session: Session, data: SiteCreate) -> Site:
    if session.exec(select(Site.id).where(Site.name == data.name)).first() is not None:
        raise Conflict(f"a site named {data.name!r} already exists")
    site = Site(
        **data.model_dump(exclude={"partitions", "software", "storage", "contacts"}),
        contacts=[c.model_dump() for c in data.contacts],
    )
    session.add(site)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a site named {data.name!r} already exists") from exc
    assert site.id is not None
    _replace_children(session, site.id, data.partitions, data.software, data.storage)
    session.flush()
    return site


def update_site(session: Session, principal: Principal, name: str, data: SiteUpdate) -> Site:
    site = get_site_by_name(session, name)
    ensure_can_edit_site(principal, site)
    changes = data.model_dump(exclude_unset=True, exclude={"partitions", "software", "storage"})
    for field in ("display_name", "institution", "country"):
        if field in changes and changes[field] is None:
            raise BadRequest(f"{field} cannot be cleared")
    if "institution" in changes and principal.role is not Role.NETWORK_ADMIN:
        raise Forbidden("only a network admin can move a site to another institution")
    if "contacts" in changes:
        changes["contacts"] = [c.model_dump() for c in data.contacts or []]
    for field, value in changes.items():
        setattr(site, field, value)
    site.updated_at = utcnow()
    session.add(site)
    assert site.id is not None
    _replace_children(session, site.id, data.partitions, data.software, data.storage)
    session.flush()
    return site


def set_status(session: Session, name: str, status: SiteStatus) -> Site:
    site = get_site_by_name(session, name)
    site.status = status.value
    site.updated_at = utcnow()
    session.add(site)
    session.flush()
    return site


def read_site(session: Session, principal: Principal, name: str) -> Site:
    site = get_site_by_name(session, name)
    ensure_can_read_site(principal, site)
    return site


def search_sites(session: Session, principal: Principal, f: SiteFilter, limit: int, offset: int) -> tuple[list[SitePublic], int]:
    if principal.role is Role.AGENT:
        f = SiteFilter(**{**f.__dict__, "only_site_id": principal.site_id})
    rows, total = list_sites(session, f, limit, offset)
    return to_public(session, rows), total


def to_public(session: Session, sites: Sequence[Site]) -> list[SitePublic]:
    ids = [s.id for s in sites if s.id is not None]
    parts, soft, store = site_children(session, ids)
    out = []
    for s in sites:
        assert s.id is not None
        out.append(
            SitePublic.model_validate(
                {
                    **s.model_dump(),
                    "partitions": [p.model_dump() for p in parts[s.id]],
                    "software": [x.model_dump() for x in soft[s.id]],
                    "storage": [e.model_dump() for e in store[s.id]],
                },
                extra="ignore",  # the rows carry ids and foreign keys the schema does not show
            )
        )
    return out
