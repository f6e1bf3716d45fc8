"""The hub's side of transfers: created by approval, driven by the two agents' reports,
retried when stalled, suspended with the reason, cancelled with the request, and who may
see or touch them. The agents here are the test, calling with real agent credentials; the
real agent processes moving real bytes are in tests/test_transfers_e2e.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from hub.db import make_engine, transaction
from hub.transfers.service import stalled
from hub.types import utcnow
from tests.helpers import Agent, Hub
from tests.hub.test_shares import act, ask, setup_network


def agent_call(hub: Hub, agent: Agent, method: str, path: str, **kw: Any) -> httpx.Response:
    with hub.http(hub.agent_token(agent)) as c:
        return c.request(method, path, **kw)


def approved_transfer(hub: Hub, tmp: Path) -> dict[str, Any]:
    n = setup_network(hub, tmp)
    n["source"] = n["agent"]
    n["dest_agent"] = hub.enroll_agent("dest", tmp / "dest-agent")
    n["other_agent"] = hub.enroll_agent("other", tmp / "other-agent")
    req = ask(hub, n["researcher"], n["ds"]["id"]).json()
    assert act(hub, n["owner_admin"], req["id"], "approve").status_code == 200
    n["req"] = req
    with hub.as_admin() as c:
        (t,) = c.get("/api/v1/transfers", params={"dataset": n["ds"]["id"]}).json()
    n["t"] = t
    return n


def progress(hub: Hub, agent: Agent, tid: str, **body: Any) -> httpx.Response:
    return agent_call(hub, agent, "POST", f"/api/v1/transfers/{tid}/progress", json={"attempt": 1, **body})


def replicas(hub: Hub, ds_id: str) -> dict[str, str]:
    with hub.as_admin() as c:
        return {r["site"]: r["state"] for r in c.get(f"/api/v1/datasets/{ds_id}").json()["replicas"]}


def test_an_approved_request_becomes_a_transfer_the_agents_carry_out(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    t, ds = n["t"], n["ds"]
    assert (t["state"], t["source_site"], t["dest_site"], t["share_request"]) == ("QUEUED", "owner", "dest", n["req"]["id"])
    assert t["files_total"] == ds["file_count"] and t["bytes_total"] == ds["total_bytes"]
    assert replicas(hub, ds["id"]) == {"owner": "AVAILABLE", "dest": "COPYING"}

    # Each agent sees its own side; the third site's agent sees nothing and may not report.
    work = agent_call(hub, n["source"], "GET", "/api/v1/sites/owner/transfers").json()
    assert [(w["role"], w["source_location"], len(w["manifest"]["files"])) for w in work] == [
        ("source", ds["replicas"][0]["location"], ds["file_count"])
    ]
    assert agent_call(hub, n["dest_agent"], "GET", "/api/v1/sites/dest/transfers").json() == [], "nothing to fetch yet"
    assert agent_call(hub, n["other_agent"], "GET", "/api/v1/sites/other/transfers").json() == []
    r = agent_call(hub, n["other_agent"], "GET", "/api/v1/sites/owner/transfers")
    assert r.status_code == 403 and "cannot act as site owner" in r.json()["detail"]
    r = progress(hub, n["other_agent"], t["id"], bytes_done=1, files_done=0)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    with hub.as_(n["researcher"]) as c:
        r = c.post(f"/api/v1/transfers/{t['id']}/progress", json={"attempt": 1, "bytes_done": 0, "files_done": 0})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"

    # The destination cannot claim a copy before the source has published anything.
    r = progress(hub, n["dest_agent"], t["id"], bytes_done=0, files_done=0)
    assert r.status_code == 409 and "nothing to fetch" in r.json()["detail"]
    assert progress(hub, n["source"], t["id"], bytes_done=100, files_done=1).json()["state"] == "PUBLISHING"
    r = progress(hub, n["source"], t["id"], bytes_done=ds["total_bytes"], files_done=ds["file_count"], done=True)
    assert r.status_code == 409 and "access" in r.json()["detail"]
    access = {"kind": "fs", "root": "/srv/exchange/x"}
    full = {"bytes_done": ds["total_bytes"], "files_done": ds["file_count"]}
    done = progress(hub, n["source"], t["id"], **full, done=True, access=access)
    assert done.json()["state"] == "FETCHING"
    (dw,) = agent_call(hub, n["dest_agent"], "GET", "/api/v1/sites/dest/transfers").json()
    assert dw["role"] == "dest" and dw["access"]["root"] == "/srv/exchange/x"

    # A corrupt file goes on the republish list; the copy cannot finish while it waits.
    first = dw["manifest"]["files"][0]["path"]
    r = progress(hub, n["dest_agent"], t["id"], bytes_done=10, files_done=1, corrupt=[first])
    assert r.json()["republish"] == [first]
    r = progress(hub, n["dest_agent"], t["id"], **full, done=True, location="/data/copy")
    assert r.status_code == 409 and "wait to be sent again" in r.json()["detail"]
    r = progress(hub, n["source"], t["id"], **full, republished=[first])
    assert r.json()["republish"] == [] and r.json()["resent_files"] == {first: 1}
    r = progress(hub, n["dest_agent"], t["id"], bytes_done=5, files_done=1, done=True, location="/data/copy")
    assert r.status_code == 409 and "holds 1/" in r.json()["detail"], "a short copy is never AVAILABLE"
    r = progress(hub, n["dest_agent"], t["id"], **full, done=True, location="/data/copy", rate_bps=1e6)
    assert r.json()["state"] == "DONE" and r.json()["fetched_bytes"] == ds["total_bytes"]
    assert replicas(hub, ds["id"]) == {"owner": "AVAILABLE", "dest": "AVAILABLE"}
    with hub.as_admin() as c:
        rep = next(x for x in c.get(f"/api/v1/datasets/{ds['id']}").json()["replicas"] if x["site"] == "dest")
    assert rep["location"] == "/data/copy" and rep["verified_at"] is not None
    late = progress(hub, n["dest_agent"], t["id"], **full)
    assert late.status_code == 409 and "DONE" in late.json()["detail"]

    # The source still has a part: removing its published copy; then it has none.
    (cw,) = agent_call(hub, n["source"], "GET", "/api/v1/sites/owner/transfers").json()
    assert cw["cleanup"] is True
    assert agent_call(hub, n["source"], "POST", f"/api/v1/transfers/{t['id']}/cleaned").status_code == 200
    assert agent_call(hub, n["source"], "GET", "/api/v1/sites/owner/transfers").json() == []


def test_who_sees_a_transfer(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    tid = n["t"]["id"]
    for who in ("researcher", "owner_admin", "dest_admin"):
        with hub.as_(n[who]) as c:
            assert c.get(f"/api/v1/transfers/{tid}").status_code == 200, who
            assert [t["id"] for t in c.get("/api/v1/transfers").json()] == [tid], who
    stranger = hub.account("researcher", institution="osaka-u")
    with hub.as_(n["other_admin"]) as c, hub.as_(stranger) as s:
        for client in (c, s):
            r = client.get(f"/api/v1/transfers/{tid}")
            assert r.status_code == 404 and r.json()["error"] == "NotFound"
            assert client.get("/api/v1/transfers").json() == []
    with hub.as_(n["researcher"]) as c:
        r = c.post(f"/api/v1/transfers/{tid}/retry")
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    with hub.as_(n["owner_admin"]) as c:
        r = c.post(f"/api/v1/transfers/{tid}/retry")
    assert r.status_code == 409 and "only a SUSPENDED transfer" in r.json()["detail"]


def test_no_progress_means_another_attempt_then_suspended_with_the_reason(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    tid, ds = n["t"]["id"], n["ds"]
    settings = hub.settings.model_copy(update={"transfer_stall_s": 60})
    engine = make_engine(hub.settings.resolved_database_url)
    later = utcnow() + timedelta(seconds=61)
    try:
        with transaction(engine) as session:
            assert stalled(session, settings, now=utcnow()) == [], "not yet stalled"
        for attempt in range(2, n["t"]["max_attempts"] + 1):
            with transaction(engine) as session:
                assert stalled(session, settings, now=later) == [tid]
            with hub.as_admin() as c:
                t = c.get(f"/api/v1/transfers/{tid}").json()
            assert (t["state"], t["attempt"]) == ("QUEUED", attempt)
            assert "no progress for 60 s in QUEUED" in t["reason"]
            later += timedelta(seconds=61)
        stale = progress(hub, n["source"], tid, bytes_done=1, files_done=0)
        assert stale.status_code == 409 and "superseded" in stale.json()["detail"]
        with transaction(engine) as session:
            assert stalled(session, settings, now=later) == [tid]
    finally:
        engine.dispose()
    with hub.as_admin() as c:
        t = c.get(f"/api/v1/transfers/{tid}").json()
    assert t["state"] == "SUSPENDED" and t["reason"].startswith(f"suspended after {t['max_attempts']} attempt(s)")
    assert replicas(hub, ds["id"])["dest"] == "UNAVAILABLE"
    # An admin of either site starts it again with a fresh budget.
    with hub.as_(n["dest_admin"]) as c:
        again = c.post(f"/api/v1/transfers/{tid}/retry").json()
    assert again["state"] == "QUEUED" and again["attempt"] == t["attempt"] + 1
    assert replicas(hub, ds["id"])["dest"] == "COPYING"


def test_an_agent_failure_and_repeated_corruption_use_up_attempts(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    tid, ds = n["t"]["id"], n["ds"]
    r = agent_call(hub, n["source"], "POST", f"/api/v1/transfers/{tid}/fail",
                   json={"attempt": 1, "reason": "disk gone", "file_errors": [{"path": "run.star", "error": "EIO"}]})  # fmt: skip
    t = r.json()
    assert (t["state"], t["attempt"], t["reason"]) == ("QUEUED", 2, "source: disk gone")
    assert [(e["path"], e["error"]) for e in t["file_errors"]] == [("run.star", "EIO")]
    access = {"kind": "fs", "root": "/x"}
    full = {"bytes_done": ds["total_bytes"], "files_done": ds["file_count"]}
    assert progress(hub, n["source"], tid, attempt=2, **full, done=True, access=access).json()["state"] == "FETCHING"
    for _ in range(3):  # the default transfer_max_republish
        r = progress(hub, n["dest_agent"], tid, attempt=2, bytes_done=0, files_done=0, corrupt=["run.star"])
        assert r.json()["state"] == "FETCHING"
        progress(hub, n["source"], tid, attempt=2, **full, republished=["run.star"])
    r = progress(hub, n["dest_agent"], tid, attempt=2, bytes_done=0, files_done=0, corrupt=["run.star"])
    assert r.json()["attempt"] == 3 and "run.star failed its checks 4 times" in r.json()["reason"]


def test_revoking_the_request_cancels_the_transfer(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    assert act(hub, n["researcher"], n["req"]["id"], "revoke", "no longer needed").status_code == 200
    with hub.as_admin() as c:
        t = c.get(f"/api/v1/transfers/{n['t']['id']}").json()
    assert t["state"] == "CANCELLED" and t["reason"] == "share request revoked"
    assert "dest" not in replicas(hub, n["ds"]["id"]), "a copy never completed leaves no replica behind"
    (w,) = agent_call(hub, n["source"], "GET", "/api/v1/sites/owner/transfers").json()
    assert w["cleanup"] is True, "the source still removes whatever it published"


def test_a_transfer_report_with_a_path_outside_the_dataset_is_refused(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    for bad in ("../../etc/passwd", "/etc/passwd"):
        r = progress(hub, n["dest_agent"], n["t"]["id"], bytes_done=0, files_done=0, corrupt=[bad])
        assert r.status_code == 422 and ("inside the dataset" in r.text or "relative" in r.text), r.text
        r = progress(hub, n["source"], n["t"]["id"], bytes_done=0, files_done=0,
                     access={"kind": "s3", "urls": {bad: "http://x"}})  # fmt: skip
        assert r.status_code == 422


def test_audits_mark_a_replica_bad_and_whole_again(hub: Hub, tmp_path: Path) -> None:
    n = approved_transfer(hub, tmp_path)
    ds = n["ds"]
    (rw,) = agent_call(hub, n["source"], "GET", "/api/v1/sites/owner/replicas").json()
    assert rw["dataset"] == ds["id"] and len(rw["manifest"]["files"]) == ds["file_count"]
    r = agent_call(hub, n["dest_agent"], "GET", "/api/v1/sites/owner/replicas")
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    bad = {"files_checked": 5, "checksums_verified": 1, "missing": ["run.star"], "corrupt": ["particles.mrcs"]}
    r = agent_call(hub, n["dest_agent"], "POST", f"/api/v1/sites/owner/replicas/{ds['id']}/audit", json=bad)
    assert r.status_code == 403
    r = agent_call(hub, n["dest_agent"], "POST", f"/api/v1/sites/dest/replicas/{ds['id']}/audit", json=bad)
    assert r.status_code == 409 and "COPYING" in r.json()["detail"], "a copy in progress is not audited"
    r = agent_call(hub, n["source"], "POST", f"/api/v1/sites/owner/replicas/{ds['id']}/audit", json=bad).json()
    assert r["state"] == "BAD" and "1 missing (e.g. run.star); 1 corrupt (e.g. particles.mrcs)" in r["state_reason"]
    with hub.as_(n["researcher"]) as c:
        listed = c.get("/api/v1/datasets", params={"site": "owner"}).json()
    assert listed["items"] == [], "a BAD replica does not count as held"
    r = agent_call(hub, n["dest_agent"], "DELETE", f"/api/v1/sites/owner/replicas/{ds['id']}")
    assert r.status_code == 403, "another site's agent cannot drop a replica"
    r = agent_call(hub, n["source"], "DELETE", f"/api/v1/sites/owner/replicas/{ds['id']}")
    assert r.status_code == 409 and "only a DELETING replica" in r.json()["detail"]
    clean = {"files_checked": 5, "checksums_verified": 1}
    r = agent_call(hub, n["source"], "POST", f"/api/v1/sites/owner/replicas/{ds['id']}/audit", json=clean).json()
    assert r["state"] == "AVAILABLE" and r["state_reason"] is None and r["verified_at"] is not None


def test_transfers_from_the_cli(sqlite_hub: Hub, tmp_path: Path) -> None:
    import json

    from tests.cli.test_cli import run

    n = approved_transfer(sqlite_hub, tmp_path)
    tid, ds = n["t"]["id"], n["ds"]
    progress(sqlite_hub, n["source"], tid, bytes_done=ds["total_bytes"] // 2, files_done=1, rate_bps=2.5e6)
    out = run(sqlite_hub, "transfers", "list", account=n["researcher"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert tid in out.stdout and "PUBLISHING" in out.stdout and "owner -> dest" in out.stdout and "2.5 MB/s" in out.stdout
    assert "━" in out.stdout, "a progress bar"
    shown = run(sqlite_hub, "transfers", "show", tid, account=n["owner_admin"])
    assert (
        shown.returncode == 0
        and "publish" in shown.stdout
        and "50%" in shown.stdout
        and f"1/{ds['file_count']} files" in shown.stdout
    )
    as_json = json.loads(run(sqlite_hub, "transfers", "show", tid, "--json", account=n["dest_admin"]).stdout)
    assert as_json["published_files"] == 1
    hidden = run(sqlite_hub, "transfers", "show", tid, account=n["other_admin"])
    assert hidden.returncode == 1 and "404" in hidden.stdout
    refused = run(sqlite_hub, "transfers", "retry", tid, account=n["researcher"])
    assert refused.returncode == 1 and "403" in refused.stdout
