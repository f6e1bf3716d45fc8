"""GA4GH DRS 1.5 routes at /ga4gh/drs/v1: datasets (bundles) and their files (blobs).

Who may call:
- service-info: anyone;
- objects, access, bulk objects: people and services with a bearer token or Basic client
  credentials; a dataset they may not see (another institution's private one) is 404, as
  in the dataset API. Agents may not call them.
- presign answers (``POST /api/v1/presign-requests/{id}``): the agent of the request's site
  only (people 403, other agents 404).
The hub never serves bytes: access methods point at replicas (see hub.ga4gh.drs), and an
``https`` access is a URL the replica's site signs (see hub.ga4gh.presign).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from hub.auth.principal import Principal
from hub.deps import CurrentAgent, SessionDep, TransactionRoute
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, Forbidden, NotFound, responses
from hub.ga4gh import drs, presign
from hub.ga4gh.auth import Ga4ghCaller
from shared.schemas.auth import Role
from shared.schemas.common import SafeStr, StrictModel
from shared.schemas.presign import PresignAnswer
from shared.version import __version__

router = APIRouter(prefix="/ga4gh/drs/v1", tags=["ga4gh-drs"], route_class=TransactionRoute)


class BulkObjects(StrictModel):
    bulk_object_ids: list[SafeStr] = Field(min_length=1, max_length=drs.MAX_BULK)
    passports: list[SafeStr] | None = Field(default=None, description="Not used: cryomesh authorises by its own tokens")
    expand: bool = False


def _host(request: Request) -> str:
    return drs.hub_host(request.app.state.settings.issuer)


def _person(principal: Principal) -> Principal:
    if principal.role is Role.AGENT:
        raise Forbidden("agents do not resolve DRS objects")
    return principal


@router.get("/service-info")
def service_info(request: Request) -> dict[str, Any]:
    issuer = request.app.state.settings.issuer
    return {
        "id": ".".join(reversed(_host(request).split(":", 1)[0].split("."))) + ".drs",
        "name": "cryomesh DRS",
        "type": {"group": "org.ga4gh", "artifact": "drs", "version": "1.5.0"},
        "description": "GA4GH DRS 1.5 over the cryomesh dataset registry: datasets are bundles, their files blobs.",
        "organization": {"name": "cryomesh network", "url": issuer},
        "version": __version__,
        "maxBulkRequestLength": drs.MAX_BULK,
        "drs": {"maxBulkRequestLength": drs.MAX_BULK},
    }


@router.get("/objects/{object_id}", responses=responses(*AUTH_ERRORS, NotFound))
def get_object(
    object_id: str, request: Request, session: SessionDep, principal: Ga4ghCaller, expand: bool = False
) -> dict[str, Any]:
    """A dataset or one of its directories (bundle; nested contents with ``expand``) or a file (blob, with access methods)."""
    return drs.get_object(session, _person(principal), object_id, _host(request), expand)


@router.get(
    "/objects/{object_id}/access/{access_id}", responses=responses(*AUTH_ERRORS, Forbidden, NotFound, presign.Unavailable)
)
async def get_access(
    object_id: str, access_id: str, request: Request, session: SessionDep, principal: Ga4ghCaller
) -> dict[str, Any]:
    """The URL of one access method: a file path at a site the caller's institution runs, or
    a presigned https URL of an object in a site's S3 bucket, signed by that site's agent (403
    when the site will not sign it, or for a copy the caller may see but not read: on another
    institution's file system, or embargoed; 503 when its agent does not answer in time)."""

    def resolve() -> dict[str, Any] | drs.ToSign:
        try:
            return drs.get_access(session, _person(principal), object_id, access_id)
        finally:
            session.close()  # reads only; no transaction is held while the site signs

    found = await run_in_threadpool(resolve)
    return await presign.signed_url(request.app, found.site, found.url) if isinstance(found, drs.ToSign) else found


presign_router = APIRouter(prefix="/api/v1/presign-requests", tags=["ga4gh-drs"], route_class=TransactionRoute)


@presign_router.post("/{request_id}", status_code=204, responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def answer_presign(request_id: str, body: PresignAnswer, request: Request, session: SessionDep, principal: CurrentAgent) -> None:
    """A site's agent answers a request its long-poll for work returned: the signed URL, or why not."""
    presign.answer(session, principal, request_id, body, request.app.state.notifier)


@router.post("/objects", responses=responses(*AUTH_ERRORS, BadRequest))
def get_objects(body: BulkObjects, request: Request, session: SessionDep, principal: Ga4ghCaller) -> dict[str, Any]:
    """Several objects at once; those the caller may not see are listed as unresolved (404)."""
    return drs.get_bulk(session, _person(principal), body.bulk_object_ids, _host(request), body.expand)
