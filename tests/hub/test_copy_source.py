"""Which holder a job's input is copied from, on the hub: the one the broker's estimate assumed
(the soonest by measured throughput net of the transfers under way, the owner on a tie), among
the owner and the holders the sharing rules let serve it (hub/datasets/shares.py ``relays``).
The agents are played by the test over real HTTP; agent processes carrying such a copy are in
tests/test_transfers_e2e.py, the choice's own rules in tests/hub/test_copy_choice.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from hub.datasets.shares import relays
from hub.db import make_engine, transaction
from hub.sites.models import Site
from shared.units import human_bytes
from tests.helpers import Agent, Hub, running_hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register
from tests.hub.test_jobs import _CLIENTS, CPU_SITE, add_site, spec, submit
from tests.hub.test_transfers import agent_call, progress


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """Each submission reads the transfers under way afresh (``site_view_max_age_s`` 0): with the
    default, one started less than 5 s before is seen by the next reload (hub/broker/cache.py)."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, site_view_max_age_s=0) as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


def _copy(hub: Hub, src: Agent, dst: Agent, t: dict[str, Any], where: str) -> None:
    """The two agents carry out transfer ``t`` (played here): the replica becomes AVAILABLE."""
    full = {"bytes_done": t["bytes_total"], "files_done": t["files_total"]}
    assert progress(hub, src, t["id"], **full, done=True, access={"kind": "fs", "root": "/x"}).status_code == 200
    assert progress(hub, dst, t["id"], **full, done=True, location=where).status_code == 200


def _transfer_of(hub: Hub, ds_id: str, dest: str) -> dict[str, Any]:
    with hub.as_admin() as c:
        (t,) = [t for t in c.get("/api/v1/transfers", params={"dataset": ds_id}).json() if t["dest_site"] == dest]
    return dict(t)


def _network(hub: Hub, tmp: Path) -> dict[str, Any]:
    """kek owns four datasets: a public one, one the network sees, a public one under embargo,
    and a large one. relay (osaka-u) holds complete copies of the first three; its share policy
    lets public data it holds be copied from it (``serve_public_copies``). dest (embl) holds nothing."""
    for name, inst in (("kek", "kek"), ("relay", "osaka-u"), ("dest", "embl")):
        add_site(hub, tmp, name, CPU_SITE, institution=inst)
        with hub.as_admin() as c:
            c.post(f"/api/v1/sites/{name}/activate")
    agents = {name: hub.enroll_agent(name, tmp / f"{name}-data-agent") for name in ("kek", "relay", "dest")}
    embargo = (date.today() + timedelta(days=90)).isoformat()
    ds = {
        name: register(hub, agents["kek"], dataset_body(make_dataset_dir(tmp / name), **meta)).json()
        for name, meta in (("public", {"visibility": "public"}), ("network", {"visibility": "network"}),
                           ("embargoed", {"visibility": "public", "embargo_until": embargo}),
                           ("large", {"visibility": "network"}))
    }  # fmt: skip
    me = hub.account("researcher", institution="osaka-u")
    with hub.as_admin() as c:
        assert c.put("/api/v1/sites/kek/share-policy", json={"auto_approve_public": True,
                     "auto_approve_institutions": ["osaka-u"]}).status_code == 200  # fmt: skip
        assert c.put("/api/v1/sites/relay/share-policy", json={"serve_public_copies": True}).status_code == 200
        for name in ("public", "network", "embargoed"):
            req = c.post(f"/api/v1/datasets/{ds[name]['id']}/share-requests", json={"dest_site": "relay", "purpose": "mirror"})
            assert c.post(f"/api/v1/share-requests/{req.json()['id']}/approve", json={}).json()["state"] == "approved"
            t = _transfer_of(hub, ds[name]["id"], "relay")
            assert t["source_site"] == "kek", "the only holder"
            _copy(hub, agents["kek"], agents["relay"], t, f"/data/relay/{name}")
    return {"ds": ds, "me": me, "agents": agents}


