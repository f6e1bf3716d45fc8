"""Dataset routes.

Who may call:
- register (``POST /api/v1/datasets``): a site's agent, for its own site;
- list, show, manifest: anyone signed in, within visibility (a private dataset of another
  institution answers 404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hub.datasets import service
from hub.datasets.service import DatasetFilter
from hub.deps import CurrentPrincipal, SessionDep
from hub.errors import AUTH_ERRORS, NotFound, responses
from shared.schemas.common import Page
from shared.schemas.datasets import DatasetCreate, DatasetPublic, ExperimentType, Visibility

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, responses=responses(*AUTH_ERRORS))
def register_dataset(data: DatasetCreate, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """Register a dataset held at the calling agent's site, with its manifest; its first replica is AVAILABLE there."""
    return service.to_public(session, [service.register(session, principal, data)])[0]


@router.get("", responses=responses(*AUTH_ERRORS))
def list_datasets(
    session: SessionDep,
    principal: CurrentPrincipal,
    q: Annotated[str | None, Query(max_length=200, description="Text in the title, sample or description")] = None,
    experiment_type: ExperimentType | None = None,
    detector: str | None = None,
    pixel_size_min: Annotated[float | None, Query(gt=0)] = None,
    pixel_size_max: Annotated[float | None, Query(gt=0)] = None,
    site: Annotated[str | None, Query(description="Datasets with an AVAILABLE replica at this site")] = None,
    min_bytes: Annotated[int | None, Query(ge=0)] = None,
    max_bytes: Annotated[int | None, Query(ge=0)] = None,
    visibility: Visibility | None = None,
    source_job: Annotated[str | None, Query(max_length=40, description="Datasets produced by this job")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
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


@router.get("/{dataset_id}", responses=responses(*AUTH_ERRORS, NotFound))
def show_dataset(dataset_id: str, session: SessionDep, principal: CurrentPrincipal) -> DatasetPublic:
    """One dataset with its replicas."""
    return service.to_public(session, [service.get_visible(session, principal, dataset_id)])[0]


@router.get("/{dataset_id}/manifest", responses=responses(*AUTH_ERRORS, NotFound))
def dataset_manifest(dataset_id: str, session: SessionDep, principal: CurrentPrincipal) -> dict[str, Any]:
    """Every file's path, size and checksum, and the digest over them."""
    return dict(service.get_visible(session, principal, dataset_id).manifest)
