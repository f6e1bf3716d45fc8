"""The dashboard API: who may call it, and what each caller sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.helpers import Hub, heartbeat_body

VIEWS = ("overview", "capacity", "jobs", "data", "usage")


def test_only_people_signed_in_get_the_views(sqlite_hub: Hub, tmp_path: Path) -> None:
    for view in VIEWS:
        r = httpx.get(f"{sqlite_hub.url}/api/v1/dashboard/{view}")
        assert r.status_code == 401 and r.json()["error"] == "Unauthorized", view
    sqlite_hub.create_site("kek-cryo")
    agent = sqlite_hub.enroll_agent("kek-cryo", tmp_path / "a")
    with sqlite_hub.http(sqlite_hub.agent_token(agent)) as c:
        for view in VIEWS:
            r = c.get(f"/api/v1/dashboard/{view}")
            assert r.status_code == 403 and r.json()["error"] == "Forbidden", view


def test_views_are_filtered_to_the_caller(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("kek-cryo", institution="kek")
    agent = sqlite_hub.enroll_agent("kek-cryo", tmp_path / "a")
    with sqlite_hub.http(sqlite_hub.agent_token(agent)) as c:
        assert c.post("/api/v1/sites/kek-cryo/heartbeat", json=heartbeat_body()).status_code == 200
    osaka = sqlite_hub.account("researcher", institution="osaka-u")
    kek = sqlite_hub.account("researcher", institution="kek")
    job = {"kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}
    ids = {}
    for who, name in ((osaka, "osaka-job"), (kek, "kek-job")):
        with sqlite_hub.as_(who) as c:
            r = c.post("/api/v1/jobs", json={**job, "name": name})
            assert r.status_code == 201
            ids[name] = r.json()["id"]
    with sqlite_hub.as_(osaka) as c:
        jobs = c.get("/api/v1/dashboard/jobs").json()
        assert [j["name"] for j in jobs["jobs"]] == ["osaka-job"] and jobs["by_state"] == {"QUEUED": 1}
        assert "placed on kek-cryo" in jobs["jobs"][0]["why"]
        cap = c.get("/api/v1/dashboard/capacity", params={"hours": 1}).json()
        assert cap["points"] and cap["points"][-1]["cpus_total"] == 64 and cap["points"][-1]["gpus"]["a100"]["total"] == 8
        # What the points cover, for the chart's title (not the hour asked for).
        assert (cap["first"], cap["last"]) == (cap["points"][0]["t"], cap["points"][-1]["t"]) and cap["hours"] == 1
        assert cap["span_s"] < 600 and 0 <= cap["age_s"] <= 2 * cap["bucket_s"] + 30
        over = c.get("/api/v1/dashboard/overview").json()
        assert over["sites"][0]["name"] == "kek-cryo" and over["sites"][0]["capacity"]["cpus_total"] == 64
        other = c.get(f"/api/v1/dashboard/jobs/{ids['kek-job']}")
        assert other.status_code == 404 and other.json()["error"] == "NotFound", "another institution's job"
        mine = c.get(f"/api/v1/dashboard/jobs/{ids['osaka-job']}").json()
        assert mine["job"]["name"] == "osaka-job" and mine["timeline"][0]["site"] == "kek-cryo"
    with sqlite_hub.as_admin() as c:
        both = c.get("/api/v1/dashboard/jobs").json()
    assert sorted(j["name"] for j in both["jobs"]) == ["kek-job", "osaka-job"]


def test_the_page_is_served_with_a_strict_policy(sqlite_hub: Hub) -> None:
    r = httpx.get(f"{sqlite_hub.url}/dashboard/")
    assert r.status_code == 200 and '<script src="app.js"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    js = httpx.get(f"{sqlite_hub.url}/dashboard/app.js")
    assert js.status_code == 200 and "code_challenge_method" in js.text
    assert "http://" not in js.text and "https://" not in js.text, "nothing is loaded from elsewhere"


def _run_one(c: httpx.Client, site: str, hours: float) -> None:
    """Play the site's agent over HTTP: take the one job offered, report it ran for ``hours``."""
    [offer] = c.get(f"/api/v1/sites/{site}/assignments", params={"wait": 0}).json()["assignments"]
    aid = offer["attempt_id"]
    assert c.post(f"/api/v1/attempts/{aid}/claim").status_code == 200
    end = datetime.now(UTC)
    report = {"seq": 1, "state": "COMPLETE", "exit_code": 0, "started_at": (end - timedelta(hours=hours)).isoformat(),
              "ended_at": end.isoformat()}  # fmt: skip
    r = c.post(f"/api/v1/attempts/{aid}/reports", json=report)
    assert r.status_code == 200 and r.json()["job_state"] == "COMPLETE", r.text


