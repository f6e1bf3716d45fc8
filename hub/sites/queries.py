"""Queries of the facility registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.errors import NotFound
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow


@dataclass(frozen=True)
class SiteFilter:
    status: str | None = None
    reachability: str | None = None
    country: str | None = None
    institution: str | None = None
    gpu_model: str | None = None
    software: str | None = None
    q: str | None = None
    only_site_id: int | None = None


def get_site_by_name(session: Session, name: str) -> Site:
    site = session.exec(select(Site).where(Site.name == name)).first()
    if site is None:
        raise NotFound(f"no site named {name!r}")
    return site


def list_sites(session: Session, f: SiteFilter, limit: int, offset: int) -> tuple[Sequence[Site], int]:
    stmt = select(Site)
    if f.status:
        stmt = stmt.where(Site.status == f.status)
    if f.reachability:
        stmt = stmt.where(Site.reachability == f.reachability)
    if f.country:
        stmt = stmt.where(Site.country == f.country.upper())
    if f.institution:
        stmt = stmt.where(Site.institution == f.institution)
    if f.gpu_model:
        has_gpu = select(PartitionRow.site_id).where(func.lower(PartitionRow.gpu_model) == f.gpu_model.lower())
        stmt = stmt.where(col(Site.id).in_(has_gpu))
    if f.software:
        has_sw = select(SoftwareRow.site_id).where(func.lower(SoftwareRow.name) == f.software.lower())
        stmt = stmt.where(col(Site.id).in_(has_sw))
    if f.q:
        like = f"%{f.q.lower()}%"
        stmt = stmt.where(
            func.lower(Site.name).like(like)
            | func.lower(Site.display_name).like(like)
            | func.lower(func.coalesce(Site.description, "")).like(like)
        )
    if f.only_site_id is not None:
        stmt = stmt.where(Site.id == f.only_site_id)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Site.name)).limit(limit).offset(offset)).all()
    return rows, total


def site_children(
    session: Session, site_ids: Sequence[int]
) -> tuple[dict[int, list[PartitionRow]], dict[int, list[SoftwareRow]], dict[int, list[StorageRow]]]:
    """Partitions, software and storage of many sites in three queries."""
    parts: dict[int, list[PartitionRow]] = {i: [] for i in site_ids}
    soft: dict[int, list[SoftwareRow]] = {i: [] for i in site_ids}
    store: dict[int, list[StorageRow]] = {i: [] for i in site_ids}
    if not site_ids:
        return parts, soft, store
    for p in session.exec(select(PartitionRow).where(col(PartitionRow.site_id).in_(site_ids)).order_by(col(PartitionRow.name))):
        parts[p.site_id].append(p)
    for s in session.exec(select(SoftwareRow).where(col(SoftwareRow.site_id).in_(site_ids)).order_by(col(SoftwareRow.name))):
        soft[s.site_id].append(s)
    for e in session.exec(select(StorageRow).where(col(StorageRow.site_id).in_(site_ids)).order_by(col(StorageRow.name))):
        store[e.site_id].append(e)
    return parts, soft, store
