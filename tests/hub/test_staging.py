"""Jobs meet data on the hub: the broker prefers the site holding a job's inputs; placed
elsewhere, the job waits in INITIALIZING while a share request (and its transfer) brings
the data, and is offered with the inputs' local paths once they are there; a refused copy
sends it back to the broker. Agents are played by the test over real HTTP; agent processes
running such a job on copied data are in tests/test_transfers_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.db import make_engine, transaction
from hub.jobs.staging import advance
from tests.helpers import Hub, running_hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register
from tests.hub.test_jobs import _CLIENTS, CPU_SITE, add_site, spec, submit
from tests.hub.test_transfers import agent_call, progress


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """The sweep is slowed down: each test moves staging on itself with ``tick``."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600) as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


def tick(hub: Hub) -> list[str]:
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            return advance(s, None)
    finally:
        engine.dispose()


def network(hub: Hub, tmp: Path) -> dict[str, Any]:
    holder = add_site(hub, tmp, "holder", CPU_SITE, institution="kek")
    other = add_site(hub, tmp, "other", CPU_SITE, institution="osaka-u")
    with hub.as_admin() as c:
        for s in ("holder", "other"):
            c.post(f"/api/v1/sites/{s}/activate")
    holder_agent = hub.enroll_agent("holder", tmp / "holder-data-agent")
    other_agent = hub.enroll_agent("other", tmp / "other-data-agent")
    ds = register(hub, holder_agent, dataset_body(make_dataset_dir(tmp / "data"), visibility="network")).json()
    me = hub.account("researcher", institution="osaka-u")
    owner_admin = hub.account("site_admin", site="holder")
    return {"holder": holder, "other": other, "ds": ds, "holder_agent": holder_agent, "other_agent": other_agent,
            "me": me, "owner_admin": owner_admin}  # fmt: skip


