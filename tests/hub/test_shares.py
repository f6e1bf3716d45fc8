"""Share requests: the owner decides, or its policy does; embargo; revoke; expiry; audit.
The receiving site's consent is in tests/hub/test_share_consent.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from hub.datasets.shares import expire_shares
from hub.db import make_engine, transaction
from hub.types import utcnow
from tests.helpers import Account, Hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register


def setup_network(hub: Hub, tmp: Path, **meta: Any) -> dict[str, Any]:
    owner = hub.create_site("owner", institution="kek")
    hub.create_site("dest", institution="osaka-u")
    hub.create_site("other", institution="embl")
    with hub.as_admin() as c:
        for s in ("owner", "dest", "other"):
            c.post(f"/api/v1/sites/{s}/activate")
    agent = hub.enroll_agent(owner["name"], tmp / "agent")
    ds = register(hub, agent, dataset_body(make_dataset_dir(tmp / "data"), **{"visibility": "network", **meta})).json()
    return {
        "ds": ds,
        "agent": agent,
        "owner_admin": hub.account("site_admin", site="owner"),
        "dest_admin": hub.account("site_admin", site="dest"),
        "other_admin": hub.account("site_admin", site="other"),
        "researcher": hub.account("researcher", institution="osaka-u"),
    }


def ask(hub: Hub, who: Account, ds_id: str, dest: str = "dest") -> httpx.Response:
    with hub.as_(who) as c:
        return c.post(f"/api/v1/datasets/{ds_id}/share-requests", json={"dest_site": dest, "purpose": "3D refinement at Osaka"})


def act(hub: Hub, who: Account, req_id: str, verb: str, reason: str | None = None) -> httpx.Response:
    with hub.as_(who) as c:
        return c.post(f"/api/v1/share-requests/{req_id}/{verb}", json={"reason": reason})


def test_owner_admin_decides_and_everything_is_audited(hub: Hub, tmp_path: Path) -> None:
    n = setup_network(hub, tmp_path)
    r = ask(hub, n["researcher"], n["ds"]["id"])
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["state"] == "pending" and req["owner_site"] == "owner" and req["dest_site"] == "dest"
    assert (req["owner_decision"], req["receiver_decision"]) == ("pending", "approved"), "dest accepts its own institution"
    for who in (n["researcher"], n["other_admin"]):
        refused = act(hub, who, req["id"], "approve")
        assert refused.status_code in (403, 404), who.role
        assert refused.json()["error"] in ("Forbidden", "NotFound")
    assert act(hub, n["other_admin"], req["id"], "approve").status_code == 403, "an admin of another site: 403"
    dest = act(hub, n["dest_admin"], req["id"], "approve")
    assert dest.status_code == 409, "the receiving site has consented already; only the owner is awaited"
    assert dest.json()["detail"] == f"share request {req['id']}: the receiver has approved; it waits for the owner"
    with hub.as_(n["owner_admin"]) as c:
        awaiting = c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()
    assert [x["id"] for x in awaiting] == [req["id"]]
    done = act(hub, n["owner_admin"], req["id"], "approve", "collaboration agreed").json()
    assert done["state"] == "approved" and done["decided_by"] == n["owner_admin"].client_id and not done["auto_approved"]
    assert done["expires_at"] is not None
    assert [(e["action"], e["actor"]) for e in done["events"]] == [
        ("requested", n["researcher"].client_id),
        ("receiver-auto-approved", "policy of site dest"),
        ("approved", n["owner_admin"].client_id),
    ]
    again = act(hub, n["owner_admin"], req["id"], "deny")
    assert again.status_code == 409 and "not pending" in again.json()["detail"]


def test_deny_and_duplicates(hub: Hub, tmp_path: Path) -> None:
    n = setup_network(hub, tmp_path)
    first = ask(hub, n["researcher"], n["ds"]["id"]).json()
    dup = ask(hub, n["researcher"], n["ds"]["id"])
    assert dup.status_code == 409 and "already waiting" in dup.json()["detail"]
    assert ask(hub, n["researcher"], n["ds"]["id"], dest="owner").status_code == 409, "the owner already holds it"
    denied = act(hub, hub.admin, first["id"], "deny", "not before publication").json()
    assert denied["state"] == "denied" and denied["decision_reason"] == "not before publication"


def test_policy_auto_approves_partners_and_public_data(hub: Hub, tmp_path: Path) -> None:
    n = setup_network(hub, tmp_path)
    with hub.as_(n["owner_admin"]) as c:
        assert c.put("/api/v1/sites/owner/share-policy", json={"auto_approve_institutions": ["osaka-u"]}).status_code == 200
    with hub.as_(n["other_admin"]) as c:
        assert c.put("/api/v1/sites/owner/share-policy", json={"auto_approve_public": True}).status_code == 403
    req = ask(hub, n["researcher"], n["ds"]["id"]).json()
    assert req["state"] == "approved" and req["auto_approved"] and req["decided_by"] == "policy of site owner"
    assert req["events"][-1]["reason"] == "partner institution osaka-u"
    stranger = hub.account("researcher", institution="embl")
    other = ask(hub, stranger, n["ds"]["id"], dest="other").json()
    assert other["state"] == "pending", "embl is not a named partner"


def test_embargo_needs_the_owners_explicit_approval(hub: Hub, tmp_path: Path) -> None:
    future = (utcnow() + timedelta(days=30)).date().isoformat()
    n = setup_network(hub, tmp_path, embargo_until=future)
    with hub.as_(n["owner_admin"]) as c:
        c.put("/api/v1/sites/owner/share-policy", json={"auto_approve_institutions": ["osaka-u"]})
    req = ask(hub, n["researcher"], n["ds"]["id"]).json()
    assert req["state"] == "pending", "embargoed: the policy does not approve"
    assert req["events"][-1]["action"] == "held" and future in req["events"][-1]["reason"]
    assert act(hub, n["owner_admin"], req["id"], "approve", "early access for collaborators").json()["state"] == "approved"


def test_private_dataset_cannot_be_requested_by_outsiders(hub: Hub, tmp_path: Path) -> None:
    n = setup_network(hub, tmp_path)
    agent = hub.enroll_agent("owner", tmp_path / "agent2")
    private = register(hub, agent, dataset_body(make_dataset_dir(tmp_path / "priv"), visibility="private")).json()
    r = ask(hub, n["researcher"], private["id"])
    assert r.status_code == 404 and r.json()["detail"] == f"no dataset {private['id']!r}"


def test_revoke_and_expiry_retire_the_request(hub: Hub, tmp_path: Path) -> None:
    n = setup_network(hub, tmp_path)
    req = ask(hub, n["researcher"], n["ds"]["id"]).json()
    act(hub, n["owner_admin"], req["id"], "approve")
    assert act(hub, n["other_admin"], req["id"], "revoke").status_code == 404, "an unrelated site's admin"
    revoked = act(hub, n["researcher"], req["id"], "revoke", "no longer needed").json()
    assert revoked["state"] == "revoked" and revoked["events"][-1]["action"] == "revoked"
    assert act(hub, n["researcher"], req["id"], "revoke").status_code == 409
    second = ask(hub, n["researcher"], n["ds"]["id"]).json()
    act(hub, n["owner_admin"], second["id"], "approve")
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            assert expire_shares(s, now=utcnow() + timedelta(days=91)) == [second["id"]]
    finally:
        engine.dispose()
    with hub.as_(n["researcher"]) as c:
        shown = c.get(f"/api/v1/share-requests/{second['id']}").json()
    assert shown["state"] == "expired" and shown["events"][-1]["actor"] == "hub"
    with hub.as_(hub.account("researcher", institution="embl")) as c:
        assert c.get(f"/api/v1/share-requests/{second['id']}").status_code == 404


def test_share_workflow_from_the_cli(sqlite_hub: Hub, tmp_path: Path) -> None:
    import json

    from tests.cli.test_cli import run

    n = setup_network(sqlite_hub, tmp_path)
    ds_id = n["ds"]["id"]
    out = run(sqlite_hub, "datasets", "list", account=n["researcher"])
    assert out.returncode == 0 and ds_id in out.stdout
    out = run(
        sqlite_hub,
        "datasets",
        "request",
        ds_id,
        "--to",
        "dest",
        "--purpose",
        "refine at Osaka",
        "--json",
        account=n["researcher"],
    )
    assert out.returncode == 0, out.stdout + out.stderr
    req = json.loads(out.stdout)
    assert req["state"] == "pending"
    listed = run(sqlite_hub, "shares", "list", "--awaiting-me", account=n["owner_admin"])
    assert req["id"] in listed.stdout and "pending" in listed.stdout
    refused = run(sqlite_hub, "shares", "approve", req["id"], account=n["researcher"])
    assert refused.returncode == 1 and "403 Forbidden" in refused.stdout
    ok = run(sqlite_hub, "shares", "approve", req["id"], "--reason", "agreed", account=n["owner_admin"])
    assert ok.returncode == 0 and "approved" in ok.stdout
    mine = json.loads(run(sqlite_hub, "shares", "list", "--json", account=n["researcher"]).stdout)
    assert [(r["id"], r["state"], r["decision_reason"]) for r in mine] == [(req["id"], "approved", "agreed")]
    assert "revoked" in run(sqlite_hub, "shares", "revoke", req["id"], account=n["researcher"]).stdout
