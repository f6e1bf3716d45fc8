"""Verifying bearer tokens: the hub's own (RFC 9068) and those of trusted OIDC issuers.

Every check that can fail for a caller gives 401 with the reason; a token that is valid
but whose client or site has since been disabled or suspended is refused at once, not
when it expires: the caller's rows are read when this process first sees the token, and
read again after any change that could refuse it (``hub/auth/revocation.py``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.concurrency import run_in_threadpool
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.auth.keys import ALG, KeyCache
from hub.auth.models import OAuthClient
from hub.auth.people import check_session
from hub.auth.principal import ROLE_SCOPES, Principal
from hub.auth.revocation import PrincipalCache
from hub.auth.version import read_version
from hub.db import transaction
from hub.errors import Forbidden, Unauthorized
from hub.settings import ExternalIssuer, HubSettings
from hub.sites.models import Site
from shared.schemas.auth import Role

log = logging.getLogger("cryomesh.hub.auth")

LEEWAY_S = 30


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWS, without checking anything; only to choose the issuer's keys."""
    obj = jws.extract_compact(token.encode())
    return dict(obj.headers()), json.loads(obj.payload)


class RemoteJWKS:
    """An external issuer's JWKS, fetched over HTTP and cached; refetched for an unknown kid
    (at most every ``min_refetch_s``) and after ``ttl_s``."""

    def __init__(self, uri: str, ttl_s: float = 300, min_refetch_s: float = 10) -> None:
        self.uri = uri
        self._ttl = ttl_s
        self._min_refetch = min_refetch_s
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._kids: set[str] = set()
        self._fetched_at = 0.0

    def _fetch(self) -> None:
        try:
            resp = httpx.get(self.uri, timeout=5)
            resp.raise_for_status()
            data = resp.json()
            self._keys = KeySet.import_key_set(data)
            self._kids = {k.get("kid") for k in data.get("keys", []) if k.get("kid")}
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("could not fetch JWKS from %s: %s", self.uri, exc)
            if self._keys is None:
                raise Unauthorized(f"the token issuer's keys could not be fetched from {self.uri}") from exc
        finally:
            self._fetched_at = time.monotonic()

    def keys(self, kid: str | None) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            unknown = kid is not None and kid not in self._kids
            if self._keys is None or age > self._ttl or (unknown and age > self._min_refetch):
                self._fetch()
            assert self._keys is not None
            return self._keys