def test_the_broker_prefers_the_site_holding_the_inputs(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    plain = submit(jhub, n["me"], spec()).json()
    with_input = submit(jhub, n["me"], spec(name="refine", inputs=[{"dataset": n["ds"]["id"]}])).json()
    assert with_input["site"] == "holder" and with_input["state"] == "QUEUED", "no copy needed: offered at once"
    with jhub.as_(n["me"]) as c:
        why = c.get(f"/api/v1/jobs/{with_input['id']}/placement").json()
    parts = {v["site"]: v["score_parts"]["locality"] for v in why["latest"]["verdicts"]}
    assert parts == {"holder": 1.0, "other": 0.0}
    assert plain["site"] in ("holder", "other")
    (offer,) = [a for a in n["holder"].poll() if a["job_id"] == with_input["id"]]
    assert offer["inputs"] == {n["ds"]["id"]: n["ds"]["replicas"][0]["location"]}, "the executor gets the local path"


def test_unknown_or_invisible_inputs_are_refused_at_submission(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    r = submit(jhub, n["me"], spec(inputs=[{"dataset": "ds-doesnotexist"}]))
    assert r.status_code == 400 and "ds-doesnotexist" in r.json()["detail"]
    private = register(jhub, n["holder_agent"], dataset_body(make_dataset_dir(tmp_path / "p"), visibility="private")).json()
    r = submit(jhub, n["me"], spec(inputs=[{"dataset": private["id"]}]))
    assert r.status_code == 400 and "not visible to you" in r.json()["detail"], "another institution's private data"


def test_a_job_placed_away_from_its_data_waits_for_the_copy(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    ds = n["ds"]
    body = spec(inputs=[{"dataset": ds["id"]}], placement={"allowed_sites": ["other"]})
    job = submit(jhub, n["me"], body).json()
    assert (job["state"], job["site"]) == ("INITIALIZING", "other")
    assert "waiting for input data at other" in job["state_reason"] and "approve share request" in job["state_reason"]
    assert n["other"].poll() == [], "nothing is offered before the data is there"
    with jhub.as_(n["owner_admin"]) as c:
        (req,) = c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()
    assert req["purpose"] == f"input of job {job['id']}" and req["requested_by"] == n["me"].client_id
    assert tick(jhub) == [], "still pending"

    with jhub.as_(n["owner_admin"]) as c:
        assert c.post(f"/api/v1/share-requests/{req['id']}/approve", json={"reason": "ok"}).status_code == 200
        (t,) = c.get("/api/v1/transfers").json()
    # The agents carry out the transfer (played here); the replica becomes AVAILABLE.
    full = {"bytes_done": ds["total_bytes"], "files_done": ds["file_count"]}
    progress(jhub, n["holder_agent"], t["id"], **full, done=True, access={"kind": "fs", "root": "/x"})
    assert tick(jhub) == [], "the copy is under way"
    progress(jhub, n["other_agent"], t["id"], **full, done=True, location="/data/other/copy")
    assert tick(jhub) == [job["id"]]
    with jhub.as_(n["me"]) as c:
        now = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert now["state"] == "INITIALIZING" and "inputs are at other" in now["state_reason"]
    (offer,) = n["other"].poll()
    assert offer["job_id"] == job["id"] and offer["inputs"] == {ds["id"]: "/data/other/copy"}
    assert n["other"].claim(offer["attempt_id"]).status_code == 200


def test_a_denied_copy_sends_the_job_back_to_the_broker(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    job = submit(jhub, n["me"], spec(inputs=[{"dataset": n["ds"]["id"]}], placement={"allowed_sites": ["other"]})).json()
    with jhub.as_(n["owner_admin"]) as c:
        (req,) = c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()
        c.post(f"/api/v1/share-requests/{req['id']}/deny", json={"reason": "not for this purpose"})
    assert tick(jhub) == [job["id"]]
    with jhub.as_(n["me"]) as c:
        now = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert now["state"] == "QUEUED" and now["site"] is None
    assert "was denied: not for this purpose" in now["state_reason"]


def test_a_policy_approved_copy_starts_at_once_and_a_staged_job_can_be_canceled(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    with jhub.as_(n["owner_admin"]) as c:
        c.put("/api/v1/sites/holder/share-policy", json={"auto_approve_institutions": ["osaka-u"]})
    job = submit(jhub, n["me"], spec(inputs=[{"dataset": n["ds"]["id"]}], placement={"allowed_sites": ["other"]})).json()
    assert job["state"] == "INITIALIZING" and "is being copied (transfer tr-" in job["state_reason"]
    (w,) = agent_call(jhub, n["holder_agent"], "GET", "/api/v1/sites/holder/transfers").json()
    assert w["transfer"]["job"] == job["id"]
    with jhub.as_(n["me"]) as c:
        canceled = c.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert canceled["state"] == "CANCELED"


def test_a_site_lending_to_the_jobs_institution_accepts_its_inputs_unless_its_policy_says_no(jhub: Hub, tmp_path: Path) -> None:
    """The receiving site's consent for a staged copy: embl's site lends to everyone, so it takes
    osaka-u's job and, by default, its input; with ``accept_job_inputs`` off its admin decides."""
    n = network(jhub, tmp_path)
    add_site(jhub, tmp_path, "embl", CPU_SITE, institution="embl")
    with jhub.as_admin() as c:
        c.post("/api/v1/sites/embl/activate")
    embl_agent = jhub.enroll_agent("embl", tmp_path / "embl-data-agent")
    with jhub.as_(n["owner_admin"]) as c:
        c.put("/api/v1/sites/holder/share-policy", json={"auto_approve_institutions": ["osaka-u"]})
    body = spec(inputs=[{"dataset": n["ds"]["id"]}], placement={"allowed_sites": ["embl"]})
    job = submit(jhub, n["me"], body).json()
    assert job["state"] == "INITIALIZING" and "is being copied" in job["state_reason"]
    with jhub.as_admin() as c:
        (req,) = c.get("/api/v1/share-requests").json()
    assert req["receiver_auto_approved"] and req["receiver_decided_by"] == "policy of site embl" and req["job"] == job["id"]
    assert (
        req["receiver_decision_reason"]
        == f"input of job {job['id']}, which the broker placed here under the site's lending policy"
    )
    with jhub.as_(n["me"]) as c:
        c.post(f"/api/v1/jobs/{job['id']}/cancel")
        c.post(f"/api/v1/share-requests/{req['id']}/revoke", json={})

    embl_admin = jhub.account("site_admin", site="embl")
    with jhub.as_(embl_admin) as c:
        assert c.put("/api/v1/sites/embl/share-policy", json={"accept_job_inputs": False}).status_code == 200
    job = submit(jhub, n["me"], body).json()
    assert (job["state"], job["site"]) == ("INITIALIZING", "embl")
    assert "waits for the receiving site to approve share request" in job["state_reason"]
    with jhub.as_(embl_admin) as c:
        (req,) = c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()
    assert req["purpose"] == f"input of job {job['id']}" and req["owner_decision"] == "approved"
    with jhub.as_admin() as c:
        assert [t["state"] for t in c.get("/api/v1/transfers").json()] == ["CANCELLED"], "only the first job's copy"
    assert tick(jhub) == [], "waits for embl's admin"
    with jhub.as_(embl_admin) as c:
        assert c.post(f"/api/v1/share-requests/{req['id']}/approve", json={}).json()["state"] == "approved"
        (w,) = [t for t in c.get("/api/v1/transfers").json() if t["state"] != "CANCELLED"]
    assert w["job"] == job["id"] and w["dest_site"] == "embl"
    assert agent_call(jhub, embl_agent, "GET", "/api/v1/sites/embl/transfers").json() == [], "nothing to fetch yet"


def test_a_copy_the_receiving_site_denies_sends_the_job_back_to_the_broker(jhub: Hub, tmp_path: Path) -> None:
    n = network(jhub, tmp_path)
    add_site(jhub, tmp_path, "embl", CPU_SITE, institution="embl")
    with jhub.as_admin() as c:
        c.post("/api/v1/sites/embl/activate")
    embl_admin = jhub.account("site_admin", site="embl")
    with jhub.as_(embl_admin) as c:
        c.put("/api/v1/sites/embl/share-policy", json={"accept_job_inputs": False})
    job = submit(jhub, n["me"], spec(inputs=[{"dataset": n["ds"]["id"]}], placement={"allowed_sites": ["embl"]})).json()
    with jhub.as_(embl_admin) as c:
        (req,) = c.get("/api/v1/share-requests", params={"awaiting": "me"}).json()
        assert c.post(f"/api/v1/share-requests/{req['id']}/deny", json={"reason": "no room"}).status_code == 200
    assert tick(jhub) == [job["id"]]
    with jhub.as_(n["me"]) as c:
        now = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert now["state"] == "QUEUED" and "was denied by the receiving site: no room" in now["state_reason"]
