"""The receiving site's consent: a copy to a site needs its policy or its admin as well as the
owner's; its admin may deny and revoke; who may not gets a clear 403/404/409."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Hub
from tests.hub.test_shares import ask, setup_network


def third_site_network(hub: Hub, tmp: Path, owner_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sites owner (kek), dest (osaka-u) and other (embl); the owner auto-approves osaka-u's people
    unless ``owner_policy`` says otherwise; the researcher is from osaka-u."""
    n = setup_network(hub, tmp)
    with hub.as_(n["owner_admin"]) as c:
        body = {"auto_approve_institutions": ["osaka-u"]} if owner_policy is None else owner_policy
        assert c.put("/api/v1/sites/owner/share-policy", json=body).status_code == 200
    return n


def transfers_of(hub: Hub, ds_id: str) -> list[dict[str, Any]]:
    with hub.as_admin() as c:
        return list(c.get("/api/v1/transfers", params={"dataset": ds_id}).json())


def replicas_of(hub: Hub, ds_id: str) -> dict[str, str]:
    with hub.as_admin() as c:
        return {r["site"]: r["state"] for r in c.get(f"/api/v1/datasets/{ds_id}").json()["replicas"]}


def decide(hub: Hub, who: Any, req_id: str, verb: str, side: str | None = None) -> httpx.Response:
    with hub.as_(who) as c:
        return c.post(f"/api/v1/share-requests/{req_id}/{verb}", json={"reason": "r"}, params={"side": side} if side else {})


def test_a_copy_to_an_unrelated_site_waits_for_its_admin(hub: Hub, tmp_path: Path) -> None:
    """kek auto-approves osaka-u's people; an osaka-u researcher asks for a copy at embl's site."""
    n = third_site_network(hub, tmp_path)
    r = ask(hub, n["researcher"], n["ds"]["id"], dest="other")
    assert r.status_code == 201, r.text
    req = r.json()
    assert (req["state"], req["owner_decision"], req["receiver_decision"]) == ("pending", "approved", "pending")
    assert [e["action"] for e in req["events"]] == ["requested", "receiver-held", "auto-approved"]
    assert "institution osaka-u" in req["events"][1]["reason"] and req["events"][1]["actor"] == "policy of site other"
    assert transfers_of(hub, n["ds"]["id"]) == [], "nothing moves before the receiving site consents"
    assert "other" not in replicas_of(hub, n["ds"]["id"])

    # Who waits for whom.
    with hub.as_(n["other_admin"]) as c:
        assert [x["id"] for x in c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()] == [req["id"]]
    with hub.as_(n["owner_admin"]) as c:
        assert c.get("/api/v1/share-requests", params={"awaiting": "me"}).json() == []

    # Those who may not consent for the receiving site.
    refused = decide(hub, n["researcher"], req["id"], "approve")
    assert refused.status_code == 403 and refused.json() == {
        "error": "Forbidden",
        "detail": "only the owner site's admin, the receiving site's admin or a network admin decides on a share request",
    }
    unrelated = decide(hub, n["dest_admin"], req["id"], "approve")
    assert unrelated.status_code == 403 and unrelated.json()["error"] == "Forbidden", "another site's admin"
    owner_again = decide(hub, n["owner_admin"], req["id"], "approve")
    assert owner_again.status_code == 409 and owner_again.json() == {
        "error": "Conflict",
        "detail": f"share request {req['id']}: the owner has approved; it waits for the receiver",
    }
    for_receiver = decide(hub, n["owner_admin"], req["id"], "approve", side="receiver")
    assert for_receiver.status_code == 403 and for_receiver.json() == {
        "error": "Forbidden",
        "detail": f"only the receiving site's admin or a network admin decides for the receiver of share request {req['id']}",
    }
    stranger = hub.account("researcher", institution="embl")
    assert decide(hub, stranger, req["id"], "approve").status_code == 404, "not theirs to see"
    assert transfers_of(hub, n["ds"]["id"]) == []

    # The receiving site's admin consents: now the copy starts.
    ok = decide(hub, n["other_admin"], req["id"], "approve")
    assert ok.status_code == 200, ok.text
    done = ok.json()
    assert done["state"] == "approved" and done["receiver_decided_by"] == n["other_admin"].client_id
    assert not done["receiver_auto_approved"] and done["expires_at"] is not None
    assert (done["events"][-1]["action"], done["events"][-1]["actor"]) == ("receiver-approved", n["other_admin"].client_id)
    (t,) = transfers_of(hub, n["ds"]["id"])
    assert (t["share_request"], t["dest_site"], t["state"]) == (req["id"], "other", "QUEUED")
    assert replicas_of(hub, n["ds"]["id"])["other"] == "COPYING"


