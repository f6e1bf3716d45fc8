"""Registering, finding and showing datasets, within what each caller may see.

Visibility: ``public`` and ``network`` datasets are seen by everyone signed in;
``private`` ones only by the owner site's institution (its researchers, its site admins,
its agents) and network admins. A dataset the caller may not see answers 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from hub.auth.principal import Principal
from hub.datasets import files, refs
from hub.datasets.models import Dataset, Replica
from hub.errors import Conflict, Forbidden, NotFound
from hub.jobs.models import Attempt, Job
from hub.sites.models import Site
from hub.types import utcnow
from shared.schemas.auth import Role
from shared.schemas.datasets import (
    DatasetCreate,
    DatasetMetadata,
    DatasetPublic,
    DatasetUpdate,
    DatasetUploadCreate,
    ReplicaPublic,
    ReplicaState,
)


@dataclass(frozen=True)
class DatasetFilter:
    q: str | None = None
    experiment_type: str | None = None
    detector: str | None = None
    pixel_size_min: float | None = None
    pixel_size_max: float | None = None
    site: str | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    visibility: str | None = None
    source_job: str | None = None


def _visible_clause(principal: Principal):  # type: ignore[no-untyped-def]
    if principal.role is Role.NETWORK_ADMIN:
        return None
    shared = col(Dataset.visibility).in_(("public", "network"))
    if principal.institution:
        return or_(shared, col(Dataset.institution) == principal.institution)
    return shared


def register(session: Session, principal: Principal, data: DatasetCreate) -> Dataset:
    """The one-shot registration: the whole manifest in one body (up to ``max_manifest_body_bytes``;
    larger ones go through hub.datasets.uploads)."""
    site = agent_site(session, principal)
    refuse_duplicate(session, site, data.location)
    ds = create(session, principal, site, data, data.manifest.algorithm.value, data.manifest.digest,
                len(data.manifest.files), data.manifest.total_bytes)  # fmt: skip
    files.add(session, ds.id, ((f.path, f.size, f.checksum) for f in data.manifest.files))
    return ds


def agent_site(session: Session, principal: Principal) -> Site:
    """The calling agent's site; datasets are registered by agents only (others: 403)."""
    if principal.role is not Role.AGENT or principal.site_id is None:
        raise Forbidden("datasets are registered by a site's agent (cryomesh datasets register on the site)")
    site = session.get(Site, principal.site_id)
    assert site is not None and site.id is not None
    return site


def create(
    session: Session,
    principal: Principal,
    site: Site,
    data: DatasetCreate | DatasetUploadCreate,
    algorithm: str,
    digest: str,
    file_count: int,
    total_bytes: int,
) -> Dataset:
    """The dataset row and its first replica, AVAILABLE at ``site``; the caller writes its files."""
    assert site.id is not None
    institution, owner = owner_of(session, site, data.source_job)
    meta = data.model_dump(
        mode="json", include={"sample", "instrument", "detector", "acquisition", "image_sets", "cross_references"}
    )
    ds = Dataset(
        id=f"ds-{uuid.uuid4().hex[:16]}",
        owner_site_id=site.id,
        institution=institution,
        owner=owner,
        title=data.title,
        description=data.description,
        experiment_type=data.experiment_type.value,
        visibility=data.visibility.value,
        embargo_until=data.embargo_until,
        owner_group=data.owner_group,
        sample_name=data.sample.name if data.sample else None,
        detector_model=data.detector.model,
        pixel_size_a=data.acquisition.pixel_size_a or next((s.pixel_size_a for s in data.image_sets if s.pixel_size_a), None),
        meta=meta,
        checksum_algorithm=algorithm,
        manifest_digest=digest,
        file_count=file_count,
        total_bytes=total_bytes,
        source_datasets=data.source_datasets,
        source_job=data.source_job,
        registered_by=principal.label(),
    )
    session.add(ds)
    session.flush()
    now = utcnow()
    session.add(
        Replica(dataset_id=ds.id, site_id=site.id, state=ReplicaState.AVAILABLE.value, location=data.location, verified_at=now)
    )
    session.flush()
    return ds


def owner_of(session: Session, site: Site, source_job: str | None) -> tuple[str, str | None]:
    """(institution, owner) of a new dataset: the site's institution and no owner, but a job's
    output is the job's (its institution and submitter), and only the agent of a site the job
    ran at may say a dataset is (403 otherwise)."""
    if source_job is None:
        return site.institution, None
    job = session.get(Job, source_job)
    ran_here = (
        job is not None
        and session.exec(
            select(Attempt.id).where(Attempt.job_id == job.id, Attempt.site_id == site.id, col(Attempt.claimed_at).is_not(None))
        ).first()
    )
    if job is None or ran_here is None:
        raise Forbidden(f"source_job: job {source_job} did not run at site {site.name}")
    return job.institution, job.owner


def refuse_duplicate(session: Session, site: Site, location: str) -> None:
    """One dataset per directory at a site: registering it again (say, with another visibility) is a 409
    naming the dataset already there, not a silent second copy in the catalog."""
    existing = session.exec(
        select(Dataset)
        .join(Replica, col(Replica.dataset_id) == Dataset.id)
        .where(Replica.site_id == site.id, Replica.location == location, Replica.state != ReplicaState.DELETING.value)
    ).first()
    if existing is not None:
        raise Conflict(
            f"{location} at site {site.name} is already registered as {existing.id} ({existing.title!r}, "
            f"{existing.visibility}); to change who may see it: cryomesh datasets set-visibility {existing.id} <visibility>"
        )


