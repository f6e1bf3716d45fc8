"""The facility registry: who may create, edit, suspend and read sites; filters; bad input."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Hub, site_body


def test_create_list_filter_show(hub: Hub) -> None:
    hub.create_site("kek-cryo", institution="kek", country="JP")
    hub.create_site(
        "embl-hd",
        institution="embl",
        country="DE",
        partitions=[
            {
                "name": "gpu",
                "node_count": 4,
                "cores_per_node": 48,
                "memory_gb_per_node": 384,
                "gpu_model": "h100",
                "gpus_per_node": 8,
            }
        ],
        software=[{"name": "cryosparc", "version": "4.6"}],
    )
    researcher = hub.account("researcher", institution="kek")
    with hub.as_(researcher) as c:
        everything = c.get("/api/v1/sites").json()
        assert everything["total"] == 2 and [s["name"] for s in everything["items"]] == ["embl-hd", "kek-cryo"]
        assert [s["name"] for s in c.get("/api/v1/sites", params={"country": "de"}).json()["items"]] == ["embl-hd"]
        assert [s["name"] for s in c.get("/api/v1/sites", params={"gpu_model": "A100"}).json()["items"]] == ["kek-cryo"]
        assert [s["name"] for s in c.get("/api/v1/sites", params={"software": "cryosparc"}).json()["items"]] == ["embl-hd"]
        assert [s["name"] for s in c.get("/api/v1/sites", params={"institution": "kek"}).json()["items"]] == ["kek-cryo"]
        assert c.get("/api/v1/sites", params={"status": "active"}).json()["total"] == 0
        page = c.get("/api/v1/sites", params={"limit": 1, "offset": 1}).json()
        assert page["total"] == 2 and [s["name"] for s in page["items"]] == ["kek-cryo"]
        site = c.get("/api/v1/sites/kek-cryo").json()
        gpu = next(p for p in site["partitions"] if p["name"] == "gpu")
        assert gpu["gpu_model"] == "a100" and gpu["gpus_per_node"] == 4 and site["software"][0]["cuda_arch"] == "8.0"
        assert site["status"] == "pending" and site["reachability"] == "unknown"
        missing = c.get("/api/v1/sites/nope")
        assert missing.status_code == 404 and missing.json() == {"error": "NotFound", "detail": "no site named 'nope'"}


def test_duplicate_site_is_409(hub: Hub) -> None:
    hub.create_site("dup")
    with hub.as_admin() as c:
        resp = c.post("/api/v1/sites", json=site_body("dup"))
    assert resp.status_code == 409 and resp.json()["detail"] == "a site named 'dup' already exists"


def test_malformed_site_is_422_and_nothing_is_stored(hub: Hub) -> None:
    bad_bodies = [
        site_body("Bad Name!"),
        site_body("x1", country="Japan"),
        site_body(
            "x2", partitions=[{"name": "gpu", "node_count": 1, "cores_per_node": 8, "memory_gb_per_node": 1, "gpus_per_node": 2}]
        ),
        site_body("x3", partitions=[{"name": "a", "node_count": 1, "cores_per_node": 8, "memory_gb_per_node": 1}] * 2),
        site_body("x4", contacts=[{"name": "n", "email": "not-an-email"}]),
    ]
    with hub.as_admin() as c:
        for body in bad_bodies:
            resp = c.post("/api/v1/sites", json=body)
            assert resp.status_code == 422, body
            assert resp.json()["error"] == "ValidationError" and resp.json()["detail"]
        assert c.get("/api/v1/sites").json()["total"] == 0
    with hub.as_admin() as c:
        resp = c.post("/api/v1/sites", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422


def test_only_network_admins_create_and_suspend(hub: Hub) -> None:
    site = hub.create_site()
    for who in (hub.account("researcher", institution="kek"), hub.account("site_admin", site=site["name"])):
        with hub.as_(who) as c:
            resp = c.post("/api/v1/sites", json=site_body("new-one"))
            assert resp.status_code == 403 and resp.json()["error"] == "Forbidden"
            assert c.post(f"/api/v1/sites/{site['name']}/suspend").status_code == 403
            assert c.post(f"/api/v1/sites/{site['name']}/activate").status_code == 403


def test_site_admin_edits_only_own_site(hub: Hub) -> None:
    mine, theirs = hub.create_site(), hub.create_site()
    admin = hub.account("site_admin", site=mine["name"])
    with hub.as_(admin) as c:
        resp = c.patch(
            f"/api/v1/sites/{mine['name']}",
            json={
                "description": "now with more GPUs",
                "software": [
                    {"name": "relion", "version": "5.0.1", "cuda_arch": "8.6"},
                    {"name": "motioncor2", "version": "1.6.4"},
                ],
            },
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["description"] == "now with more GPUs"
        assert [s["name"] for s in body["software"]] == ["motioncor2", "relion"], "a given list replaces the old one"
        assert body["partitions"] == mine["partitions"], "lists not given stay as they were"
        resp = c.patch(f"/api/v1/sites/{theirs['name']}", json={"description": "hijacked"})
        assert resp.status_code == 403
        assert resp.json()["detail"] == f"a site admin of {mine['name']} cannot edit site {theirs['name']}"
        resp = c.patch(f"/api/v1/sites/{mine['name']}", json={"institution": "elsewhere"})
        assert resp.status_code == 403
    with hub.as_admin() as c:
        assert c.get(f"/api/v1/sites/{theirs['name']}").json()["description"] == "test site"


def test_researcher_cannot_edit_a_site(hub: Hub) -> None:
    site = hub.create_site()
    with hub.as_(hub.account("researcher", institution=site["institution"])) as c:
        resp = c.patch(f"/api/v1/sites/{site['name']}", json={"description": "x"})
    assert resp.status_code == 403
    assert resp.json() == {"error": "Forbidden", "detail": "the token lacks the scope(s): sites:write"}


def test_agent_sees_only_its_own_site(sqlite_hub: Hub, tmp_path: Path) -> None:
    mine, theirs = sqlite_hub.create_site(), sqlite_hub.create_site()
    agent = sqlite_hub.enroll_agent(mine["name"], tmp_path / "a")
    with sqlite_hub.http(sqlite_hub.agent_token(agent)) as c:
        assert [s["name"] for s in c.get("/api/v1/sites").json()["items"]] == [mine["name"]]
        assert c.get(f"/api/v1/sites/{mine['name']}").status_code == 200
        resp = c.get(f"/api/v1/sites/{theirs['name']}")
        assert resp.status_code == 403 and "cannot read site" in resp.json()["detail"]
        assert c.patch(f"/api/v1/sites/{mine['name']}", json={"description": "x"}).status_code == 403
        assert c.get("/api/v1/network/summary").status_code == 403


def test_bad_patch_is_refused_and_changes_nothing(hub: Hub) -> None:
    site = hub.create_site()
    with hub.as_admin() as c:
        resp = c.patch(f"/api/v1/sites/{site['name']}", json={"display_name": None})
        assert resp.status_code == 400 and resp.json()["detail"] == "display_name cannot be cleared"
        resp = c.patch(f"/api/v1/sites/{site['name']}", json={"description": "changed", "partitions": [{"name": "BAD NAME"}]})
        assert resp.status_code == 422
        assert c.get(f"/api/v1/sites/{site['name']}").json()["description"] == "test site"