def test_the_receiving_admin_denies_and_revokes(hub: Hub, tmp_path: Path) -> None:
    n = third_site_network(hub, tmp_path)
    ds = n["ds"]["id"]
    first = ask(hub, n["researcher"], ds, dest="other").json()
    denied = decide(hub, n["other_admin"], first["id"], "deny")
    assert denied.status_code == 200
    assert (denied.json()["state"], denied.json()["receiver_decision"]) == ("denied", "denied")
    assert denied.json()["events"][-1]["action"] == "receiver-denied"
    late = decide(hub, n["owner_admin"], first["id"], "approve")
    assert late.status_code == 409 and late.json()["detail"] == f"share request {first['id']} is denied, not pending"
    assert transfers_of(hub, ds) == []

    # Consented, copying, then revoked by the receiving site's admin: the transfer is cancelled
    # and the half-made replica retired, as when the owner revokes.
    second = ask(hub, n["researcher"], ds, dest="other").json()
    assert decide(hub, n["other_admin"], second["id"], "approve").json()["state"] == "approved"
    for who, code in ((n["dest_admin"], 404), (hub.account("researcher", institution="embl"), 404)):
        refused = decide(hub, who, second["id"], "revoke")
        assert refused.status_code == code and refused.json()["error"] == "NotFound", who.role
    revoked = decide(hub, n["other_admin"], second["id"], "revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert (revoked.json()["events"][-1]["action"], revoked.json()["events"][-1]["actor"]) == (
        "revoked",
        n["other_admin"].client_id,
    )
    (t,) = transfers_of(hub, ds)
    assert t["state"] == "CANCELLED" and t["reason"] == "share request revoked"
    assert "other" not in replicas_of(hub, ds)
    assert decide(hub, n["owner_admin"], second["id"], "revoke").status_code == 409, "nothing left to revoke"

    # A pending request too: the receiving admin withdraws it before anyone decided.
    third = ask(hub, n["researcher"], ds, dest="other").json()
    assert decide(hub, n["other_admin"], third["id"], "revoke").json()["state"] == "revoked"


def test_a_network_admin_decides_for_either_side_or_both(hub: Hub, tmp_path: Path) -> None:
    n = third_site_network(hub, tmp_path, owner_policy={})
    ds = n["ds"]["id"]
    req = ask(hub, n["researcher"], ds, dest="other").json()
    assert (req["owner_decision"], req["receiver_decision"]) == ("pending", "pending")
    one = decide(hub, hub.admin, req["id"], "approve", side="receiver").json()
    assert (one["state"], one["owner_decision"], one["receiver_decision"]) == ("pending", "pending", "approved")
    with hub.as_(n["owner_admin"]) as c:
        assert [x["id"] for x in c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()] == [req["id"]]
    assert transfers_of(hub, ds) == []
    assert decide(hub, n["owner_admin"], req["id"], "approve").json()["state"] == "approved"
    assert len(transfers_of(hub, ds)) == 1

    both = ask(hub, n["researcher"], ds, dest="dest")  # dest is osaka-u's own site: it accepts by policy
    assert both.json()["receiver_decision"] == "approved"
    with hub.as_(n["dest_admin"]) as c:
        assert c.put("/api/v1/sites/dest/share-policy", json={"accept_own_institution": False}).status_code == 200
    decide(hub, n["researcher"], both.json()["id"], "revoke")
    again = ask(hub, n["researcher"], ds, dest="dest").json()
    assert again["receiver_decision"] == "pending", "dest no longer accepts its own institution by itself"
    done = decide(hub, hub.admin, again["id"], "approve").json()
    assert done["state"] == "approved"
    assert [(e["action"], e["actor"]) for e in done["events"][-2:]] == [
        ("approved", hub.admin.client_id),
        ("receiver-approved", hub.admin.client_id),
    ]


