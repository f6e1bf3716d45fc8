"""Heartbeats: stored snapshots, history, network summary, refusals that store nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hub.capacity.service import mark_unreachable
from hub.db import make_engine, transaction
from hub.sites.models import Site
from hub.types import utcnow
from tests.helpers import Hub, heartbeat_body


def _online_site(hub: Hub, tmp_path: Path, name: str | None = None, **site: object) -> tuple[dict[str, object], str]:
    s = hub.create_site(name, **site)
    agent = hub.enroll_agent(str(s["name"]), tmp_path / str(s["name"]))
    return s, hub.agent_token(agent)


def test_heartbeat_is_stored_and_summarised(hub: Hub, tmp_path: Path) -> None:
    _, token_a = _online_site(hub, tmp_path, "alpha")
    _, token_b = _online_site(hub, tmp_path, "beta")
    with hub.http(token_a) as c:
        resp = c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 48, ("a100", 8, 5)))
        assert resp.status_code == 200, resp.text
        assert resp.json()["site"] == "alpha"
    with hub.http(token_b) as c:
        assert c.post("/api/v1/sites/beta/heartbeat", json=heartbeat_body(128, 100, ("h100", 16, 16))).status_code == 200
    researcher = hub.account("researcher", institution="kek")
    with hub.as_(researcher) as c:
        summary = c.get("/api/v1/network/summary").json()
        cap = c.get("/api/v1/sites/alpha/capacity").json()
    assert summary["sites_by_status"] == {"active": 2}
    assert summary["sites_by_reachability"] == {"online": 2}
    assert summary["cpus_total"] == 192 and summary["cpus_free"] == 148
    assert summary["gpus"] == {"a100": {"total": 8, "free": 5}, "h100": {"total": 16, "free": 16}}
    alpha = next(s for s in summary["sites"] if s["name"] == "alpha")
    assert alpha["reachability"] == "online" and 0 <= alpha["heartbeat_age_s"] < 30
    assert alpha["capacity"]["jobs_pending"] == 3
    assert cap["partitions"][0]["gpus"] == [{"model": "a100", "total": 8, "free": 5}]
    assert cap["storage"][0]["free_bytes"] == 4 * 10**11


def test_agent_cannot_report_as_another_site(hub: Hub, tmp_path: Path) -> None:
    _, token_a = _online_site(hub, tmp_path, "alpha")
    _online_site(hub, tmp_path, "beta")
    with hub.http(token_a) as c:
        resp = c.post("/api/v1/sites/beta/heartbeat", json=heartbeat_body())
    assert resp.status_code == 403
    assert resp.json() == {"error": "Forbidden", "detail": "an agent of site alpha cannot act as site beta"}
    with hub.as_admin() as c:
        assert c.get("/api/v1/sites/beta/capacity").status_code == 404, "nothing was stored for beta"


def test_people_cannot_send_heartbeats(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site()
    for who in (sqlite_hub.admin, sqlite_hub.account("site_admin", site=site["name"])):
        with sqlite_hub.as_(who) as c:
            resp = c.post(f"/api/v1/sites/{site['name']}/heartbeat", json=heartbeat_body())
        assert resp.status_code == 403


def test_malformed_heartbeat_is_422_and_nothing_stored(hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(hub, tmp_path, "alpha")
    good = heartbeat_body(64, 48)
    bad = [
        ({**good, "partitions": []}, "partitions"),
        ({**good, "partitions": [{**good["partitions"][0], "cpus_allocated": 30, "cpus_idle": 40}]}, "exceeds cpus_total"),
        (heartbeat_body(64, 48, ("a100", 4, 9)), "exceeds total"),
        ({**good, "interval_s": -1}, "interval_s"),
        ({k: v for k, v in good.items() if k != "agent_version"}, "agent_version"),
        ({**good, "partitions": [{"name": "gpu"}]}, "cpus_total"),
        ({**good, "totals": {"cpus_total": 1, "cpus_free": 5}}, "cpus_free exceeds"),
    ]
    with hub.http(token) as c:
        for body, words in bad:
            resp = c.post("/api/v1/sites/alpha/heartbeat", json=body)
            assert resp.status_code == 422, body
            assert resp.json()["error"] == "ValidationError" and words in resp.json()["detail"], resp.json()
        assert c.get("/api/v1/sites/alpha/capacity").status_code == 404, "no snapshot was stored"
        assert c.get("/api/v1/sites/alpha").json()["reachability"] == "unknown", "a refused heartbeat is no sign of life"


def test_history_is_downsampled_into_buckets(sqlite_hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(sqlite_hub, tmp_path, "alpha")
    with sqlite_hub.http(token) as c:
        for idle in (10, 20, 30):
            assert (
                c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, idle, ("a100", 8, idle // 10))).status_code == 200
            )
        hist = c.get("/api/v1/sites/alpha/capacity/history", params={"hours": 1}).json()
    assert hist["bucket_s"] == 300
    assert sum(p["samples"] for p in hist["points"]) == 3
    if len(hist["points"]) == 1:  # all three fell in one 5-minute bucket (almost always)
        point = hist["points"][0]
        assert point["cpus_free_avg"] == 20 and point["cpus_free_min"] == 10 and point["cpus_total"] == 64
        assert point["gpus"]["a100"] == {"total": 8, "free_avg": 2.0, "free_min": 1}


def test_history_rejects_bad_windows(sqlite_hub: Hub) -> None:
    sqlite_hub.create_site("alpha")
    with sqlite_hub.as_admin() as c:
        resp = c.get(
            "/api/v1/sites/alpha/capacity/history", params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        )
        assert resp.status_code == 400 and resp.json()["detail"] == "since is after until"
        assert c.get("/api/v1/sites/alpha/capacity/history", params={"hours": -1}).status_code == 422


def test_sweep_marks_silent_sites_unreachable(hub: Hub, tmp_path: Path) -> None:
    _, token = _online_site(hub, tmp_path, "alpha")
    with hub.http(token) as c:
        c.post("/api/v1/sites/alpha/heartbeat", json={**heartbeat_body(), "interval_s": 10})
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            assert mark_unreachable(s, hub.settings, now=utcnow() + timedelta(seconds=29)) == [], "2.9 intervals: still online"
        with transaction(engine) as s:
            assert mark_unreachable(s, hub.settings, now=utcnow() + timedelta(seconds=31)) == ["alpha"]
        with transaction(engine) as s:
            from sqlmodel import select

            assert s.exec(select(Site.reachability).where(Site.name == "alpha")).one() == "unreachable"
    finally:
        engine.dispose()
    with hub.as_admin() as c:
        summary = c.get("/api/v1/network/summary").json()
    assert summary["sites_by_reachability"] == {"unreachable": 1}
    assert summary["cpus_total"] == 0 and summary["gpus"] == {}, "an unreachable site lends nothing"
    with hub.http(token) as c:
        c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body())
    with hub.as_admin() as c:
        assert c.get("/api/v1/network/summary").json()["sites_by_reachability"] == {"online": 1}
