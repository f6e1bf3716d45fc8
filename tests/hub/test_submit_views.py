"""Submissions are placed on site views each hub process keeps (hub/broker/cache.py): a change
of policy, status or reachability and a new capacity report are seen by the next submission;
work placed since is counted; the views are not reloaded while nothing in the registry moved."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from hub.broker.cache import SiteViewCache
from hub.capacity.models import CapacityLatest
from hub.capacity.service import mark_unreachable
from hub.db import make_engine, transaction
from hub.sites.models import Site
from hub.types import utcnow
from tests.helpers import Hub, heartbeat_body


def _job(name: str, cpus: int = 1) -> dict[str, Any]:
    return {"name": name, "kind": "generic.command", "command": ["true"], "resources": {"cpus": cpus}}


def _online(hub: Hub, tmp_path: Path, name: str, idle: int = 48) -> str:
    hub.create_site(name, institution="kek", partitions=[])  # judged by what its agent reports
    token = hub.agent_token(hub.enroll_agent(name, tmp_path / name))
    with hub.http(token) as c:
        assert c.post(f"/api/v1/sites/{name}/heartbeat", json=heartbeat_body(64, idle, None)).status_code == 200
    return token


def test_the_next_submission_sees_each_change(hub: Hub, tmp_path: Path) -> None:
    token = _online(hub, tmp_path, "alpha", idle=8)
    kek = hub.account("researcher", institution="kek")
    with hub.as_(kek) as c:
        first = c.post("/api/v1/jobs", json=_job("first", cpus=8)).json()
        assert first["site"] == "alpha"
        second = c.post("/api/v1/jobs", json=_job("second", cpus=8)).json()
        assert second["site"] is None, "the first job's 8 CPUs are held: nothing is free until alpha reports again"
    with hub.http(token) as c:  # alpha reports more free CPUs: the next submission uses them
        assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 40, None)).status_code == 200
    with hub.as_(kek) as c:
        assert c.post("/api/v1/jobs", json=_job("third", cpus=8)).json()["site"] == "alpha"
    with hub.as_admin() as c:  # alpha stops lending to kek
        r = c.put("/api/v1/sites/alpha/policy", json={"allowed_institutions": ["osaka-u"]})
        assert r.status_code == 200, r.text
    with hub.as_(kek) as c:
        r = c.post("/api/v1/jobs", json=_job("refused"))
        assert r.status_code == 409 and r.json()["error"] == "Conflict" and "alpha" in r.json()["detail"], r.text
    with hub.as_admin() as c:
        assert c.put("/api/v1/sites/alpha/policy", json={}).status_code == 200
    with hub.as_(kek) as c:
        assert c.post("/api/v1/jobs", json=_job("lent again")).json()["site"] == "alpha"
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:  # the sweep finds alpha silent
            assert mark_unreachable(s, hub.settings, now=utcnow() + timedelta(hours=1)) == ["alpha"]
    finally:
        engine.dispose()
    with hub.as_(kek) as c:
        r = c.post("/api/v1/jobs", json=_job("while alpha is silent"))
        assert r.status_code == 201 and r.json()["site"] is None
        why = c.get(f"/api/v1/jobs/{r.json()['id']}/placement").json()["explanation"]
        assert "unreachable" in why, why
    with hub.as_admin() as c:
        assert c.post("/api/v1/sites/alpha/suspend").status_code == 200
    with hub.http(token) as c:
        c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 64, None))
    with hub.as_(kek) as c:
        r = c.post("/api/v1/jobs", json=_job("while alpha is suspended"))
        assert r.status_code in (201, 409) and r.json().get("site") is None, r.text


def test_views_are_kept_while_the_registry_is_unchanged(hub: Hub, tmp_path: Path) -> None:
    token = _online(hub, tmp_path, "alpha", idle=8)
    _online(hub, tmp_path, "bravo", idle=16)
    engine = make_engine(hub.settings.resolved_database_url)
    cache = SiteViewCache(max_age_s=3600)

    def free() -> dict[str, int]:
        with transaction(engine) as s, cache.views(s, utcnow()) as views:
            return {v.name: v.cpus_free for v in views}

    try:
        assert free() == {"alpha": 8, "bravo": 16} and cache.reloads == 1
        with hub.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 30, None)).status_code == 200
        assert free() == {"alpha": 30, "bravo": 16} and cache.reloads == 1, "a capacity report is read on its own"
        with hub.as_admin() as c:
            assert c.put("/api/v1/sites/bravo/policy", json={"cpu_share": 0.5}).status_code == 200
        with transaction(engine) as s, cache.views(s, utcnow()) as views:
            assert {v.name: v.policy.cpu_share for v in views} == {"alpha": 1.0, "bravo": 0.5}
            assert (cache.reloads, cache.edits) == (1, 1), "a policy edit reloads that site's view alone"
        assert free() and (cache.reloads, cache.edits) == (1, 1)
        expiring = SiteViewCache(max_age_s=0)
        with transaction(engine) as s, expiring.views(s, utcnow()):
            pass
        with transaction(engine) as s:  # a snapshot committed late (no newer received_at): read once the views are old
            late = {"cpus_total": 64, "cpus_free": 5, "gpus": {}, "jobs_pending": 0}
            at_alpha = col(CapacityLatest.site_id) == s.exec(select(Site.id).where(Site.name == "alpha")).one()
            s.execute(update(CapacityLatest).where(at_alpha).values(totals=late, sampled_at=utcnow()))
        with transaction(engine) as s, expiring.views(s, utcnow()) as views:
            assert {v.name: v.cpus_free for v in views}["alpha"] == 5
        assert expiring.reloads == 1, "max_age_s=0: what changes with time is read again each time, without a full reload"
    finally:
        engine.dispose()