def test_the_receiving_policy_accepts_named_institutions(hub: Hub, tmp_path: Path) -> None:
    n = third_site_network(hub, tmp_path)
    with hub.as_(n["owner_admin"]) as c:
        r = c.put("/api/v1/sites/other/share-policy", json={"accept_institutions": ["osaka-u"]})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", "the owner cannot set the receiver's policy"
    with hub.as_(n["other_admin"]) as c:
        r = c.put("/api/v1/sites/other/share-policy", json={"accept_institutions": ["osaka-u"]})
        assert r.status_code == 200, r.text
    with hub.as_(n["researcher"]) as c:
        policy = c.get("/api/v1/sites/other/share-policy").json()
    assert policy["accept_institutions"] == ["osaka-u"] and policy["accept_own_institution"] and policy["accept_job_inputs"]
    req = ask(hub, n["researcher"], n["ds"]["id"], dest="other").json()
    assert req["state"] == "approved" and req["receiver_auto_approved"]
    assert (req["receiver_decided_by"], req["receiver_decision_reason"]) == (
        "policy of site other",
        "accepted institution osaka-u",
    )
    assert [e["action"] for e in req["events"]] == ["requested", "receiver-auto-approved", "auto-approved"]
    assert len(transfers_of(hub, n["ds"]["id"])) == 1
    bounded = {"accept_institutions": [f"inst-{i}" for i in range(1001)]}
    with hub.as_(n["other_admin"]) as c:
        assert c.put("/api/v1/sites/other/share-policy", json=bounded).status_code == 422


def test_the_dashboard_shows_the_receiving_admin_what_waits_for_them(hub: Hub, tmp_path: Path) -> None:
    n = third_site_network(hub, tmp_path)
    req = ask(hub, n["researcher"], n["ds"]["id"], dest="other").json()
    views = {}
    for who in ("other_admin", "owner_admin", "researcher"):
        with hub.as_(n[who]) as c:
            views[who] = c.get("/api/v1/dashboard/data").json()
    (row,) = views["other_admin"]["share_requests"]
    assert row["id"] == req["id"] and row["can_decide"] and row["awaiting"] == ["receiver other"]
    assert views["other_admin"]["awaiting_me"] == 1
    (owner_row,) = views["owner_admin"]["share_requests"]
    assert not owner_row["can_decide"] and views["owner_admin"]["awaiting_me"] == 0
    assert not views["researcher"]["share_requests"][0]["can_decide"]


def _insert(conn: Any, table: str, **row: Any) -> None:
    import sqlalchemy as sa

    from hub.types import UTCDateTime

    def typed(k: str, v: Any) -> Any:
        if isinstance(v, datetime):
            return sa.column(k, UTCDateTime())
        return sa.column(k, sa.JSON()) if isinstance(v, dict | list) else sa.column(k)

    conn.execute(sa.table(table, *(typed(k, v) for k, v in row.items())).insert().values(**row))


