"""Picture routes: small PNGs of a job's results and of a dataset's images.

Who may call:
- ``PUT /api/v1/jobs/{id}/pictures``: the agent of the site the job runs (or ran) at; any
  other agent 403, people 403;
- ``PUT /api/v1/datasets/{id}/pictures``: the agent of the dataset's owner site; others 403;
- ``GET .../pictures`` and ``GET .../pictures/{name}`` (the PNG): people who may see the job
  or dataset (others 404, as for the job or dataset itself); agents 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import Response

from hub.deps import CurrentAgent, Person, SessionDep, SettingsDep, TransactionRoute
from hub.errors import AUTH_ERRORS, BadRequest, Forbidden, NotFound, responses
from hub.pictures import service
from shared.schemas.pictures import PicturePublic, PictureSet

router = APIRouter(prefix="/api/v1", tags=["pictures"], responses=responses(*AUTH_ERRORS), route_class=TransactionRoute)

_NAME = Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@router.put("/jobs/{job_id}/pictures", responses=responses(BadRequest, Forbidden, NotFound))
def put_job_pictures(
    job_id: str, body: PictureSet, session: SessionDep, principal: CurrentAgent, settings: SettingsDep
) -> list[PicturePublic]:
    """Replace a job's pictures (e.g. its 2D class averages); the agent of the job's site only."""
    return service.replace(session, principal, "job", job_id, body, settings.public_url.rstrip("/"))


@router.get("/jobs/{job_id}/pictures", responses=responses(NotFound))
def job_pictures(job_id: str, session: SessionDep, principal: Person, settings: SettingsDep) -> list[PicturePublic]:
    """A job's pictures with captions (a class's share of the particles) and where each PNG is."""
    job_id = service.ensure_visible(session, principal, "job", job_id)
    return service.listing(session, "job", job_id, settings.public_url.rstrip("/"))


@router.get(
    "/jobs/{job_id}/pictures/{name}",
    response_class=Response,
    responses={**responses(NotFound), 200: {"content": {"image/png": {}}}},
)
def job_picture(job_id: str, session: SessionDep, principal: Person, name: str = _NAME) -> Response:
    """One of a job's pictures, as PNG."""
    job_id = service.ensure_visible(session, principal, "job", job_id)
    return Response(service.png(session, "job", job_id, name), media_type="image/png")


@router.put("/datasets/{dataset_id}/pictures", responses=responses(BadRequest, Forbidden, NotFound))
def put_dataset_pictures(
    dataset_id: str, body: PictureSet, session: SessionDep, principal: CurrentAgent, settings: SettingsDep
) -> list[PicturePublic]:
    """Replace a dataset's pictures (e.g. particle thumbnails); the agent of its owner site only."""
    return service.replace(session, principal, "dataset", dataset_id, body, settings.public_url.rstrip("/"))


@router.get("/datasets/{dataset_id}/pictures", responses=responses(NotFound))
def dataset_pictures(dataset_id: str, session: SessionDep, principal: Person, settings: SettingsDep) -> list[PicturePublic]:
    """A dataset's pictures with captions and pixel size, and where each PNG is."""
    dataset_id = service.ensure_visible(session, principal, "dataset", dataset_id)
    return service.listing(session, "dataset", dataset_id, settings.public_url.rstrip("/"))


@router.get(
    "/datasets/{dataset_id}/pictures/{name}",
    response_class=Response,
    responses={**responses(NotFound), 200: {"content": {"image/png": {}}}},
)
def dataset_picture(dataset_id: str, session: SessionDep, principal: Person, name: str = _NAME) -> Response:
    """One of a dataset's pictures, as PNG."""
    dataset_id = service.ensure_visible(session, principal, "dataset", dataset_id)
    return Response(service.png(session, "dataset", dataset_id, name), media_type="image/png")
