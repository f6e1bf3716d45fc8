"""Routes for enrollment and agent lifecycle.

Who may call:
- ``POST /api/v1/sites/{site}/enrollment-codes``: network admins;
- ``POST /api/v1/enrollments``: anyone holding a valid, unused code (no token: the code is the credential);
- list / approve / reject enrollments: network admins;
- list agents, revoke an agent: network admins, and site admins for their own site;
- ``PUT /api/v1/agents/me/key``: an agent, for itself.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hub.accounts.service import client_public
from hub.agents import service
from hub.deps import Admin, CurrentAgent, NetworkAdmin, RowId, SessionDep, SettingsDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, BadRequest, Conflict, Gone, NotFound, responses
from shared.schemas.auth import (
    ClientPublic,
    EnrollmentCode,
    EnrollmentCodeCreate,
    EnrollmentPublic,
    EnrollmentRequest,
    EnrollmentStatus,
    KeyRotation,
)

router = APIRouter(prefix="/api/v1", tags=["agents"], route_class=TransactionRoute)


@router.post(
    "/sites/{name}/enrollment-codes",
    status_code=201,
    responses=responses(*AUTH_ERRORS, NotFound, Conflict),
    dependencies=[Depends(require_scopes("admin"))],
)
def issue_enrollment_code(
    name: str, session: SessionDep, principal: NetworkAdmin, settings: SettingsDep, body: EnrollmentCodeCreate | None = None
) -> EnrollmentCode:
    """Issue a one-time, expiring enrollment code for a site's agent (network admins)."""
    ttl = body.ttl_s if body and "ttl_s" in body.model_fields_set else settings.enrollment_code_ttl_s
    return service.issue_code(session, principal, name, ttl)


@router.post("/enrollments", status_code=201, responses=responses(BadRequest, NotFound, Conflict, Gone))
def enroll(req: EnrollmentRequest, session: SessionDep) -> EnrollmentPublic:
    """An agent presents its code and public key; the enrollment waits for approval."""
    return service.enroll(session, req)


@router.get("/enrollments", responses=responses(*AUTH_ERRORS))
def list_enrollments(
    session: SessionDep, principal: NetworkAdmin, status: EnrollmentStatus | None = None
) -> list[EnrollmentPublic]:
    """Enrollments, oldest first (network admins)."""
    return service.list_enrollments(session, status.value if status else None)


@router.post("/enrollments/{enrollment_id}/approve", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def approve_enrollment(enrollment_id: RowId, session: SessionDep, principal: NetworkAdmin) -> EnrollmentPublic:
    """Approve an enrollment: the agent can get tokens from now on (network admins)."""
    return service.decide(session, principal, enrollment_id, approve=True)


@router.post("/enrollments/{enrollment_id}/reject", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
def reject_enrollment(enrollment_id: RowId, session: SessionDep, principal: NetworkAdmin) -> EnrollmentPublic:
    """Reject an enrollment (network admins)."""
    return service.decide(session, principal, enrollment_id, approve=False)


@router.get("/agents", responses=responses(*AUTH_ERRORS, NotFound))
def list_agents(session: SessionDep, principal: Admin, site: str | None = None) -> list[ClientPublic]:
    """Agents (network admins: all; site admins: their own site's)."""
    return service.list_agents(session, principal, site)


@router.post("/agents/{client_id}/revoke", responses=responses(*AUTH_ERRORS, NotFound))
def revoke_agent(client_id: str, session: SessionDep, principal: Admin) -> ClientPublic:
    """Revoke an agent: its tokens stop working at once."""
    return client_public(session, service.revoke_agent(session, principal, client_id))


@router.put("/agents/me/key", responses=responses(*AUTH_ERRORS, BadRequest, Conflict))
def rotate_key(body: KeyRotation, session: SessionDep, principal: CurrentAgent) -> ClientPublic:
    """Register a new public key for the calling agent; the old key stops working."""
    return client_public(session, service.rotate_agent_key(session, principal, body.public_jwk))