def test_migration_0009_counts_approved_shares_as_consented_and_applies_the_default_policy(empty_db_url: str) -> None:
    db_url = empty_db_url
    import sqlalchemy as sa

    from hub.db import make_engine, migrate
    from hub.types import utcnow

    migrate(db_url, "0008")
    now = utcnow()
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for sid, name, inst in ((1, "owner", "kek"), (2, "dest", "osaka-u"), (3, "other", "embl")):
                _insert(conn, "sites", id=sid, name=name, institution=inst, display_name=name, country="JP", contacts=[],
                        status="active", reachability="online", created_at=now, updated_at=now)  # fmt: skip
            _insert(conn, "datasets", id="ds-1", owner_site_id=1, institution="kek", title="t", experiment_type="spa",
                    visibility="network", meta={}, checksum_algorithm="sha256", manifest={}, manifest_digest="0" * 64,
                    file_count=1, total_bytes=1, source_datasets=[], registered_by="agent", created_at=now)  # fmt: skip
            _insert(conn, "jobs", id="job-1", owner="rin", institution="osaka-u", name="j", kind="generic.command", spec={},
                    state="INITIALIZING", attempt=1, priority=0, cancel_requested=False, stdout_tail="", stderr_tail="",
                    created_at=now, updated_at=now)  # fmt: skip
            _insert(conn, "attempts", id="at-1", job_id="job-1", number=1, site_id=3, state="staging", cpus=1, gpus=0,
                    offered_at=now, last_seq=0)  # fmt: skip
            _insert(conn, "share_policies", site_id=1, auto_approve_public=False, auto_approve_institutions=["osaka-u"],
                    updated_at=now)  # fmt: skip
            rows = {  # id: (dest, state, decided_by, purpose)
                "sr-approved": (3, "approved", "kek-admin", "refine"),
                "sr-expired": (3, "expired", "policy of site owner", "refine"),
                "sr-revoked-after": (3, "revoked", "kek-admin", "refine"),
                "sr-revoked-before": (3, "revoked", None, "refine"),
                "sr-denied": (3, "denied", "kek-admin", "refine"),
                "sr-pending-own": (2, "pending", None, "refine"),
                "sr-pending-third": (3, "pending", None, "refine"),
                "sr-pending-job": (3, "pending", None, "input of job job-1"),
            }
            for rid, (dest, state, by, purpose) in rows.items():
                _insert(conn, "share_requests", id=rid, dataset_id="ds-1", dest_site_id=dest, requested_by="rin",
                        requester_institution="osaka-u", purpose=purpose, lifetime_days=30, state=state,
                        auto_approved=False, decided_by=by, decided_at=now if by else None, created_at=now)  # fmt: skip
        migrate(db_url)
        with engine.connect() as conn:
            got = {
                r.id: (r.owner_decision, r.receiver_decision, r.receiver_decided_by, r.job_id)
                for r in conn.execute(sa.text("SELECT * FROM share_requests"))
            }
            events = {(r.request_id, r.action, r.actor) for r in conn.execute(sa.text("SELECT * FROM share_events"))}
            policy = conn.execute(sa.text("SELECT * FROM share_policies")).one()
    finally:
        engine.dispose()
    assert got == {
        "sr-approved": ("approved", "approved", "hub", None),
        "sr-expired": ("approved", "approved", "hub", None),
        "sr-revoked-after": ("approved", "approved", "hub", None),
        "sr-revoked-before": ("pending", "pending", None, None),
        "sr-denied": ("denied", "pending", None, None),
        "sr-pending-own": ("pending", "approved", "policy of site dest", None),
        "sr-pending-third": ("pending", "pending", None, None),
        "sr-pending-job": ("pending", "approved", "policy of site other", "job-1"),
    }
    assert events == {
        ("sr-approved", "receiver-auto-approved", "hub"),
        ("sr-expired", "receiver-auto-approved", "hub"),
        ("sr-revoked-after", "receiver-auto-approved", "hub"),
        ("sr-pending-own", "receiver-auto-approved", "policy of site dest"),
        ("sr-pending-job", "receiver-auto-approved", "policy of site other"),
        ("sr-pending-third", "receiver-held", "policy of site other"),
    }
    assert (bool(policy.accept_own_institution), bool(policy.accept_job_inputs)) == (True, True)


def test_the_receiving_admin_decides_from_the_cli(sqlite_hub: Hub, tmp_path: Path) -> None:
    from tests.cli.test_cli import run

    n = third_site_network(sqlite_hub, tmp_path)
    req = ask(sqlite_hub, n["researcher"], n["ds"]["id"], dest="other").json()
    listed = run(sqlite_hub, "shares", "list", "--awaiting-me", account=n["other_admin"])
    assert req["id"] in listed.stdout and "pending: receiver" in listed.stdout
    assert req["id"] not in run(sqlite_hub, "shares", "list", "--awaiting-me", account=n["owner_admin"]).stdout
    refused = run(sqlite_hub, "shares", "approve", req["id"], "--side", "receiver", account=n["owner_admin"])
    assert refused.returncode == 1 and "403 Forbidden" in refused.stdout and "receiving site's admin" in refused.stdout
    wrong = run(sqlite_hub, "shares", "approve", req["id"], "--side", "dest", account=n["other_admin"])
    assert wrong.returncode != 0 and "--side is owner or receiver" in wrong.stdout + wrong.stderr
    ok = run(sqlite_hub, "shares", "deny", req["id"], "--reason", "no storage", account=n["other_admin"])
    assert ok.returncode == 0 and f"share request {req['id']}: denied" in ok.stdout
