"""Hub settings: environment variables ``CRYOMESH_*``, an optional TOML file, defaults.

The TOML file is named by ``CRYOMESH_CONFIG``; environment variables win over it. A key
in the file that is not a setting (a typo) is refused, naming the setting probably meant;
``CRYOMESH_*`` variables that are not settings are left alone (other programs use the prefix).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.schemas.common import StrictModel
from shared.validation import describe_errors


class ExternalIssuer(StrictModel):
    """An OpenID Connect provider whose access tokens the hub accepts."""

    issuer: str = Field(description="The provider's issuer identifier (the 'iss' claim)")
    jwks_uri: str = Field(description="Where the provider publishes its signing keys")
    audience: str = Field(description="The 'aud' a token must carry to be accepted here")
    institution_claim: str = Field(default="institution", description="Claim naming the user's institution")
    role_claim: str | None = Field(default=None, description="Claim naming the user's cryomesh role")
    site_claim: str | None = Field(default=None, description="Claim naming the site of a site_admin")
    allowed_roles: list[str] = Field(
        default_factory=lambda: ["researcher"],
        description="Roles this provider may grant; anything else is refused",
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # Sign-in through this provider in the browser (OpenID Connect code flow with PKCE). The
    # hub is then a confidential client of the provider, registered with this redirect URI:
    # <public_url>/oauth/external/callback.
    name: str | None = Field(default=None, description="Shown on the sign-in page, e.g. 'KEK single sign-on'")
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    client_id: str | None = Field(default=None, description="The hub's client id at the provider (the id_token's aud)")
    client_secret: SecretStr | None = None

    @property
    def browser_sign_in(self) -> bool:
        return bool(self.authorization_endpoint and self.token_endpoint and self.client_id)


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cryomesh", appauthor=False))


#: Attempts per transfer before SUSPENDED, where no setting is at hand (transfers a broker pass starts).
DEFAULT_TRANSFER_ATTEMPTS = 5


class HubSettings(BaseSettings):
    # extra="forbid" refuses unknown keys of the file; the environment source only reads the
    # variables that name settings, so other CRYOMESH_* variables never reach validation.
    model_config = SettingsConfigDict(env_prefix="CRYOMESH_", env_nested_delimiter="__", extra="forbid")

    environment: str = Field(default="development", description="'development' or 'production'")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the embedded SQLite database lives")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is SQLite at <data_dir>/hub.db. PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    public_url: str = Field(default="http://127.0.0.1:8780", description="The URL agents and users reach the hub at")
    host: str = Field(default="127.0.0.1", description="Address `hub serve` binds")
    port: int = Field(default=8780, description="Port `hub serve` binds")
    token_lifetime_s: int = Field(default=600, ge=5, le=86_400, description="Access token lifetime")
    signing_key_rotation_days: float = Field(default=30, gt=0, description="Rotate the token signing key this often")
    audience: str | None = Field(default=None, description="The 'aud' of hub tokens; default: public_url")
    heartbeat_interval_s: float = Field(default=15, gt=0, description="Interval suggested to agents")
    missed_heartbeats: int = Field(default=3, ge=1, description="A site is unreachable after this many missed beats")
    sweep_interval_s: float = Field(default=5, gt=0, description="How often the reachability sweep runs")
    history_bucket_s: int = Field(default=300, ge=1, description="Resolution of the capacity history")
    history_retention_days: float = Field(default=30, gt=0, description="How long capacity history is kept")
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of every price, cost and budget in the network"
    )
    max_preemptions: int = Field(
        default=10, ge=0, le=1000, description="Preemptions per job (spot nodes taken away) before SYSTEM_ERROR"
    )
    history_flush_s: float = Field(
        default=10,
        gt=0,
        le=300,
        description="Heartbeats are folded into the capacity history in memory and written this often "
        "(and at shutdown); a hub that crashes loses at most this much history, never a snapshot",
    )
    history_flush_rows: int = Field(
        default=5000, ge=1, description="Write the folded history early once it holds this many (site, bucket) rows"
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts per job before SYSTEM_ERROR")
    transfer_stall_s: float = Field(default=300, gt=0, description="A transfer with no progress this long is retried")
    transfer_max_attempts: int = Field(
        default=DEFAULT_TRANSFER_ATTEMPTS, ge=1, le=50, description="Attempts per transfer before SUSPENDED"
    )
    transfer_max_republish: int = Field(
        default=3, ge=1, le=20, description="Times one file may fail its checks and be sent again"
    )
    transfer_rate_shared_per_uplink: bool = Field(
        default=False,
        description="Copies out of a site share its uplink: a copy from a holder is estimated to share the measured "
        "rate with every transfer under way out of that holder, to any site, when the broker estimates it and when "
        "the hub picks its source; false: only with those between the same two sites",
    )
    offer_ttl_s: float = Field(default=60, gt=0, description="An offer not claimed in this time goes back to the broker")
    site_view_max_age_s: float = Field(
        default=5,
        ge=0,
        description="Submissions are placed on site views each hub process keeps: a change of status, reachability "
        "or policy and new capacity reports are read at once, the rest is reloaded at least this often (0: always)",
    )
    drs_access_ttl_s: int = Field(
        default=300, ge=60, le=3600, description="Life asked of a presigned DRS https URL (the site's agent may give less)"
    )
    drs_presign_wait_s: float = Field(
        default=10, gt=0, le=60, description="How long a DRS access call waits for the site's agent to sign a URL"
    )
    long_poll_max_s: float = Field(default=30, gt=0, le=120, description="Longest an agent's poll for work is held")
    long_poll_recheck_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each hub process re-reads the database, in one query, for all its waiting polls "
        "(work that no notification announced)",
    )
    auth_recheck_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest a hub process goes without re-reading the auth version, so a revocation made through "
        "another process applies here within this (on PostgreSQL it is also pushed with NOTIFY, at once)",
    )
    session_lifetime_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400, description="A person's sign-in lasts this long")
    setup_code_ttl_s: int = Field(default=7 * 86_400, ge=60, description="Life of a new person's one-time password-setup code")
    enrollment_code_ttl_s: int = Field(default=86_400, ge=60, description="Default life of an enrollment code")
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body accepted, in bytes; a larger one is refused with 413 before it is read",
    )
    max_manifest_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest body of an agent's report that lists files, in bytes: dataset registration "
        "(the manifest: ~170 bytes a file), transfer progress and failures, audits",
    )
    dataset_upload_ttl_s: int = Field(
        default=3600,
        ge=60,
        le=7 * 86_400,
        description="A paged dataset registration with no new page for this long is discarded by the sweep",
    )
    request_threads: int = Field(
        default=32,
        ge=2,
        le=1000,
        description="Threads that run requests' blocking work (every database transaction); the database pool "
        "holds this many connections plus 4 for background work, so on PostgreSQL max_connections must allow "
        "(request_threads + 4) per hub process",
    )
    max_requests_in_flight: int = Field(
        # 1024: every agent of a 10,000-site network reconnecting at once is answered in 50 s
        # (256: 122 s, most of it agents backing off after 503s while the hub idled); a waiting
        # request costs a coroutine, and 1024 queued heartbeats drain in ~5 s (docs/benchmarks.md).
        default=1024,
        ge=1,
        description="Requests a hub process works on at once (long-polls waiting for work and /healthz not counted); "
        "past it a request is answered 503 with Retry-After at once, before its body is read",
    )
    database_busy_timeout_s: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Longest a request waits for a database lock (SQLite's write lock, a PostgreSQL row lock) or a "
        "pooled connection; then it is answered 503 with Retry-After. Keep it below the agents' request_timeout_s (10 s)",
    )
    heartbeat_fast_path: bool = Field(
        default=True,
        description="Answer well-formed heartbeats without FastAPI's request handling (hub/capacity/fast_path.py): "
        "the same answers for less CPU; false sends every heartbeat through the FastAPI route",
    )
    external_issuers: list[ExternalIssuer] = Field(default_factory=list)
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="JSON log lines (false: plain text)")
    metrics_token: SecretStr | None = Field(default=None, description="Reserved for /metrics protection")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CRYOMESH_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _production_checks(self) -> HubSettings:
        if self.environment == "production" and self.public_url.startswith("http://"):
            host = self.public_url.split("//", 1)[1].split(":", 1)[0].split("/", 1)[0]
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("in production the hub's public_url must be https")
        return self

    @property
    def issuer(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def token_audience(self) -> str:
        return self.audience or self.issuer

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth/token"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'hub.db'}"


class SettingsError(ValueError):
    """Hub settings that cannot be used, said in one line naming the file and the key."""


def load_settings() -> HubSettings:
    """``HubSettings()`` with a readable :class:`SettingsError` instead of pydantic's dump."""
    try:
        return HubSettings()
    except ValidationError as exc:
        source = os.environ.get("CRYOMESH_CONFIG")
        if not source:
            source = "hub settings (CRYOMESH_* environment variables)"
        elif any(e["type"] != "extra_forbidden" for e in exc.errors()):
            source += " (or the CRYOMESH_* environment variables)"
        raise SettingsError(f"{source}: {describe_errors(exc, HubSettings)}") from None


@lru_cache
def get_settings() -> HubSettings:
    return load_settings()
