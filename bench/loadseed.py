"""N enrolled, approved sites, each with its own agent credential and access token.

Seeding goes through the hub's own service functions, in one transaction, before the hub
process starts: ``create_site``, ``issue_code``, ``enroll`` (with the agent's own EC P-256
public key, as ``cryomesh agent enroll`` sends it) and ``decide`` (the network admin's
approval). That is the path a real agent takes, minus one HTTP round trip per step, so
10,000 sites take seconds rather than the minutes enrolling over HTTP would.

Each agent's access token is then minted by the hub's own token generator
(``HubTokenGenerator``, the code behind ``POST /oauth/token``) with the hub's signing key:
byte for byte the kind of token the token endpoint would hand that agent, without 10,000
``private_key_jwt`` exchanges before the measurement starts. The load generator sends
each agent's requests with that agent's token, so the hub checks a different client
and site on every request, as it would in a real network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from joserfc.jwk import ECKey
from sqlmodel import Session

from hub.accounts.service import bootstrap_admin
from hub.agents.service import decide, enroll, issue_code
from hub.auth.keys import KeyCache, ensure_active_key
from hub.auth.models import OAuthClient
from hub.auth.principal import Principal
from hub.auth.server import HubClient, HubTokenGenerator
from hub.db import make_engine, transaction
from hub.settings import HubSettings
from hub.sites.service import create_site
from shared.schemas.auth import EnrollmentRequest, Role
from shared.schemas.sites import SiteCreate
from tests.helpers import Account, prepare_database


@dataclass(frozen=True)
class SimAgent:
    site: str
    client_id: str
    token: str
    key: ECKey  # the agent's private key, for a real private_key_jwt token exchange


@dataclass
class Seeded:
    admin: Account
    agents: list[SimAgent]
    seed_s: float
    token_s: float


def site_create(i: int) -> SiteCreate:
    """A site as a facility registers it: a GPU and a CPU partition, RELION, scratch storage."""
    name = f"load-{i:05d}"
    return SiteCreate.model_validate(
        {
            "name": name,
            "institution": f"inst-{i % 200:03d}",
            "display_name": f"Load site {i}",
            "country": "JP",
            "partitions": [
                {
                    "name": "gpu",
                    "node_count": 4,
                    "cores_per_node": 64,
                    "memory_gb_per_node": 512,
                    "gpu_model": "a100",
                    "gpus_per_node": 4,
                },
                {"name": "cpu", "node_count": 20, "cores_per_node": 64, "memory_gb_per_node": 256},
            ],
            "software": [{"name": "relion", "version": "5.0", "cuda_arch": "8.0"}],
            "storage": [{"name": "scratch", "kind": "posix", "path": "/gpfs/scratch"}],
        }
    )


def seed(settings: HubSettings, n_sites: int, token_lifetime_s: int) -> Seeded:
    """Migrate the database, bootstrap a network admin and enroll ``n_sites`` agents."""
    url = settings.resolved_database_url
    prepare_database(url)
    engine = make_engine(url)
    t0 = time.perf_counter()
    try:
        with transaction(engine) as s:
            creds = bootstrap_admin(s, "load admin")
            admin = Principal(subject=creds.client_id, role=Role.NETWORK_ADMIN, issuer=settings.issuer,
                              client_id=creds.client_id)  # fmt: skip
            enrolled: list[tuple[str, str, ECKey]] = []
            for i in range(n_sites):
                site = create_site(s, site_create(i))
                key = ECKey.generate_key("P-256", private=True)
                code = issue_code(s, admin, site.name, 3600)
                e = enroll(s, EnrollmentRequest(code=code.code, public_jwk=key.as_dict(private=False),
                                                hostname=f"login.{site.name}.example", agent_version="bench"))  # fmt: skip
                decide(s, admin, e.id, approve=True)
                enrolled.append((site.name, e.client_id, key))
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with transaction(engine) as s:
            agents = mint_tokens(s, settings, enrolled, token_lifetime_s)
        token_s = time.perf_counter() - t0
    finally:
        engine.dispose()
    return Seeded(Account(creds.client_id, creds.client_secret, "network_admin"), agents, seed_s, token_s)


def mint_tokens(s: Session, settings: HubSettings, enrolled: list[tuple[str, str, ECKey]], lifetime_s: int) -> list[SimAgent]:
    ensure_active_key(s)
    generator = HubTokenGenerator(settings.model_copy(update={"token_lifetime_s": lifetime_s}), KeyCache(lifetime_s), s)
    agents = []
    for site, client_id, key in enrolled:
        row = s.get(OAuthClient, client_id)
        assert row is not None and row.status == "active"
        client = HubClient(row)
        token = generator.generate("client_credentials", client, scope=client.get_allowed_scope(None))
        agents.append(SimAgent(site, client_id, str(token["access_token"]), key))
    return agents
