"""Who may touch which site. Every route that names a site goes through one of these."""

from __future__ import annotations

from hub.auth.principal import Principal
from hub.errors import Forbidden
from hub.sites.models import Site
from shared.schemas.auth import Role


def ensure_can_read_site(principal: Principal, site: Site) -> None:
    """Agents see only their own site; people see every site in the registry."""
    if principal.role is Role.AGENT and principal.site_id != site.id:
        raise Forbidden(f"an agent of site {principal.site} cannot read site {site.name}")


def ensure_can_edit_site(principal: Principal, site: Site) -> None:
    if principal.role is Role.NETWORK_ADMIN:
        return
    if principal.role is Role.SITE_ADMIN and principal.site_id == site.id:
        return
    if principal.role is Role.SITE_ADMIN:
        raise Forbidden(f"a site admin of {principal.site} cannot edit site {site.name}")
    raise Forbidden(f"a {principal.role.value} cannot edit sites")


def ensure_agent_of(principal: Principal, site: Site) -> None:
    if principal.role is not Role.AGENT:
        raise Forbidden("only a site's agent may report for it")
    if principal.site_id != site.id:
        raise Forbidden(f"an agent of site {principal.site} cannot act as site {site.name}")