def _explained(hub: Hub, who: Any, job_id: str) -> str:
    with hub.as_(who) as c:
        why = c.get(f"/api/v1/jobs/{job_id}/placement").json()
    (dest,) = [v for v in why["latest"]["verdicts"] if v["site"] == "dest"]
    return " / ".join(dest["reasons"])


def test_a_staged_input_comes_from_the_holder_the_estimate_named(jhub: Hub, tmp_path: Path) -> None:
    n = _network(jhub, tmp_path)
    ds, me = n["ds"], n["me"]
    first = submit(jhub, me, spec(name="a", inputs=[{"dataset": ds["public"]["id"]}], placement={"allowed_sites": ["dest"]}))
    assert first.json()["state"] == "INITIALIZING", first.text
    assert _transfer_of(jhub, ds["public"]["id"], "dest")["source_site"] == "kek", "no link measured or busy: the owner"
    assert f"copying {_size(ds['public'])} from kek," in _explained(jhub, me, first.json()["id"])

    # A copy of the large dataset from kek to dest is under way: that link is busy, the one from relay is not.
    with jhub.as_admin() as c:
        req = c.post(f"/api/v1/datasets/{ds['large']['id']}/share-requests", json={"dest_site": "dest", "purpose": "refinement"})
        c.post(f"/api/v1/share-requests/{req.json()['id']}/approve", json={})
    assert _transfer_of(jhub, ds["large"]["id"], "dest")["state"] == "QUEUED"
    # relay holds all three, kek's link is busy. relay may serve the public dataset (its policy
    # lets public data it holds leave); not the network one (no policy lets it leave relay) nor the embargoed one.
    sources = {}
    for name in ("network", "embargoed"):
        job = submit(jhub, me, spec(name=name, inputs=[{"dataset": ds[name]["id"]}], placement={"allowed_sites": ["dest"]}))
        assert job.json()["state"] == "INITIALIZING", job.text
        assert f"copying {_size(ds[name])} from kek," in _explained(jhub, me, job.json()["id"])
        if name == "embargoed":  # no policy shares it before its date: the owner's admin decides
            with jhub.as_admin() as c:
                (req,) = [r for r in c.get("/api/v1/share-requests", params={"state": "pending"}).json()
                          if r["dataset"] == ds[name]["id"]]  # fmt: skip
                assert c.post(f"/api/v1/share-requests/{req['id']}/approve", json={}).json()["state"] == "approved"
        sources[name] = _transfer_of(jhub, ds[name]["id"], "dest")["source_site"]
    assert sources == {"network": "kek", "embargoed": "kek"}, "a holder that may not share is never the source"

    # A public dataset relay holds: copied from relay, as the estimate said.
    with jhub.as_admin() as c:
        for t in c.get("/api/v1/transfers", params={"dataset": ds["public"]["id"]}).json():
            if t["dest_site"] == "dest":
                c.post(f"/api/v1/share-requests/{t['share_request']}/revoke", json={})
    with jhub.as_(me) as c:
        c.post(f"/api/v1/jobs/{first.json()['id']}/cancel")
    job = submit(jhub, me, spec(name="b", inputs=[{"dataset": ds["public"]["id"]}], placement={"allowed_sites": ["dest"]}))
    assert job.json()["state"] == "INITIALIZING", job.text
    assert f"copying {_size(ds['public'])} from relay," in _explained(jhub, me, job.json()["id"])
    t = next(t for t in _all(jhub, ds["public"]["id"]) if t["job"] == job.json()["id"])
    assert (t["source_site"], t["state"]) == ("relay", "QUEUED")
    (w,) = agent_call(jhub, n["agents"]["relay"], "GET", "/api/v1/sites/relay/transfers").json()
    assert (w["role"], w["transfer"]["id"], w["source_location"]) == ("source", t["id"], "/data/relay/public")
    _copy(jhub, n["agents"]["relay"], n["agents"]["dest"], t, "/data/dest/public")
    assert _transfer_of_job(jhub, ds["public"]["id"], job.json()["id"])["state"] == "DONE"


