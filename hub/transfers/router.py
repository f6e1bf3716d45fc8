"""Transfer routes.

Who may call:
- list and show: network admins; admins of the source or destination site; the person who
  asked for the data (others get 404);
- retry a SUSPENDED transfer: network admins and admins of either site (a researcher: 403);
- work, progress, fail, cleaned: the agents of the two sites, each for its own side
  (another site's agent: 404; a person: 403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hub.auth.policy import ensure_agent_of
from hub.deps import CurrentAgent, Person, SessionDep, SettingsDep, TransactionRoute
from hub.errors import AUTH_ERRORS, Conflict, NotFound, responses
from hub.sites.queries import get_site_by_name
from hub.transfers import service
from shared.schemas.transfers import TransferFailure, TransferProgress, TransferPublic, TransferState, TransferWork

router = APIRouter(prefix="/api/v1", tags=["transfers"], route_class=TransactionRoute)


@router.get("/transfers", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def list_transfers(
    session: SessionDep,
    principal: Person,
    state: TransferState | None = None,
    dataset: Annotated[
        str | None, Query(max_length=200, description="A dataset id or its EMPIAR/EMDB accession, e.g. 'EMPIAR-10028'")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TransferPublic]:
    """Transfers the caller asked for or whose sites they administer, newest first."""
    rows = service.list_for(session, principal, state.value if state else None, dataset, limit)
    names = service.site_names(session)
    return [service.to_public(session, t, names) for t in rows]


@router.get("/transfers/{transfer_id}", responses=responses(*AUTH_ERRORS, NotFound))
def show_transfer(transfer_id: str, session: SessionDep, principal: Person) -> TransferPublic:
    """One transfer with its progress and per-file errors."""
    return service.to_public(session, service.get(session, principal, transfer_id))


@router.post("/transfers/{transfer_id}/retry", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def retry_transfer(transfer_id: str, session: SessionDep, principal: Person) -> TransferPublic:
    """Start a SUSPENDED transfer again; the agents resume from the parts they hold."""
    return service.to_public(session, service.retry(session, principal, transfer_id))


@router.get("/sites/{name}/transfers", responses=responses(*AUTH_ERRORS, NotFound))
def site_transfer_work(name: str, session: SessionDep, principal: CurrentAgent) -> list[TransferWork]:
    """The calling agent's part in each transfer now: publish, keep the published copy readable, fetch, clean up."""
    site = get_site_by_name(session, name)
    ensure_agent_of(principal, site)
    return service.work_for(session, principal, site)


@router.post("/transfers/{transfer_id}/progress", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def report_progress(
    transfer_id: str, body: TransferProgress, session: SessionDep, principal: CurrentAgent, settings: SettingsDep
) -> TransferPublic:
    """Bytes and files done on the caller's side; the published copy; corrupt files; the finished replica."""
    return service.to_public(session, service.progress(session, principal, transfer_id, body, settings))


@router.post("/transfers/{transfer_id}/fail", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def report_failure(transfer_id: str, body: TransferFailure, session: SessionDep, principal: CurrentAgent) -> TransferPublic:
    """The caller gives up on this attempt; the hub starts another or suspends the transfer."""
    return service.to_public(session, service.fail(session, principal, transfer_id, body))


@router.post("/transfers/{transfer_id}/cleaned", responses=responses(*AUTH_ERRORS, NotFound))
def report_cleaned(transfer_id: str, session: SessionDep, principal: CurrentAgent) -> TransferPublic:
    """The source removed its published copy from the exchange store."""
    return service.to_public(session, service.cleaned(session, principal, transfer_id))
