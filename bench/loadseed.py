"""N enrolled, approved sites, each with its own agent credential and access token.

Seeding writes, in one transaction before the hub process starts, the rows that
``POST /api/v1/sites``, an enrollment code, ``POST /api/v1/enrollments`` (with the agent's
own EC P-256 public key, as ``cryomesh agent enroll`` sends it) and the network admin's
approval write: the site and its partitions, software and storage as
``hub.sites.service.create_site`` makes them, a used enrollment code, the agent's OAuth
client (active, ``private_key_jwt``, the key's thumbprint as ``validate_public_jwk``
computes it) and the approved enrollment. Rows are added in bulk (a few statements for all
sites, not a flush per site), so 10,000 sites take seconds where the API or the
per-site service calls take minutes on a busy machine.

Each agent's access token is then minted by the hub's own token generator
(``HubTokenGenerator``, the code behind ``POST /oauth/token``) with the hub's signing key:
the kind of token the token endpoint would hand that agent, without 10,000
``private_key_jwt`` exchanges before the measurement starts (``--burst-new-tokens`` makes
every agent do that exchange over HTTP). Each simulated agent sends with its own token,
so the hub checks a different client and site on every request, as in a real network.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from joserfc.jwk import ECKey
from sqlmodel import Session

from hub.accounts.service import bootstrap_admin
from hub.agents.service import validate_public_jwk
from hub.auth.keys import KeyCache
from hub.auth.models import EnrollmentCodeRow, EnrollmentRow, OAuthClient
from hub.auth.server import PRIVATE_KEY_JWT, HubClient, HubTokenGenerator
from hub.db import make_engine, transaction
from hub.settings import HubSettings
from hub.sites.models import PartitionRow, Site, SoftwareRow, StorageRow
from hub.types import utcnow
from shared.schemas.auth import EnrollmentStatus, Role
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
            enrolled = enroll_agents(s, [site_create(i) for i in range(n_sites)], creds.client_id)
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        keys = KeyCache(engine, token_lifetime_s)
        keys.ensure()
        with transaction(engine) as s:
            agents = mint_tokens(s, settings, keys, enrolled, token_lifetime_s)
        token_s = time.perf_counter() - t0
    finally:
        engine.dispose()
    return Seeded(Account(creds.client_id, creds.client_secret, "network_admin"), agents, seed_s, token_s)


def enroll_agents(s: Session, sites: list[SiteCreate], admin: str) -> list[tuple[str, str, ECKey]]:
    """The rows of registering each site and enrolling and approving its agent, in bulk."""
    now = utcnow()
    rows = [
        Site(**d.model_dump(exclude={"partitions", "software", "storage", "contacts"}),
             contacts=[c.model_dump() for c in d.contacts], status="active")
        for d in sites
    ]  # fmt: skip
    s.add_all(rows)
    s.flush()
    codes = []
    for site, d in zip(rows, sites, strict=True):
        assert site.id is not None
        s.add_all(PartitionRow(site_id=site.id, **p.model_dump()) for p in d.partitions)
        s.add_all(SoftwareRow(site_id=site.id, **x.model_dump()) for x in d.software)
        s.add_all(StorageRow(site_id=site.id, **e.model_dump()) for e in d.storage)
        code_hash = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
        codes.append(EnrollmentCodeRow(site_id=site.id, code_hash=code_hash, expires_at=now + timedelta(hours=1), used_at=now,
                                       created_by=admin))  # fmt: skip
    s.add_all(codes)
    s.flush()
    enrolled = []
    for site, code in zip(rows, codes, strict=True):
        assert site.id is not None and code.id is not None
        key = ECKey.generate_key("P-256", private=True)
        public, thumbprint = validate_public_jwk(key.as_dict(private=False))
        client_id = f"agent-{site.name}-{secrets.token_hex(4)}"
        s.add(OAuthClient(client_id=client_id, name=f"agent on login.{site.name}.example", kind="agent",
                          role=Role.AGENT.value, site_id=site.id, institution=site.institution,
                          auth_method=PRIVATE_KEY_JWT, public_jwk=public, key_thumbprint=thumbprint,
                          status="active", created_by=f"enrollment code {code.id}"))  # fmt: skip
        s.add(EnrollmentRow(site_id=site.id, client_id=client_id, code_id=code.id, hostname=f"login.{site.name}.example",
                            agent_version="bench", key_thumbprint=thumbprint, status=EnrollmentStatus.APPROVED.value,
                            decided_at=now, decided_by=admin))  # fmt: skip
        enrolled.append((site.name, client_id, key))
    s.flush()
    return enrolled


def mint_tokens(
    s: Session, settings: HubSettings, keys: KeyCache, enrolled: list[tuple[str, str, ECKey]], lifetime_s: int
) -> list[SimAgent]:
    generator = HubTokenGenerator(settings.model_copy(update={"token_lifetime_s": lifetime_s}), keys, s)
    agents = []
    for site, client_id, key in enrolled:
        row = s.get(OAuthClient, client_id)
        assert row is not None and row.status == "active"
        client = HubClient(row)
        token = generator.generate("client_credentials", client, scope=client.get_allowed_scope(None))
        agents.append(SimAgent(site, client_id, str(token["access_token"]), key))
    return agents