class TokenVerifier:
    def __init__(self, settings: HubSettings, keys: KeyCache, engine: Engine) -> None:
        self._settings = settings
        self._keys = keys
        self._engine = engine
        self.principals = PrincipalCache(engine, settings.auth_recheck_s)
        self._external = {i.issuer.rstrip("/"): (i, RemoteJWKS(i.jwks_uri)) for i in settings.external_issuers}

    async def authenticate(self, token: str) -> Principal:
        """The caller a bearer token names, or 401/403. A token this process has verified is
        a look-up (valid until the auth version moves, see ``hub/auth/revocation.py``);
        a new one is verified in a handler thread, its rows read in a short read-only
        transaction of its own."""
        await self.principals.recheck()
        found = self.principals.get(token)
        if found is not None:
            return found
        return await run_in_threadpool(self._verify, token)

    def _verify(self, token: str) -> Principal:
        try:
            header, claims = decode_unverified(token)
        except (JoseError, ValueError, UnicodeDecodeError) as exc:
            raise Unauthorized("the bearer token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthorized("unsigned tokens (alg 'none') are refused")
        issuer = str(claims.get("iss", "")).rstrip("/")
        # Pure checks first (signature, audience, expiry); the database only for a token that passed them.
        if issuer == self._settings.issuer:
            claims = self._verify_local(token, header)
            resolve: Callable[[Session], tuple[Principal, float]] = lambda s: self._resolve_local(claims, s)  # noqa: E731
        elif issuer in self._external:
            cfg, jwks = self._external[issuer]
            claims = self._decode(token, jwks.keys(header.get("kid")), cfg.algorithms, cfg.issuer, cfg.audience)
            resolve = lambda s: self._resolve_external(cfg, claims, s)  # noqa: E731
        else:
            raise Unauthorized(f"tokens from issuer {issuer!r} are not trusted here")
        with transaction(self._engine, write=False) as session:
            version = read_version(session)  # before the rows: a change after this read raises it past ours
            principal, until = resolve(session)
        expires_at = min(float(claims["exp"]) + LEEWAY_S, until)
        self.principals.put(token, principal, version, expires_at)
        return principal

    def _decode(self, token: str, keys: KeySet, algorithms: list[str], issuer: str, audience: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, keys, algorithms=algorithms)
        except JoseError as exc:
            raise Unauthorized(f"the token's signature could not be verified: {exc.description or exc.error}") from exc
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise Unauthorized(f"the token was refused: {exc.description or exc.error}") from exc
        return dict(decoded.claims)

    def _verify_local(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        if header.get("typ") not in ("at+jwt", "application/at+jwt"):
            raise Unauthorized("the token is not an access token (typ must be 'at+jwt')")
        keys = self._keys.verification_keys(header.get("kid"))
        return self._decode(token, keys, [ALG], self._settings.issuer, self._settings.token_audience)

    def _resolve_local(self, claims: dict[str, Any], session: Session) -> tuple[Principal, float]:
        until = float("inf")
        if claims.get("sid"):  # a person's sign-in: the account is the subject, the session must be live
            until = check_session(session, str(claims["sid"])).timestamp()
            client = session.get(OAuthClient, claims["sub"])
        else:
            client = session.get(OAuthClient, claims.get("client_id") or claims["sub"])
        if client is None or client.status != "active":
            raise Unauthorized("the client this token was issued to has been disabled or removed")
        site = session.get(Site, client.site_id) if client.site_id is not None else None
        if site is not None and site.status == "suspended":
            raise Forbidden(f"site {site.name} is suspended")
        role = Role(client.role)
        granted = set(str(claims.get("scope") or "").split()) & set(ROLE_SCOPES[role])
        principal = Principal(
            subject=claims["sub"],
            role=role,
            issuer=self._settings.issuer,
            client_id=client.client_id,
            site_id=site.id if site else None,
            site=site.name if site else None,
            institution=client.institution or (site.institution if site else None),
            scopes=frozenset(granted),
            session_id=str(claims["sid"]) if claims.get("sid") else None,
        )
        return principal, until

    def _resolve_external(self, cfg: ExternalIssuer, claims: dict[str, Any], session: Session) -> tuple[Principal, float]:
        role, institution, site = map_claims(cfg, claims, session)
        principal = Principal(
            subject=f"{cfg.issuer}#{claims['sub']}",
            role=role,
            issuer=cfg.issuer,
            site_id=site.id if site else None,
            site=site.name if site else None,
            institution=institution,
            scopes=frozenset(ROLE_SCOPES[role]),
        )
        return principal, float("inf")

    def external(self, issuer: str) -> tuple[ExternalIssuer, RemoteJWKS] | None:
        return self._external.get(issuer.rstrip("/"))

    def verify_id_token(self, token: str, cfg: ExternalIssuer, jwks: RemoteJWKS) -> dict[str, Any]:
        """An OpenID Connect ID token from ``cfg``'s provider, for the hub as its client."""
        try:
            header, _ = decode_unverified(token)
        except (JoseError, ValueError, UnicodeDecodeError) as exc:
            raise Unauthorized("the provider's id_token is not a well-formed JWT") from exc
        return self._decode(token, jwks.keys(header.get("kid")), cfg.algorithms, cfg.issuer, cfg.client_id or cfg.audience)


def map_claims(cfg: ExternalIssuer, claims: dict[str, Any], session: Session) -> tuple[Role, str | None, Site | None]:
    """Role, institution and site for a person an external provider vouches for."""
    role_name = str(claims.get(cfg.role_claim, "researcher")) if cfg.role_claim else "researcher"
    if role_name not in cfg.allowed_roles or role_name == Role.AGENT:
        raise Forbidden(f"issuer {cfg.issuer} may not grant the role {role_name!r}")
    role = Role(role_name)
    institution = claims.get(cfg.institution_claim)
    site: Site | None = None
    if role is Role.SITE_ADMIN:
        site_name = claims.get(cfg.site_claim) if cfg.site_claim else None
        site = session.exec(select(Site).where(Site.name == site_name)).first() if site_name else None
        if site is None:
            raise Forbidden("a site_admin token must name an existing site")
        if site.status == "suspended":
            raise Forbidden(f"site {site.name} is suspended")
    if role is Role.RESEARCHER and not institution:
        raise Forbidden(f"the token has no {cfg.institution_claim!r} claim naming an institution")
    return role, str(institution) if institution else None, site
