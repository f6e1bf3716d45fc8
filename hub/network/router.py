"""``GET /api/v1/network/summary``. Who may call: signed-in people (not agents)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hub.deps import Person, SessionDep, TransactionRoute, require_scopes
from hub.errors import AUTH_ERRORS, responses
from hub.network import service
from shared.schemas.network import NetworkSummary

router = APIRouter(prefix="/api/v1/network", tags=["network"], route_class=TransactionRoute)


@router.get("/summary", responses=responses(*AUTH_ERRORS), dependencies=[Depends(require_scopes("network:read"))])
def network_summary(session: SessionDep, principal: Person) -> NetworkSummary:
    """Sites by status, network-wide free and total CPUs and GPUs by model, and each site's latest capacity."""
    return service.summary(session)
