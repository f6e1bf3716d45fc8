"""GA4GH TES 1.1 routes, served at /ga4gh/tes/v1 and, for clients that build the base path
their own way, at /v1 and / too (py-tes tries those three; Snakemake's plugin and Nextflow
append /v1/tasks to what they are given; Cromwell takes a full …/v1/tasks URL). The hub's
own routes live under /api, /oauth and /dashboard, so none of these clash with them.

Who may call:
- service-info: anyone;
- create: people bound to an institution (researchers, site admins, network admins with one),
  with a bearer token or their client id and secret over HTTP Basic;
- list, show: people, for tasks of their own institution (site admins also for tasks placed
  at their site; network admins for all); another institution's task answers 404;
- cancel: the task's owner, a network admin or the admin of the site running it (another
  institution's task: 404; someone else's task of one's own institution: 403).
Agents may not call any of them (they poll for assignments).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from hub.deps import SessionDep, TransactionRoute
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, NotFound, responses
from hub.ga4gh import tes
from hub.ga4gh.auth import Ga4ghCaller
from hub.ga4gh.drs import hub_host
from hub.ga4gh.tes_map import BACKEND_PARAMETERS
from hub.jobs.notify import Notifier
from shared.schemas.tes import TesState, TesTaskCreate
from shared.version import __version__

PREFIXES = ("/ga4gh/tes/v1", "/v1", "")
View = Annotated[str, Query(pattern="^(MINIMAL|BASIC|FULL)$", description="MINIMAL (id, state), BASIC or FULL")]


def service_info(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "id": f"{_reverse_domain(settings.issuer)}.tes",
        "name": "cryomesh TES",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "GA4GH TES 1.1 in front of the cryomesh network: each task is a cryomesh job, placed "
        "by the broker on a partner site and run there by the site's agent.",
        "organization": {"name": "cryomesh network", "url": settings.issuer},
        "documentationUrl": f"{settings.issuer}/docs",
        "version": __version__,
        "storage": ["file://", "http://", "https://", "drs://", "s3://"],
        "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
    }


def _reverse_domain(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return ".".join(reversed(host.split("."))) or "cryomesh"


def _notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.notifier
    return notifier


def make_router(prefix: str) -> APIRouter:
    """The TES routes under ``prefix``; only the canonical prefix is in the OpenAPI."""
    router = APIRouter(prefix=prefix, tags=["ga4gh-tes"], include_in_schema=prefix == PREFIXES[0], route_class=TransactionRoute)

    router.get("/service-info")(service_info)

    @router.post("/tasks", responses=responses(*AUTH_ERRORS, BadRequest))
    def create_task(task: TesTaskCreate, request: Request, session: SessionDep, principal: Ga4ghCaller) -> dict[str, str]:
        """Create a task (a cryomesh job): 200 with its id; 400 when it cannot run anywhere, each site's verdict said."""
        host = hub_host(request.app.state.settings.issuer)
        return {"id": tes.create(session, principal, task, _notifier(request), host)}

    @router.get("/tasks", responses=responses(*AUTH_ERRORS, BadRequest))
    def list_tasks(
        session: SessionDep, principal: Ga4ghCaller, view: View = "MINIMAL", name_prefix: str | None = None,
        state: TesState | None = None, tag_key: Annotated[list[str] | None, Query()] = None,
        tag_value: Annotated[list[str] | None, Query()] = None,
        page_size: Annotated[int, Query(ge=1, le=2047)] = 256, page_token: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Tasks the caller may see, newest first; tag_key/tag_value are zipped (a missing value matches any)."""
        keys, values = tag_key or [], tag_value or []
        if len(values) > len(keys):
            raise BadRequest("more tag_value than tag_key parameters")
        tags = {k: values[i] if i < len(values) else "" for i, k in enumerate(keys)}
        return tes.list_tasks(
            session, principal, view=view, page_size=page_size, page_token=page_token, name_prefix=name_prefix,
            state=state, tags=tags,
        )  # fmt: skip

    @router.get("/tasks/{task_id}", responses=responses(*AUTH_ERRORS, NotFound))
    def get_task(task_id: str, session: SessionDep, principal: Ga4ghCaller, view: View = "MINIMAL") -> dict[str, Any]:
        """One task in the view asked for."""
        job, row = tes.get(session, principal, task_id)
        return tes.render(session, job, row, view)

    @router.post("/tasks/{task_id}:cancel", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
    def cancel_task(task_id: str, request: Request, session: SessionDep, principal: Ga4ghCaller) -> JSONResponse:
        """Cancel: a queued task at once; a running one is CANCELING until its site has stopped it."""
        tes.cancel(session, principal, task_id, _notifier(request))
        return JSONResponse({})

    return router


routers = [make_router(p) for p in PREFIXES]
