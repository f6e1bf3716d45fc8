"""Dataset routes.

Who may call:
- register (``POST /api/v1/datasets``): a site's agent, for its own site;
- paged registration (``/api/v1/datasets/uploads...``, hub.datasets.uploads): a site's agent
  starts an upload; only that agent may see, add to, complete or cancel it (a person: 403,
  any other agent: 404);
- replicas at a site and audit reports: that site's agent only (another agent or a person: 403);
- list, show, manifest (whole, streamed; or in pages by path): anyone signed in, within visibility (a private dataset of another
  institution answers 404);
- change visibility (``PATCH``): the owner site's admin and network admins (others who can
  see the dataset: 403).

A dataset id in a path may also be an EMPIAR/EMDB accession the dataset lists (hub.datasets.refs).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hub.auth.policy import ensure_agent_of
from hub.datasets import audits, files, service, uploads
from hub.datasets.service import DatasetFilter
from hub.deps import ByteCount, CurrentAgent, CurrentPrincipal, Offset, SessionDep, SettingsDep, TransactionRoute
from hub.errors import AUTH_ERRORS, Conflict, NotFound, responses
from hub.sites.queries import get_site_by_name
from shared.schemas.common import Page
from shared.schemas.datasets import (
    AuditReport,
    DatasetCreate,
    DatasetPublic,
    DatasetUpdate,
    DatasetUploadCreate,
    DatasetUploadPublic,
    ExperimentType,
    Manifest,
    ManifestFilesPage,
    ManifestPageIn,
    ReplicaPublic,
    ReplicaState,
    ReplicaWork,
    UploadComplete,
    Visibility,
)

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], route_class=TransactionRoute)
sites_router = APIRouter(prefix="/api/v1/sites", tags=["datasets"], route_class=TransactionRoute)


@router.post("", status_code=201, responses=responses(*AUTH_ERRORS, Conflict))
def register_dataset(data: DatasetCreate, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """Register a dataset held at the calling agent's site, with its manifest; its first replica is AVAILABLE there.
    A directory already registered at the site is refused (409 naming its dataset). A job's output
    (``source_job``) belongs to the job's institution and submitter; 403 unless the job ran at this site."""
    return service.to_public(session, [service.register(session, principal, data)])[0]


