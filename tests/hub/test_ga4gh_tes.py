"""GA4GH TES 1.1 on a real hub (SQLite and PostgreSQL): views, filters, paging, refusals,
authentication and tenant walls. Tasks stay queued here (no agent runs); tests/test_ga4gh_e2e.py
runs them on real agents with py-tes. Every response is validated against the official
OpenAPI description (tests/data/ga4gh)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests import ga4gh_schemas
from tests.helpers import Account, Hub

IMAGE = "python:3.11-slim"
BASE = "/ga4gh/tes/v1"


def task(name: str = "t", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "inputs": [{"path": "/data/in.txt", "content": "hello\n"}],
        "executors": [{"image": IMAGE, "command": ["cat", "/data/in.txt"]}],
        "resources": {"cpu_cores": 1, "ram_gb": 1},
    }
    body.update(kw)
    return body


@pytest.fixture
def net(hub: Hub) -> dict[str, Account]:
    hub.create_site("tes-a", institution="kek", software=[{"name": f"image:{IMAGE}", "version": "host"}])
    hub.create_site("tes-b", institution="osaka", country="JP", software=[])
    return {
        "alice": hub.account("researcher", institution="kek"),
        "bob": hub.account("researcher", institution="kek"),
        "eve": hub.account("researcher", institution="osaka"),
    }


def create(hub: Hub, who: Account, body: dict[str, Any]) -> str:
    with hub.as_(who) as c:
        r = c.post(f"{BASE}/tasks", json=body)
    assert r.status_code == 200, r.text
    ga4gh_schemas.tes("tesCreateTaskResponse", r.json())
    return str(r.json()["id"])


def test_service_info_is_served_where_clients_look(hub: Hub) -> None:
    for prefix in (BASE, "/v1", ""):
        r = httpx.get(f"{hub.url}{prefix}/service-info")
        assert r.status_code == 200, r.text
        info = r.json()
        ga4gh_schemas.tes("tesServiceInfo", info)
        assert info["type"]["artifact"] == "tes"
        assert {"gpus", "gpu_model", "walltime_s", "kind"} <= set(info["tesResources_backend_parameters"])


def test_views_filters_and_paging(hub: Hub, net: dict[str, Account]) -> None:
    alice = net["alice"]
    ids = [
        create(hub, alice, task("align-1", tags={"project": "p1", "step": "align"})),
        create(hub, alice, task("align-2", tags={"project": "p2"})),
        create(hub, alice, task("refine-1", tags={"project": "p1"})),
    ]
    with hub.as_(alice) as c:
        minimal = c.get(f"{BASE}/tasks/{ids[0]}").json()
        basic = c.get(f"{BASE}/tasks/{ids[0]}", params={"view": "BASIC"}).json()
        full = c.get(f"{BASE}/tasks/{ids[0]}", params={"view": "FULL"}).json()
        for t, view in ((minimal, "MINIMAL"), (basic, "BASIC"), (full, "FULL")):
            ga4gh_schemas.tes_task(t, view)
        assert set(minimal) == {"id", "state"} and minimal["state"] == "QUEUED"
        assert basic["name"] == "align-1" and basic["tags"] == {"project": "p1", "step": "align"}
        assert "content" not in basic["inputs"][0] and full["inputs"][0]["content"] == "hello\n"
        assert all("system_logs" not in log for log in basic["logs"])
        assert any("placement" in line for line in full["logs"][-1]["system_logs"]), full["logs"]

        def listed(**params: Any) -> list[str]:
            r = c.get(f"{BASE}/tasks", params=params)
            assert r.status_code == 200, r.text
            ga4gh_schemas.tes_list(r.json(), params.get("view", "MINIMAL"))
            return [t["id"] for t in r.json()["tasks"]]

        assert listed() == ids[::-1]
        assert listed(name_prefix="align") == [ids[1], ids[0]]
        assert listed(name_prefix="align_") == []  # '_' is a character, not a LIKE wildcard
        assert listed(tag_key="project", tag_value="p1") == [ids[2], ids[0]]
        assert listed(tag_key="step") == [ids[0]]  # a key without a value matches any value
        assert listed(tag_key=["project", "step"], tag_value=["p1", "align"]) == [ids[0]]
        assert listed(state="QUEUED") == ids[::-1] and listed(state="RUNNING") == []
        page = c.get(f"{BASE}/tasks", params={"page_size": 2, "view": "MINIMAL"}).json()
        assert [t["id"] for t in page["tasks"]] == [ids[2], ids[1]]
        assert all(set(t) == {"id", "state"} for t in page["tasks"])
        rest = c.get(f"{BASE}/tasks", params={"page_size": 2, "page_token": page["next_page_token"]}).json()
        assert [t["id"] for t in rest["tasks"]] == [ids[0]] and "next_page_token" not in rest
        r = c.get(f"{BASE}/tasks", params={"page_token": "not-a-token"})
        assert r.status_code == 400 and r.json()["error"] == "BadRequest", r.text


def test_backend_parameters_strict_and_lenient(hub: Hub, net: dict[str, Account]) -> None:
    strict = {"cpu_cores": 1, "backend_parameters": {"walltime_s": "600", "colour": "blue"}, "backend_parameters_strict": True}
    with hub.as_(net["alice"]) as c:
        r = c.post(f"{BASE}/tasks", json=task(resources=strict))
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "BadRequest" and "colour" in r.json()["detail"]
        r = c.post(f"{BASE}/tasks", json=task(resources={"backend_parameters": {"walltime_s": "ten minutes"}}))
        assert r.status_code == 400 and "walltime_s" in r.json()["detail"], r.text
        lenient = create(hub, net["alice"], task(resources={**strict, "backend_parameters_strict": False}))
        full = c.get(f"{BASE}/tasks/{lenient}", params={"view": "FULL"}).json()
        assert any("colour" in line for line in full["logs"][-1]["system_logs"])
        job = c.get(f"/api/v1/jobs/{lenient}").json()  # the task is a cryomesh job
        assert job["spec"]["resources"]["walltime_s"] == 600 and job["kind"] == "generic.command"


def test_a_task_no_site_can_run_is_refused_with_each_sites_verdict(hub: Hub, net: dict[str, Account]) -> None:
    body = task(executors=[{"image": "ubuntu:24.04", "command": ["true"]}])
    with hub.as_(net["alice"]) as c:
        r = c.post(f"{BASE}/tasks", json=body)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "tes-a: does not offer image:ubuntu:24.04" in detail and "tes-b:" in detail, detail


def test_paths_that_escape_are_refused(hub: Hub, net: dict[str, Account]) -> None:
    with hub.as_(net["alice"]) as c:
        for bad in (
            task(inputs=[{"path": "/data/../../etc/passwd", "content": "x"}]),
            task(inputs=[{"path": "relative.txt", "content": "x"}]),
            task(outputs=[{"path": "/out/x", "url": "file:///tmp/x", "colour": 1}]),
        ):
            r = c.post(f"{BASE}/tasks", json=bad)
            assert r.status_code == 422 and r.json()["error"] == "ValidationError", r.text
        r = c.post(f"{BASE}/tasks", json=task(inputs=[{"path": "/data/x", "url": "ftp://example.org/x"}]))
        assert r.status_code == 400 and "ftp://" in r.json()["detail"], r.text


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_basic_credentials_and_placeholders(hub: Hub, net: dict[str, Account]) -> None:
    alice = net["alice"]
    for headers in ({}, _basic("None", "None"), _basic(alice.client_id, "wrong"), {"Authorization": "Basic !!"}):
        r = httpx.get(f"{hub.url}{BASE}/tasks", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "Unauthorized" and "Basic" in r.headers["www-authenticate"]
    r = httpx.post(f"{hub.url}/v1/tasks", json=task("basic"), headers=_basic(alice.client_id, alice.client_secret))
    assert r.status_code == 200, r.text
    with hub.as_(alice) as c:
        assert c.get(f"/v1/tasks/{r.json()['id']}", params={"view": "BASIC"}).json()["name"] == "basic"


def test_tenant_walls(hub: Hub, net: dict[str, Account]) -> None:
    task_id = create(hub, net["alice"], task("mine"))
    with hub.as_(net["eve"]) as c:  # another institution: not even confirmed to exist
        for r in (c.get(f"{BASE}/tasks/{task_id}"), c.post(f"{BASE}/tasks/{task_id}:cancel")):
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
        assert c.get(f"{BASE}/tasks").json()["tasks"] == []
    with hub.as_(net["bob"]) as c:  # same institution, not the owner: may read, not cancel
        assert c.get(f"{BASE}/tasks/{task_id}").status_code == 200
        r = c.post(f"{BASE}/tasks/{task_id}:cancel")
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
    with hub.as_(net["alice"]) as c:
        r = c.post(f"{BASE}/tasks/{task_id}:cancel")
        assert r.status_code == 200 and r.json() == {}, r.text
        ga4gh_schemas.tes("tesCancelTaskResponse", r.json())
        assert c.get(f"{BASE}/tasks/{task_id}").json()["state"] == "CANCELED"
        job = c.post("/api/v1/jobs", json={"name": "plain", "kind": "generic.command", "command": ["true"]}).json()
        assert c.get(f"{BASE}/tasks/{job['id']}").status_code == 404  # a plain job is not a TES task
