"""The network summary and dashboard overview: totals summed in the database, sites in pages,
and ETags so an unchanged view is answered 304 (keyed by what the caller may see)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from hub.capacity.service import mark_unreachable
from hub.db import make_engine, transaction
from hub.network.queries import site_counts, usable_capacity
from hub.network.service import KeptTotals
from hub.types import utcnow
from tests.helpers import Hub, heartbeat_body

#: (name, institution, heartbeat: cpus total, idle, gpu) — sites with an agent that reports.
REPORTING = [
    ("alpha", "kek", (64, 48, ("a100", 8, 5))),
    ("bravo", "kek", (128, 100, ("h100", 16, 16))),
    ("charlie", "osaka-u", (32, 8, ("a100", 4, 1))),
    ("delta", "riken", (256, 200, None)),
]
PENDING = [("echo", "osaka-u"), ("foxtrot", "riken"), ("golf", "kek")]


def _network(hub: Hub, tmp_path: Path) -> dict[str, str]:
    """Four active sites reporting capacity, three pending ones; the agents' tokens by site."""
    tokens = {}
    for name, inst, (cpus, idle, gpus) in REPORTING:
        hub.create_site(name, institution=inst)
        tokens[name] = hub.agent_token(hub.enroll_agent(name, tmp_path / name))
        with hub.http(tokens[name]) as c:
            assert c.post(f"/api/v1/sites/{name}/heartbeat", json=heartbeat_body(cpus, idle, gpus)).status_code == 200
    for name, inst in PENDING:
        hub.create_site(name, institution=inst)
    return tokens


