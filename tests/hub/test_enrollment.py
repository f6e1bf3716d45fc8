"""Enrollment with double opt-in, agent tokens by private_key_jwt, key rotation, revocation."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest

from site_agent.credentials import KEY_FILE, generate_key, load_credentials, public_jwk
from site_agent.enroll import enroll
from site_agent.errors import HubRefused
from tests.helpers import Hub


def test_enrollment_needs_approval_then_gives_tokens(hub: Hub, tmp_path: Path) -> None:
    site = hub.create_site()
    assert site["status"] == "pending"
    agent = hub.enroll_agent(site["name"], tmp_path / "agent", approve=False)

    key_file = tmp_path / "agent" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "agent").stat().st_mode) == 0o700
    assert load_credentials(tmp_path / "agent").client_id == agent.client_id

    resp = hub.agent_token_response(agent)
    assert resp.status_code == 400, "no token before a network admin approves"
    assert resp.json() == {
        "error": "invalid_client",
        "error_description": "this agent's enrollment is waiting for a network admin's approval",
    }

    with hub.as_admin() as c:
        pending = c.get("/api/v1/enrollments", params={"status": "pending"}).json()
        assert [e["client_id"] for e in pending] == [agent.client_id]
        assert pending[0]["key_thumbprint"] == agent.key.thumbprint()
        approved = c.post(f"/api/v1/enrollments/{agent.enrollment_id}/approve").json()
        assert approved["status"] == "approved" and approved["decided_by"] == hub.admin.client_id
        assert c.get(f"/api/v1/sites/{site['name']}").json()["status"] == "active", "first approved agent activates the site"
        again = c.post(f"/api/v1/enrollments/{agent.enrollment_id}/approve")
        assert again.status_code == 409

    token = hub.agent_token(agent)
    with hub.http(token) as c:
        me = c.get("/api/v1/whoami").json()
    assert me["role"] == "agent" and me["site"] == site["name"] and me["client_id"] == agent.client_id


def test_only_the_public_key_is_sent(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    with sqlite_hub.as_admin() as c:
        agents = c.get("/api/v1/agents", params={"site": site["name"]}).json()
    assert [a["client_id"] for a in agents] == [agent.client_id]
    # A private key offered as "public" is refused and consumes nothing.
    code = sqlite_hub.enrollment_code(site["name"])
    private = generate_key().as_dict(private=True)
    resp = httpx.post(
        f"{sqlite_hub.url}/api/v1/enrollments", json={"code": code, "public_jwk": private, "hostname": "h", "agent_version": "1"}
    )
    assert resp.status_code == 400
    assert resp.json() == {"error": "BadRequest", "detail": "public_jwk contains private key material; send only the public key"}
    ok = httpx.post(
        f"{sqlite_hub.url}/api/v1/enrollments",
        json={"code": code, "public_jwk": public_jwk(generate_key()), "hostname": "h", "agent_version": "1"},
    )
    assert ok.status_code == 201, "the refused attempt did not use up the code"


def test_reused_code_is_refused(hub: Hub, tmp_path: Path) -> None:
    site = hub.create_site()
    code = hub.enrollment_code(site["name"])
    enroll(hub.url, code, tmp_path / "first")
    with pytest.raises(HubRefused) as err:
        enroll(hub.url, code, tmp_path / "second")
    assert err.value.status == 409
    assert "already been used" in err.value.detail
    assert not (tmp_path / "second" / KEY_FILE).exists(), "no key is kept for a refused enrollment"


def test_expired_code_is_refused(hub: Hub, tmp_path: Path) -> None:
    site = hub.create_site()
    code = hub.enrollment_code(site["name"], ttl_s=60)
    from hub.auth.models import EnrollmentCodeRow
    from hub.db import make_engine, transaction
    from hub.types import utcnow

    engine = make_engine(hub.settings.resolved_database_url)
    with transaction(engine) as s:  # age the code rather than wait a minute
        from sqlmodel import select

        row = s.exec(select(EnrollmentCodeRow)).one()
        row.expires_at = utcnow()
        s.add(row)
    engine.dispose()
    time.sleep(0.01)
    with pytest.raises(HubRefused) as err:
        enroll(hub.url, code, tmp_path / "a")
    assert err.value.status == 410 and "expired" in err.value.detail


def test_unknown_code_is_refused(sqlite_hub: Hub, tmp_path: Path) -> None:
    with pytest.raises(HubRefused) as err:
        enroll(sqlite_hub.url, "AAAAA-BBBBB-CCCCC-DDDDD", tmp_path / "a")
    assert err.value.status == 404 and "not recognised" in err.value.detail


def test_only_network_admins_issue_codes_and_approve(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a", approve=False)
    site_admin = sqlite_hub.account("site_admin", site=site["name"])
    researcher = sqlite_hub.account("researcher", institution="kek")
    for who in (site_admin, researcher):
        with sqlite_hub.as_(who) as c:
            assert c.post(f"/api/v1/sites/{site['name']}/enrollment-codes", json={}).status_code == 403
            resp = c.post(f"/api/v1/enrollments/{agent.enrollment_id}/approve")
            assert resp.status_code == 403
            assert resp.json()["error"] == "Forbidden"


def test_rejected_enrollment_never_gets_tokens(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a", approve=False)
    with sqlite_hub.as_admin() as c:
        assert c.post(f"/api/v1/enrollments/{agent.enrollment_id}/reject").json()["status"] == "rejected"
    resp = sqlite_hub.agent_token_response(agent)
    assert resp.status_code == 400 and "disabled" in resp.json()["error_description"]


def test_assertion_cannot_be_replayed(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    assert sqlite_hub.agent_token_response(agent, jti="once-only").status_code == 200
    replay = sqlite_hub.agent_token_response(agent, jti="once-only")
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_client"


def test_long_lived_assertion_is_refused(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    resp = sqlite_hub.agent_token_response(agent, exp=int(time.time()) + 3600)
    assert resp.status_code == 400 and "at most" in resp.json()["error_description"]


def test_assertion_signed_by_another_key_is_refused(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    other = sqlite_hub.enroll_agent(site["name"], tmp_path / "b")
    impostor = type(agent)(agent.client_id, agent.site, other.state_dir, agent.enrollment_id)
    resp = sqlite_hub.agent_token_response(impostor)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_client"


def test_revoked_agent_is_refused_at_once(hub: Hub, tmp_path: Path) -> None:
    site = hub.create_site()
    agent = hub.enroll_agent(site["name"], tmp_path / "a")
    token = hub.agent_token(agent)
    with hub.http(token) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    with hub.as_admin() as c:
        assert c.post(f"/api/v1/agents/{agent.client_id}/revoke").json()["status"] == "disabled"
    with hub.http(token) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 401, "a revoked agent's unexpired token stops working at once"
    assert hub.agent_token_response(agent).status_code == 400


def test_site_admin_revokes_only_own_agents(sqlite_hub: Hub, tmp_path: Path) -> None:
    mine, theirs = sqlite_hub.create_site(), sqlite_hub.create_site()
    their_agent = sqlite_hub.enroll_agent(theirs["name"], tmp_path / "t")
    my_agent = sqlite_hub.enroll_agent(mine["name"], tmp_path / "m")
    admin = sqlite_hub.account("site_admin", site=mine["name"])
    with sqlite_hub.as_(admin) as c:
        resp = c.post(f"/api/v1/agents/{their_agent.client_id}/revoke")
        assert resp.status_code == 403 and "own site" in resp.json()["detail"]
        assert [a["client_id"] for a in c.get("/api/v1/agents").json()] == [my_agent.client_id]
        assert c.post(f"/api/v1/agents/{my_agent.client_id}/revoke").status_code == 200


def test_suspended_site_is_refused_at_once(hub: Hub, tmp_path: Path) -> None:
    site = hub.create_site()
    agent = hub.enroll_agent(site["name"], tmp_path / "a")
    token = hub.agent_token(agent)
    with hub.as_admin() as c:
        assert c.post(f"/api/v1/sites/{site['name']}/suspend").json()["status"] == "suspended"
    with hub.http(token) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 403 and resp.json() == {"error": "Forbidden", "detail": f"site {site['name']} is suspended"}
    resp = hub.agent_token_response(agent)
    assert resp.status_code == 400 and "suspended" in resp.json()["error_description"]
    with hub.as_admin() as c:
        c.post(f"/api/v1/sites/{site['name']}/activate")
    with hub.http(token) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_agent_key_rotation(sqlite_hub: Hub, tmp_path: Path) -> None:
    from site_agent.config import AgentSettings
    from site_agent.keys import rotate_key

    site = sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    old_key = agent.key
    thumbprint = rotate_key(AgentSettings(agent={"state_dir": agent.state_dir}))  # type: ignore[arg-type]
    assert agent.key.thumbprint() == thumbprint != old_key.thumbprint()
    assert stat.S_IMODE((agent.state_dir / KEY_FILE).stat().st_mode) == 0o600
    assert sqlite_hub.agent_token_response(agent).status_code == 200, "the new key works"
    stale = type(agent)(agent.client_id, agent.site, tmp_path / "old", agent.enrollment_id)
    from site_agent.credentials import save_key

    save_key(stale.state_dir, old_key)
    assert sqlite_hub.agent_token_response(stale).status_code == 400, "the old key no longer works"