def test_own_use_is_neither_lent_nor_borrowed(sqlite_hub: Hub, tmp_path: Path) -> None:
    agents = {}
    for site, inst in (("kek-cryo", "kek"), ("osaka-gpu", "osaka-u")):
        sqlite_hub.create_site(site, institution=inst)
        agents[site] = sqlite_hub.http(sqlite_hub.agent_token(sqlite_hub.enroll_agent(site, tmp_path / site)))
        assert agents[site].post(f"/api/v1/sites/{site}/heartbeat", json=heartbeat_body()).status_code == 200
    kek = sqlite_hub.account("researcher", institution="kek")
    job = {"kind": "generic.command", "command": ["true"], "resources": {"cpus": 4, "gpus": 1, "gpu_model": "a100"}}
    # kek's researcher runs 2 h at kek's own site, then 1 h at Osaka's.
    for site, hours in (("kek-cryo", 2.0), ("osaka-gpu", 1.0)):
        with sqlite_hub.as_(kek) as c:
            assert (
                c.post("/api/v1/jobs", json={**job, "name": f"at-{site}", "placement": {"allowed_sites": [site]}}).status_code
                == 201
            )
        _run_one(agents[site], site, hours)
    for a in agents.values():
        a.close()

    with sqlite_hub.as_admin() as c:
        rows = {r["institution"]: r for r in c.get("/api/v1/dashboard/usage").json()["institutions"]}
        report = c.get("/api/v1/usage").json()
    assert rows["kek"]["own_cpu_hours"] == 8.0 and rows["kek"]["own_gpu_hours"] == 2.0
    assert rows["kek"]["borrowed_cpu_hours"] == 4.0 and rows["kek"]["borrowed_gpu_hours"] == 1.0
    assert rows["kek"]["lent_cpu_hours"] == 0, "kek's own job at kek's own site is not lending"
    assert rows["osaka-u"]["lent_cpu_hours"] == 4.0 and rows["osaka-u"]["borrowed_cpu_hours"] == 0
    assert rows["osaka-u"]["own_cpu_hours"] == 0
    assert {b["institution"]: b for b in report["balance_by_institution"]} == rows, "the CLI's report says the same"
    with sqlite_hub.as_(kek) as c:
        mine = c.get("/api/v1/dashboard/usage").json()["institutions"]
    assert [r["institution"] for r in mine] == ["kek"], "a researcher sees their own institution only"


def test_the_network_chart_does_not_dip_when_a_site_misses_a_bucket(sqlite_hub: Hub) -> None:
    """A late heartbeat leaves a site without a sample in one bucket; the network's sum carries
    its previous bucket forward (up to two buckets) instead of dropping its capacity to 0."""
    from sqlmodel import select

    from hub.capacity.history_buffer import Fold, bucket_start, write_folds
    from hub.db import make_engine, transaction
    from hub.sites.models import Site
    from shared.schemas.capacity import CapacityTotals, GpuCount

    sqlite_hub.create_site("big")
    sqlite_hub.create_site("small")
    step = sqlite_hub.settings.history_bucket_s
    t0 = bucket_start(datetime.now(UTC) - timedelta(hours=2), step)
    big = CapacityTotals(cpus_total=2000, cpus_free=1500, gpus={"a100": GpuCount(total=32, free=8)})
    small = CapacityTotals(cpus_total=100, cpus_free=100)
    engine = make_engine(sqlite_hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            ids = {site.name: site.id for site in s.exec(select(Site))}
            folds = {}
            for name, buckets, totals in (("small", range(6), small), ("big", (0, 2), big)):
                for k in buckets:  # small reports throughout; big only in buckets 0 and 2
                    fold = folds[(ids[name], t0 + timedelta(seconds=k * step))] = Fold()
                    fold.add(totals)
            write_folds(s, folds)
    finally:
        engine.dispose()
    with sqlite_hub.as_admin() as c:
        cap = c.get("/api/v1/dashboard/capacity", params={"hours": 3}).json()
    totals = [(p["cpus_total"], p["gpus"].get("a100", {}).get("total", 0)) for p in cap["points"]]
    assert totals == [(2100, 32)] * 5 + [(100, 0)], "carried over a missed bucket; gone after three"
    assert cap["span_s"] == 5 * step and cap["first"] == cap["points"][0]["t"]
    with sqlite_hub.as_admin() as c:
        one = c.get("/api/v1/dashboard/capacity", params={"hours": 3, "site": "big"}).json()
    assert [p["cpus_total"] for p in one["points"]] == [2000, 2000], "one site's chart shows only its own buckets"