@router.post("/uploads", status_code=201, responses=responses(*AUTH_ERRORS, Conflict))
def start_upload(
    data: DatasetUploadCreate, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> DatasetUploadPublic:
    """Start a paged registration (a site's agent): the description and how many files and bytes
    will follow. Nothing is listed until it completes; with no page for a while it expires."""
    return uploads.to_public(uploads.start(session, principal, data, settings), settings)


@router.get("/uploads/{upload_id}", responses=responses(*AUTH_ERRORS, NotFound))
def show_upload(upload_id: str, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep) -> DatasetUploadPublic:
    """Where the caller's upload stands: files received and the page to send next."""
    return uploads.to_public(uploads.get_own(session, principal, upload_id), settings)


@router.post("/uploads/{upload_id}/files", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def upload_page(
    upload_id: str, data: ManifestPageIn, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> DatasetUploadPublic:
    """Add the next page of files (at most 10,000, and at most ``max_body_bytes``: 413). A path
    already received is refused (409 naming it); the same page sent again is accepted."""
    return uploads.to_public(uploads.add_page(session, principal, upload_id, data, settings), settings)


@router.post("/uploads/{upload_id}/complete", status_code=201, responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def complete_upload(upload_id: str, data: UploadComplete, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """Check the files received against the count, bytes and digest, and register the dataset
    with its AVAILABLE replica at the caller's site (409, and nothing registered, if they differ)."""
    return service.to_public(session, [uploads.complete(session, principal, upload_id, data)])[0]


@router.delete("/uploads/{upload_id}", status_code=204, responses=responses(*AUTH_ERRORS, NotFound))
def cancel_upload(upload_id: str, session: SessionDep, principal: CurrentPrincipal) -> None:
    """Discard an upload and the files received for it."""
    uploads.cancel(session, principal, upload_id)


@router.get("", responses=responses(*AUTH_ERRORS))
def list_datasets(
    session: SessionDep,
    principal: CurrentPrincipal,
    q: Annotated[str | None, Query(max_length=200, description="Text in the title, sample or description")] = None,
    experiment_type: ExperimentType | None = None,
    detector: str | None = None,
    pixel_size_min: Annotated[float | None, Query(gt=0, le=1000, allow_inf_nan=False)] = None,
    pixel_size_max: Annotated[float | None, Query(gt=0, le=1000, allow_inf_nan=False)] = None,
    site: Annotated[str | None, Query(description="Datasets with an AVAILABLE replica at this site")] = None,
    min_bytes: ByteCount = None,
    max_bytes: ByteCount = None,
    visibility: Visibility | None = None,
    source_job: Annotated[str | None, Query(max_length=40, description="Datasets produced by this job")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[DatasetPublic]:
    """Datasets the caller may see, newest first."""
    f = DatasetFilter(
        q,
        experiment_type.value if experiment_type else None,
        detector,
        pixel_size_min,
        pixel_size_max,
        site,
        min_bytes,
        max_bytes,
        visibility.value if visibility else None,
        source_job,
    )
    items, total = service.search(session, principal, f, limit, offset)
    return Page[DatasetPublic](items=items, total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def show_dataset(dataset_id: str, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """One dataset with its replicas, by id or by an EMPIAR/EMDB accession it lists (409 if several do)."""
    return service.to_public(session, [service.get_visible(session, principal, dataset_id)])[0]


@router.patch("/{dataset_id}", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def update_dataset(dataset_id: str, data: DatasetUpdate, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """Change a dataset's visibility (the owner site's admin; network admins). Datasets are private when registered."""
    return service.to_public(session, [service.set_visibility(session, principal, dataset_id, data)])[0]


@router.get("/{dataset_id}/manifest", response_model=Manifest, responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def dataset_manifest(dataset_id: str, request: Request, session: SessionDep, principal: CurrentPrincipal) -> StreamingResponse:
    """Every file's path, size and checksum, and the digest over them, streamed from the rows a
    batch at a time (for a large manifest, ``/manifest/files`` gives it in pages)."""
    ds = service.get_visible(session, principal, dataset_id)
    return StreamingResponse(files.stream_json(request.app.state.engine, ds), media_type="application/json")


@router.get("/{dataset_id}/manifest/files", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def dataset_manifest_page(
    dataset_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    after: Annotated[
        str | None, Query(max_length=1024, description="Files whose path sorts after this (a page's next_after)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> ManifestFilesPage:
    """A page of the manifest in path order (byte order of the UTF-8 paths)."""
    return files.page(session, service.get_visible(session, principal, dataset_id), after, limit)


@sites_router.get("/{name}/replicas", responses=responses(*AUTH_ERRORS, NotFound))
def site_replicas(
    name: str,
    session: SessionDep,
    principal: CurrentAgent,
    state: Annotated[ReplicaState | None, Query(description="DELETING: retired copies to remove")] = None,
) -> list[ReplicaWork]:
    """Replicas at the calling agent's site with manifests: AVAILABLE and BAD ones (to audit,
    least recently audited first), or with ?state= just those."""
    site = get_site_by_name(session, name)
    ensure_agent_of(principal, site)
    return audits.replicas_at(session, site, (state.value,) if state else audits.AUDITED)


@sites_router.delete("/{name}/replicas/{dataset_id}", status_code=204, responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def replica_deleted(name: str, dataset_id: str, session: SessionDep, principal: CurrentAgent) -> None:
    """The agent has removed a DELETING replica's files; the catalog forgets the replica."""
    site = get_site_by_name(session, name)
    ensure_agent_of(principal, site)
    audits.deleted(session, site, dataset_id)


@sites_router.post("/{name}/replicas/{dataset_id}/audit", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def report_audit(name: str, dataset_id: str, body: AuditReport, session: SessionDep, principal: CurrentAgent) -> ReplicaPublic:
    """Record an audit: a clean one refreshes verified_at; missing, unexpected, wrong-sized or corrupt files make it BAD."""
    site = get_site_by_name(session, name)
    ensure_agent_of(principal, site)
    rep = audits.record(session, principal, site, dataset_id, body)
    return ReplicaPublic(site=site.name, state=ReplicaState(rep.state), location=rep.location, verified_at=rep.verified_at,
                         created_at=rep.created_at, state_reason=rep.state_reason)  # fmt: skip