def _all_pages(c: httpx.Client, path: str, size: int, **filters: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        r = c.get(path, params={**filters, "limit": size, "offset": len(rows)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["sites"]) <= size, "a page never holds more than the limit"
        rows += body["sites"]
        if len(body["sites"]) < size:
            return rows, body


def test_totals_are_the_sum_of_the_pages(hub: Hub, tmp_path: Path) -> None:
    _network(hub, tmp_path)
    researcher = hub.account("researcher", institution="kek")
    with hub.as_(researcher) as c:
        for path in ("/api/v1/network/summary", "/api/v1/dashboard/overview"):
            summary = c.get(path, params={"limit": 0}).json()
            assert summary["sites"] == [] and summary["sites_total"] == summary["sites_matching"] == 7, path
            rows, last = _all_pages(c, path, 2)
            assert [r["name"] for r in rows] == sorted(n for n, *_ in REPORTING + PENDING), "every site once, by name"
            assert last["sites_matching"] == 7 and last["offset"] == 6 and last["limit"] == 2
            usable = [r for r in rows if r["status"] == "active" and r["reachability"] == "online"]
            assert summary["cpus_total"] == sum(r["capacity"]["cpus_total"] for r in usable) == 480
            assert summary["cpus_free"] == sum(r["capacity"]["cpus_free"] for r in usable) == 356
            gpus: dict[str, dict[str, int]] = {}
            for r in usable:
                for model, g in r["capacity"]["gpus"].items():
                    gpus.setdefault(model, {"total": 0, "free": 0})
                    gpus[model] = {k: gpus[model][k] + g[k] for k in ("total", "free")}
            assert summary["gpus"] == gpus == {"a100": {"total": 12, "free": 6}, "h100": {"total": 16, "free": 16}}
            assert summary["sites_by_status"] == {"active": 4, "pending": 3}
            assert summary["sites_by_reachability"] == {"online": 4, "unknown": 3}
            assert sum(summary["sites_by_status"].values()) == len(rows)


def test_filters_choose_the_rows_not_the_totals(hub: Hub, tmp_path: Path) -> None:
    _network(hub, tmp_path)
    with hub.as_admin() as c:
        everything = c.get("/api/v1/network/summary", params={"limit": 0}).json()
        cases = {
            (("institution", "kek"),): ["alpha", "bravo", "golf"],
            (("status", "pending"),): ["echo", "foxtrot", "golf"],
            (("reachability", "online"), ("institution", "riken")): ["delta"],
            (("q", "RAV"),): ["bravo"],
            (("institution", "nowhere"),): [],
        }
        for filters, names in cases.items():
            rows, last = _all_pages(c, "/api/v1/network/summary", 2, **dict(filters))
            assert [r["name"] for r in rows] == names, filters
            assert last["sites_matching"] == len(names), filters
            assert {k: last[k] for k in ("cpus_total", "cpus_free", "gpus", "sites_total")} == {
                k: everything[k] for k in ("cpus_total", "cpus_free", "gpus", "sites_total")
            }, "totals are network-wide whatever the filter"
            counted = c.get("/api/v1/network/summary", params={**dict(filters), "limit": 0}).json()
            assert counted["sites"] == [] and counted["sites_matching"] == len(names), "limit=0 still counts the matches"


def test_pages_are_bounded(sqlite_hub: Hub) -> None:
    with sqlite_hub.as_admin() as c:
        assert len(c.get("/api/v1/network/summary").json()["sites"]) == 0
        for params, field in (({"limit": 501}, "limit"), ({"limit": -1}, "limit"), ({"offset": -1}, "offset"),
                              ({"status": "gone"}, "status"), ({"reachability": "maybe"}, "reachability")):  # fmt: skip
            for path in ("/api/v1/network/summary", "/api/v1/dashboard/overview"):
                r = c.get(path, params=params)
                assert r.status_code == 422, (path, params, r.text)
                assert r.json()["error"] == "ValidationError" and field in r.json()["detail"], r.json()
        assert c.get("/api/v1/network/summary", params={"limit": 500}).status_code == 200


def test_summary_etag_changes_with_the_network(hub: Hub, tmp_path: Path) -> None:
    tokens = _network(hub, tmp_path)
    researcher = hub.account("researcher", institution="kek")
    with hub.as_(researcher) as c:
        for path in ("/api/v1/network/summary", "/api/v1/dashboard/overview"):
            first = c.get(path)
            tag = first.headers["etag"]
            assert first.status_code == 200 and tag.startswith('W/"') and "no-cache" in first.headers["cache-control"]
            again = c.get(path, headers={"If-None-Match": tag})
            assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag, path
            assert c.get(path, headers={"If-None-Match": f'"other", {tag}'}).status_code == 304, "any listed tag"
            assert c.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
            other_page = c.get(path, params={"limit": 1}, headers={"If-None-Match": tag})
            assert other_page.status_code == 200 and other_page.headers["etag"] != tag, "the query is part of the tag"
    tags = {}

    def changed(what: str) -> None:
        with hub.as_(researcher) as c:
            for path in ("/api/v1/network/summary", "/api/v1/dashboard/overview"):
                r = c.get(path, headers={"If-None-Match": tags.get(path, '"none"')})
                assert r.status_code == 200, f"{path} after {what}: {r.status_code}"
                assert r.headers["etag"] != tags.get(path), what
                tags[path] = r.headers["etag"]
                assert c.get(path, headers={"If-None-Match": tags[path]}).status_code == 304, what

    changed("the first look")
    with hub.http(tokens["alpha"]) as c:  # a heartbeat with the same capacity still moves the heartbeat age
        assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 48, ("a100", 8, 5))).status_code == 200
    changed("a heartbeat")
    with hub.as_admin() as c:
        assert c.post("/api/v1/sites/charlie/suspend").status_code == 200
    changed("a suspension")
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            assert "delta" in mark_unreachable(s, hub.settings, now=utcnow() + timedelta(hours=1))
    finally:
        engine.dispose()
    changed("the sweep marking sites unreachable")
    hub.create_site("hotel")
    changed("a new site")


