"""Changing a dataset's visibility after registration (the owner site's admin or a network
admin; anyone else is refused with an error body), and registering the same directory
twice being refused with the existing id instead of making a silent duplicate."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register


def test_who_may_change_visibility(hub: Hub, tmp_path: Path) -> None:
    hub.create_site("alpha", institution="kek")
    hub.create_site("beta", institution="embl")
    agent = hub.enroll_agent("alpha", tmp_path / "a")
    body = dataset_body(make_dataset_dir(tmp_path / "d"))
    body.pop("visibility", None)
    ds = register(hub, agent, body).json()
    assert ds["visibility"] == "private", "private unless the site says otherwise"
    outsider = hub.account("researcher", institution="embl")
    with hub.as_(outsider) as c:
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "network"})
        assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": f"no dataset {ds['id']!r}"}
    with hub.as_(hub.account("researcher", institution="kek")) as c:  # sees it, may not change it
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "public"})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden" and "alpha" in r.json()["detail"], r.text
    with hub.as_(hub.account("site_admin", site="beta")) as c:  # another institution's admin: not even shown
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "public"})
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
    with hub.http(hub.agent_token(agent)) as c:
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "network"})
        assert r.status_code == 403 and "alpha" in r.json()["detail"]
    with hub.as_(hub.account("site_admin", site="alpha")) as c:
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "network"})
        assert r.status_code == 200 and r.json()["visibility"] == "network", r.text
        bad = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "institution"})
        assert bad.status_code == 422 and bad.json()["error"] == "ValidationError"
    with hub.as_(outsider) as c:
        assert c.get(f"/api/v1/datasets/{ds['id']}").json()["visibility"] == "network", "now seen across the network"
    with hub.as_admin() as c:
        r = c.patch(f"/api/v1/datasets/{ds['id']}", json={"visibility": "private"})
        assert r.status_code == 200 and r.json()["visibility"] == "private"
    with hub.as_(outsider) as c:
        assert c.get(f"/api/v1/datasets/{ds['id']}").status_code == 404


def test_registering_a_directory_again_is_refused_with_the_existing_id(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha", institution="kek")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    root = make_dataset_dir(tmp_path / "d")
    first = register(sqlite_hub, agent, dataset_body(root, visibility="private")).json()
    again = register(sqlite_hub, agent, dataset_body(root, visibility="network", title="apoferritin, shared"))
    assert again.status_code == 409 and again.json()["error"] == "Conflict"
    assert first["id"] in again.json()["detail"] and "set-visibility" in again.json()["detail"]
    with sqlite_hub.as_admin() as c:
        assert c.get("/api/v1/datasets").json()["total"] == 1, "no duplicate in the catalog"
    other = register(sqlite_hub, agent, dataset_body(make_dataset_dir(tmp_path / "e")))
    assert other.status_code == 201, "another directory is another dataset"