def test_relays_are_the_holders_whose_sharing_rules_let_them_serve(jhub: Hub, tmp_path: Path) -> None:
    n = _network(jhub, tmp_path)
    ds = n["ds"]
    engine = make_engine(jhub.settings.resolved_database_url)

    def now() -> dict[str, set[str]]:
        with transaction(engine) as s:
            names = dict(s.exec(select(Site.id, Site.name)).all())
            return {d: {names[i] for i in held} for d, held in relays(s).items()}

    try:
        assert now() == {ds["public"]["id"]: {"relay"}}, "the public dataset; not the network one nor the embargoed one"
        with jhub.as_admin() as c:
            off = {"auto_approve_public": True, "serve_public_copies": False}
            assert c.put("/api/v1/sites/relay/share-policy", json=off).status_code == 200
        assert now() == {}, "relay's admin no longer lets public data leave without deciding, whatever it approves of its own"
        with jhub.as_admin() as c:
            on = {"auto_approve_public": False, "serve_public_copies": True}
            assert c.put("/api/v1/sites/relay/share-policy", json=on).status_code == 200
            assert now() == {ds["public"]["id"]: {"relay"}}, "serving copies is its own consent"
            assert c.post("/api/v1/sites/relay/suspend").status_code == 200
        assert now() == {}, "a suspended site serves no copies"
    finally:
        engine.dispose()


def _size(d: dict[str, Any]) -> str:
    return human_bytes(d["total_bytes"])


def _all(hub: Hub, ds_id: str) -> list[dict[str, Any]]:
    with hub.as_admin() as c:
        return list(c.get("/api/v1/transfers", params={"dataset": ds_id}).json())


def _transfer_of_job(hub: Hub, ds_id: str, job_id: str) -> dict[str, Any]:
    return next(t for t in _all(hub, ds_id) if t["job"] == job_id)


@pytest.mark.parametrize("uplinks", [True, False], ids=["uplinks-shared", "per-pair"])
def test_a_holder_whose_uplink_is_busy_elsewhere_loses_only_with_uplinks_shared(
    db_url: str, tmp_path: Path, uplinks: bool
) -> None:
    """kek's uplink carries a copy of the large dataset to relay (a third site): with
    ``transfer_rate_shared_per_uplink`` a copy of the public dataset from kek to dest shares
    kek's rate with it, so relay (idle, no link measured) is sooner, in the broker's estimate and
    in the transfer the hub starts alike; per pair of sites, that copy does not touch the link
    from kek to dest and the owner wins the tie, as before."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, site_view_max_age_s=0,
                     transfer_rate_shared_per_uplink=uplinks) as hub:  # fmt: skip
        try:
            n = _network(hub, tmp_path)
            ds, me = n["ds"], n["me"]
            with hub.as_admin() as c:
                req = c.post(f"/api/v1/datasets/{ds['large']['id']}/share-requests", json={"dest_site": "relay",
                             "purpose": "mirror"})  # fmt: skip
                assert c.post(f"/api/v1/share-requests/{req.json()['id']}/approve", json={}).json()["state"] == "approved"
            busy = _transfer_of(hub, ds["large"]["id"], "relay")
            assert (busy["source_site"], busy["state"]) == ("kek", "QUEUED")

            job = submit(hub, me, spec(name="p", inputs=[{"dataset": ds["public"]["id"]}], placement={"allowed_sites": ["dest"]}))
            assert job.json()["state"] == "INITIALIZING", job.text
            source = "relay" if uplinks else "kek"
            assert f"copying {_size(ds['public'])} from {source}," in _explained(hub, me, job.json()["id"])
            t = _transfer_of_job(hub, ds["public"]["id"], job.json()["id"])
            assert (t["source_site"], t["state"]) == (source, "QUEUED"), "the source the estimate named"
        finally:
            while _CLIENTS:
                _CLIENTS.pop().close()