def set_visibility(session: Session, principal: Principal, dataset_id: str, data: DatasetUpdate) -> Dataset:
    """Change a dataset's metadata: the owner site's admin or a network admin (others who can see it: 403)."""
    ds = get_visible(session, principal, dataset_id)
    if principal.role is not Role.NETWORK_ADMIN and not (
        principal.role is Role.SITE_ADMIN and principal.site_id == ds.owner_site_id
    ):
        owner = session.get(Site, ds.owner_site_id)
        raise Forbidden(
            f"only an admin of {owner.name if owner else 'the owner site'} or a network admin may change dataset {ds.id}"
        )
    if data.visibility is not None and data.visibility.value != ds.visibility:
        ds.visibility = data.visibility.value
        session.add(ds)
        session.flush()
    return ds


def resolve_id(session: Session, principal: Principal, ref: str) -> str:
    """The id of the dataset ``ref`` names: a ``ds-…`` id, or an EMPIAR/EMDB accession the caller
    can see exactly one dataset list (see hub.datasets.refs)."""
    return refs.resolve(session, _visible_clause(principal), ref)


def get_visible(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    """The dataset named by id or accession, if the caller may see it (404 otherwise)."""
    dataset_id = resolve_id(session, principal, dataset_id)
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    if principal.role is not Role.NETWORK_ADMIN and ds.visibility == "private" and ds.institution != principal.institution:
        raise NotFound(f"no dataset {dataset_id!r}")
    return ds


def search(session: Session, principal: Principal, f: DatasetFilter, limit: int, offset: int) -> tuple[list[DatasetPublic], int]:
    stmt = select(Dataset)
    visible = _visible_clause(principal)
    if visible is not None:
        stmt = stmt.where(visible)
    if f.q:
        like = f"%{f.q.lower()}%"
        stmt = stmt.where(
            func.lower(Dataset.title).like(like)
            | func.lower(func.coalesce(Dataset.sample_name, "")).like(like)
            | func.lower(func.coalesce(Dataset.description, "")).like(like)
        )
    if f.experiment_type:
        stmt = stmt.where(Dataset.experiment_type == f.experiment_type)
    if f.detector:
        stmt = stmt.where(func.lower(func.coalesce(Dataset.detector_model, "")).like(f"%{f.detector.lower()}%"))
    if f.pixel_size_min is not None:
        stmt = stmt.where(col(Dataset.pixel_size_a) >= f.pixel_size_min)
    if f.pixel_size_max is not None:
        stmt = stmt.where(col(Dataset.pixel_size_a) <= f.pixel_size_max)
    if f.min_bytes is not None:
        stmt = stmt.where(col(Dataset.total_bytes) >= f.min_bytes)
    if f.max_bytes is not None:
        stmt = stmt.where(col(Dataset.total_bytes) <= f.max_bytes)
    if f.visibility:
        stmt = stmt.where(Dataset.visibility == f.visibility)
    if f.source_job:
        stmt = stmt.where(Dataset.source_job == f.source_job)
    if f.site:
        held = (
            select(Replica.dataset_id)
            .join(Site, col(Site.id) == Replica.site_id)
            .where(Site.name == f.site, Replica.state == "AVAILABLE")
        )
        stmt = stmt.where(col(Dataset.id).in_(held))
    total = session.exec(select(func.count()).select_from(stmt.with_only_columns(col(Dataset.id)).subquery())).one()
    rows = session.exec(stmt.order_by(col(Dataset.created_at).desc(), col(Dataset.id)).limit(limit).offset(offset)).all()
    return to_public(session, rows), total


def to_public(session: Session, rows: Sequence[Dataset]) -> list[DatasetPublic]:
    if not rows:
        return []
    names = {s.id: s.name for s in session.exec(select(Site))}
    replicas: dict[str, list[ReplicaPublic]] = {r.id: [] for r in rows}
    for rep in session.exec(select(Replica).where(col(Replica.dataset_id).in_(list(replicas))).order_by(col(Replica.id))):
        replicas[rep.dataset_id].append(
            ReplicaPublic(
                site=names[rep.site_id],
                state=ReplicaState(rep.state),
                location=rep.location,
                verified_at=rep.verified_at,
                created_at=rep.created_at,
                state_reason=rep.state_reason,
            )
        )
    out = []
    for d in rows:
        meta = DatasetMetadata.model_validate(
            {
                **d.meta,
                "title": d.title,
                "description": d.description,
                "experiment_type": d.experiment_type,
                "visibility": d.visibility,
                "embargo_until": d.embargo_until,
                "owner_group": d.owner_group,
            }
        )
        out.append(
            DatasetPublic(
                **meta.model_dump(),
                id=d.id,
                owner_site=names[d.owner_site_id],
                institution=d.institution,
                file_count=d.file_count,
                total_bytes=d.total_bytes,
                checksum_algorithm=d.checksum_algorithm,
                manifest_digest=d.manifest_digest,
                replicas=replicas[d.id],
                source_datasets=d.source_datasets,
                source_job=d.source_job,
                owner=d.owner,
                registered_by=d.registered_by,
                created_at=d.created_at,
            )
        )
    return out