def test_a_304_never_crosses_callers_who_see_differently(sqlite_hub: Hub, tmp_path: Path) -> None:
    hub = sqlite_hub
    hub.create_site("kek-cryo", institution="kek")
    agent = hub.agent_token(hub.enroll_agent("kek-cryo", tmp_path / "a"))
    with hub.http(agent) as c:
        assert c.post("/api/v1/sites/kek-cryo/heartbeat", json=heartbeat_body()).status_code == 200
    kek, osaka = hub.account("researcher", institution="kek"), hub.account("researcher", institution="osaka-u")
    job = {"kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}
    with hub.as_(kek) as c:
        assert c.post("/api/v1/jobs", json={**job, "name": "kek-job"}).status_code == 201
    callers = {"kek": kek, "osaka": osaka, "admin": hub.admin}
    for path in ("/api/v1/dashboard/jobs", "/api/v1/dashboard/overview", "/api/v1/dashboard/capacity"):
        tags = {}
        for name, who in callers.items():
            with hub.as_(who) as c:
                r = c.get(path)
                assert r.status_code == 200
                tags[name] = r.headers["etag"]
                assert c.get(path, headers={"If-None-Match": tags[name]}).status_code == 304, (path, name)
        assert len(set(tags.values())) == 3, f"{path}: each caller has a tag of their own"
        for name, who in callers.items():
            with hub.as_(who) as c:
                for other, tag in tags.items():
                    if other != name:
                        r = c.get(path, headers={"If-None-Match": tag})
                        assert r.status_code == 200 and r.headers["etag"] == tags[name], (path, name, other)
    # The tag is checked only after the caller is: no token, no 304.
    r = httpx.get(f"{hub.url}/api/v1/dashboard/jobs", headers={"If-None-Match": tags["kek"]})
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"


def test_jobs_view_etag_moves_with_jobs(sqlite_hub: Hub, tmp_path: Path) -> None:
    hub = sqlite_hub
    hub.create_site("kek-cryo", institution="kek")
    agent = hub.agent_token(hub.enroll_agent("kek-cryo", tmp_path / "a"))
    with hub.http(agent) as c:
        assert c.post("/api/v1/sites/kek-cryo/heartbeat", json=heartbeat_body()).status_code == 200
    kek = hub.account("researcher", institution="kek")
    job = {"kind": "generic.command", "command": ["true"], "resources": {"cpus": 1}}
    with hub.as_(kek) as c:
        tag = c.get("/api/v1/dashboard/jobs").headers["etag"]
        assert c.get("/api/v1/dashboard/jobs", headers={"If-None-Match": tag}).status_code == 304
        job_id = c.post("/api/v1/jobs", json={**job, "name": "kek-job"}).json()["id"]
        r = c.get("/api/v1/dashboard/jobs", headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["etag"] != tag and r.json()["total"] == 1, "a new job"
        tag = r.headers["etag"]
    with hub.http(agent) as c:  # the agent takes the offer: only the attempt changes
        [offer] = c.get("/api/v1/sites/kek-cryo/assignments", params={"wait": 0}).json()["assignments"]
        assert c.post(f"/api/v1/attempts/{offer['attempt_id']}/claim").status_code == 200
    with hub.as_(kek) as c:
        r = c.get("/api/v1/dashboard/jobs", headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["etag"] != tag, "a claimed attempt"
        assert [j["id"] for j in r.json()["jobs"]] == [job_id]


def test_kept_totals_follow_every_change(hub: Hub, tmp_path: Path) -> None:
    """A hub process keeps the totals for the version of the sites they were summed at
    (``KeptTotals``): summed again after every change that moves them, not before."""
    tokens = _network(hub, tmp_path)
    kept = KeptTotals()
    engine = make_engine(hub.settings.resolved_database_url)

    def check(what: str, sums: int) -> None:
        with transaction(engine, write=False) as s:
            fresh = usable_capacity(s)
            assert kept.get(s, site_counts(s).version) == fresh, what
        assert kept.sums == sums, what
        with hub.as_admin() as c:  # and the hub's own, behind the summary
            body = c.get("/api/v1/network/summary", params={"limit": 0}).json()
        assert (body["cpus_total"], body["cpus_free"]) == fresh[:2], what
        assert body["gpus"] == {m: g.model_dump() for m, g in fresh[2].items()}, what

    try:
        check("the first look", 1)
        check("nothing changed", 1)
        with hub.http(tokens["alpha"]) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(64, 10, ("a100", 8, 1))).status_code == 200
        check("a capacity report", 2)
        with hub.as_admin() as c:
            assert c.post("/api/v1/sites/bravo/suspend").status_code == 200
        check("a suspension", 3)
        with transaction(engine) as s:
            assert "delta" in mark_unreachable(s, hub.settings, now=utcnow() + timedelta(hours=1))
        check("the sweep marking sites unreachable", 4)
    finally:
        engine.dispose()


def _partition(name: str, cpus: int, idle: int, *gpus: tuple[str, int, int]) -> dict[str, Any]:
    part = heartbeat_body(cpus, idle, None)["partitions"][0]
    return {**part, "name": name, "gpus": [{"model": m, "total": t, "free": f} for m, t, f in gpus]}


def _reported(bodies: dict[str, dict[str, Any]], usable: set[str]) -> dict[str, Any]:
    """What the agents of the ``usable`` sites reported, added up here from their heartbeats."""
    cpus_total = cpus_free = 0
    gpus: dict[str, dict[str, int]] = {}
    for name in usable:
        for p in bodies[name]["partitions"]:
            cpus_total, cpus_free = cpus_total + p["cpus_total"], cpus_free + p["cpus_idle"]
            for g in p["gpus"]:
                counts = gpus.setdefault(g["model"], {"total": 0, "free": 0})
                counts["total"] += g["total"]
                counts["free"] += g["free"]
    return {"cpus_total": cpus_total, "cpus_free": cpus_free, "gpus": dict(sorted(gpus.items()))}


def test_summary_totals_are_what_the_usable_sites_reported(hub: Hub, tmp_path: Path) -> None:
    """The summary adds up the counts each heartbeat stores beside its snapshot: after
    heartbeats (sites with no GPU, one model, several models, a model with none, a site
    changing between one model and several), a site deleted, a site gone silent and marked
    unreachable, the totals are those the agents of the active, online sites reported."""
    several = [_partition("gpu", 32, 8, ("a100", 4, 1), ("l40s", 2, 2)), _partition("big", 96, 90, ("h100", 8, 3))]
    bodies = {
        "alpha": heartbeat_body(64, 48, ("a100", 8, 5)),
        "bravo": heartbeat_body(128, 100, ("h100", 16, 16)),
        "charlie": heartbeat_body(partitions=several),
        "delta": heartbeat_body(256, 200, None),
        "echo": heartbeat_body(16, 16, ("t4", 0, 0)),
    }
    tokens: dict[str, str] = {}
    for name in bodies:
        hub.create_site(name)
        tokens[name] = hub.agent_token(hub.enroll_agent(name, tmp_path / name))
    usable = set(bodies)

    def beat(name: str, body: dict[str, Any]) -> None:
        bodies[name] = body
        with hub.http(tokens[name]) as c:
            assert c.post(f"/api/v1/sites/{name}/heartbeat", json=body).status_code == 200

    def check(what: str) -> None:
        with hub.as_admin() as c:
            body = c.get("/api/v1/network/summary", params={"limit": 0}).json()
        assert {k: body[k] for k in ("cpus_total", "cpus_free", "gpus")} == _reported(bodies, usable), what

    for name, body in list(bodies.items()):
        beat(name, body)
    check("every site reported once")
    beat("alpha", heartbeat_body(partitions=[_partition("gpu", 64, 10, ("a100", 8, 1), ("v100", 4, 4))]))
    beat("charlie", heartbeat_body(40, 40, ("l40s", 2, 0)))
    check("one site from one model to several, another the other way")
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            s.execute(text("DELETE FROM sites WHERE name = 'bravo'"))
        usable.discard("bravo")
        check("a site deleted")
        with transaction(engine) as s:
            past = {"past": utcnow() - timedelta(hours=1)}
            s.execute(text("UPDATE sites SET reachable_until = :past WHERE name = 'delta'"), past)
            mark_unreachable(s, hub.settings)
        usable.discard("delta")
        check("a site gone silent, marked unreachable")
        beat("delta", heartbeat_body(8, 4, ("a100", 2, 2)))
        usable.add("delta")
        check("back online with a heartbeat")
    finally:
        engine.dispose()
