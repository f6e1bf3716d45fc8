"""The hub service itself: every route needs a token, settings, SQLite mode, request ids."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from hub.db import make_engine
from hub.settings import HubSettings
from tests.helpers import Hub

#: The only routes callable without a bearer token, and why.
OPEN = {
    ("GET", "/healthz"),  # health
    ("GET", "/readyz"),
    ("GET", "/.well-known/oauth-authorization-server"),  # the two metadata documents
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/oauth/token"),  # authenticates the client itself (RFC 6749)
    ("POST", "/api/v1/enrollments"),  # the one-time code is the credential
    ("GET", "/oauth/authorize"),  # sign-in pages: they ask for a username and password
    ("POST", "/oauth/authorize"),
    ("GET", "/device"),
    ("POST", "/device"),
    ("POST", "/oauth/device_authorization"),  # the CLI's public client starts a device sign-in
    ("POST", "/api/v1/accounts/setup"),  # the one-time setup code is the credential
    ("GET", "/oauth/external/start"),  # browser sign-in through an external provider
    ("GET", "/oauth/external/callback"),
    ("GET", "/metrics"),  # open unless metrics_token is set (tests/hub/test_metrics.py)
    ("GET", "/ga4gh/tes/v1/service-info"),  # GA4GH service descriptions: what clients read first
    ("GET", "/ga4gh/drs/v1/service-info"),
}


def test_every_other_route_refuses_a_missing_token(sqlite_hub: Hub) -> None:
    spec = httpx.get(f"{sqlite_hub.url}/openapi.json", timeout=60).json()
    checked = 0
    for path, ops in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in ops:
            if (method.upper(), path) in OPEN:
                continue
            resp = httpx.request(method.upper(), f"{sqlite_hub.url}{concrete}", json={})
            assert resp.status_code == 401, f"{method.upper()} {path} answered {resp.status_code} without a token"
            assert resp.json()["error"] == "Unauthorized"
            checked += 1
    assert checked >= 15, "the route list was read"
    openly = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} & OPEN
    assert openly == OPEN, "every open route is one the security model names"


def test_settings_from_toml_with_env_winning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        'public_url = "https://hub.example.org"\nheartbeat_interval_s = 30\nmissed_heartbeats = 5\n'
        '[[external_issuers]]\nissuer = "https://idp.example"\njwks_uri = "https://idp.example/jwks"\naudience = "cm"\n'
    )
    monkeypatch.setenv("CRYOMESH_CONFIG", str(config))
    monkeypatch.setenv("CRYOMESH_MISSED_HEARTBEATS", "4")
    monkeypatch.setenv("CRYOMESH_DATA_DIR", str(tmp_path / "data"))
    s = HubSettings()
    assert s.public_url == "https://hub.example.org" and s.heartbeat_interval_s == 30
    assert s.missed_heartbeats == 4, "the environment wins over the file"
    assert s.external_issuers[0].allowed_roles == ["researcher"]
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'hub.db'}"
    assert s.token_endpoint == "https://hub.example.org/oauth/token"


def test_production_refuses_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYOMESH_CONFIG", raising=False)
    with pytest.raises(ValueError, match="https"):
        HubSettings(environment="production", public_url="http://hub.example.org")
    assert HubSettings(environment="production", public_url="http://127.0.0.1:8780").issuer == "http://127.0.0.1:8780"


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'hub.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_request_id_is_echoed_or_made(sqlite_hub: Hub) -> None:
    given = httpx.get(f"{sqlite_hub.url}/healthz", headers={"X-Request-ID": "agent-abc-123"})
    assert given.headers["x-request-id"] == "agent-abc-123"
    made = httpx.get(f"{sqlite_hub.url}/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert httpx.get(f"{sqlite_hub.url}/healthz").headers["x-request-id"] != made.headers["x-request-id"]
