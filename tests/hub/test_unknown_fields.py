"""No silent typos: every body a person writes refuses an unknown field with a 422 that
names it and the field probably meant; wire payloads agents write stay tolerant of a newer
agent's additions (docs/architecture.md, "Strict inputs, tolerant wire").

One hub serves the whole module: each test only sends bodies, and validation does not
depend on the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from site_agent.datasets import describe
from tests.helpers import Hub, heartbeat_body, running_hub, site_body


@pytest.fixture(scope="module")
def shub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("strict")
    with running_hub(f"sqlite:///{tmp / 'hub.db'}", tmp / "data") as h:
        yield h


def refused(resp: httpx.Response, *problems: str) -> None:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "ValidationError", body
    for problem in problems:
        assert problem in body["detail"], body["detail"]


JOB = {"name": "typo", "kind": "generic.command", "command": ["true"]}


def test_job_spec_typos_are_refused_with_the_field_meant(shub: Hub) -> None:
    shub.create_site()
    researcher = shub.account("researcher", institution="kek")
    with shub.as_(researcher) as c:
        refused(
            c.post("/api/v1/jobs", json={**JOB, "resources": {"cpu": 4}}), "resources.cpu: unknown field; did you mean 'cpus'?"
        )
        refused(
            c.post("/api/v1/jobs", json={**JOB, "placment": {"countries": ["JP"]}}),
            "placment: unknown field; did you mean 'placement'?",
        )
        refused(c.post("/api/v1/jobs", json={**JOB, "cpus": 4}), "cpus: unknown field; did you mean 'resources.cpus'?")
        refused(
            c.post(
                "/api/v1/jobs",
                json={
                    **JOB,
                    "inputs": [{"dataset": "ds-1", "path": ["a.mrc"]}],
                    "software": [{"name": "relion", "versoin": ">=5"}],
                },
            ),
            "inputs.0.path: unknown field; did you mean 'paths'?",
            "software.0.versoin: unknown field; did you mean 'version'?",
        )
        assert c.get("/api/v1/jobs").json()["total"] == 0, "no job was made from a spec with a typo"
        ok = c.post("/api/v1/jobs", json={**JOB, "resources": {"cpus": 4}})
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["resources"]["cpus"] == 4


def test_site_create_and_edit_refuse_typos(shub: Hub) -> None:
    body = site_body("typo-site")
    body["partitions"][0]["gpus_per_nodes"] = 4
    body["contact"] = body.pop("contacts")
    with shub.as_admin() as c:
        refused(
            c.post("/api/v1/sites", json=body),
            "partitions.0.gpus_per_nodes: unknown field; did you mean 'gpus_per_node'?",
            "contact: unknown field; did you mean 'contacts'?",
        )
        assert c.get("/api/v1/sites/typo-site").status_code == 404
        site = shub.create_site()
        refused(
            c.patch(f"/api/v1/sites/{site['name']}", json={"locaton": "Kyoto"}),
            "locaton: unknown field; did you mean 'location'?",
        )
        assert c.get(f"/api/v1/sites/{site['name']}").json()["location"] == "Tsukuba"


def test_lending_and_sharing_policies_refuse_typos(shub: Hub) -> None:
    site = shub.create_site()["name"]
    with shub.as_admin() as c:
        refused(
            c.put(f"/api/v1/sites/{site}/policy", json={"allowed_institution": ["kek"], "cpu_share": 0.5}),
            "allowed_institution: unknown field; did you mean 'allowed_institutions'?",
        )
        policy = c.get(f"/api/v1/sites/{site}/policy").json()
        assert policy["allowed_institutions"] is None and policy["cpu_share"] == 1.0, "nothing of the refused policy applies"
        refused(
            c.put(
                f"/api/v1/sites/{site}/policy",
                json={"windows": [{"days": ["mon"], "start": "19:00", "end": "07:00", "ends": "x"}]},
            ),
            "windows.0.ends: unknown field; did you mean 'end'?",
        )
        refused(
            c.put(f"/api/v1/sites/{site}/share-policy", json={"auto_approve_institution": ["kek"]}),
            "auto_approve_institution: unknown field; did you mean 'auto_approve_institutions'?",
        )
        assert c.get(f"/api/v1/sites/{site}/share-policy").json()["auto_approve_institutions"] == []


def test_dataset_metadata_refuses_typos(shub: Hub, tmp_path: Path) -> None:
    site = shub.create_site()["name"]
    agent = shub.enroll_agent(site, tmp_path / "agent")
    data = tmp_path / "data"
    data.mkdir()
    (data / "movie.tiff").write_bytes(b"not really a movie")
    body: dict[str, Any] = describe(data, {"title": "apoferritin", "sample": {"name": "apoferritin"}}).model_dump(mode="json")
    body["sample"]["organsim"] = "Mus musculus"
    body["acquisition"]["pixel_size"] = 0.83
    body["emdb"] = ["EMD-1234"]
    with shub.http(shub.agent_token(agent)) as c:
        refused(
            c.post("/api/v1/datasets", json=body),
            "sample.organsim: unknown field; did you mean 'organism'?",
            "acquisition.pixel_size: unknown field; did you mean 'pixel_size_a'?",
            "emdb: unknown field; did you mean 'cross_references.emdb'?",
        )
        body["sample"].pop("organsim")
        body["acquisition"].pop("pixel_size")
        body.pop("emdb")
        assert c.post("/api/v1/datasets", json=body).status_code == 201


def test_share_requests_decisions_and_accounts_refuse_typos(shub: Hub) -> None:
    researcher = shub.account("researcher", institution="kek")
    with shub.as_(researcher) as c:
        refused(
            c.post("/api/v1/datasets/ds-0000/share-requests", json={"dest_site": "x", "purpose": "refinement", "lifetime": 30}),
            "lifetime: unknown field; did you mean 'lifetime_days'?",
        )
    with shub.as_admin() as c:
        refused(
            c.post("/api/v1/share-requests/sr-0000/approve", json={"reson": "ok"}), "reson: unknown field; did you mean 'reason'?"
        )
        refused(
            c.post("/api/v1/accounts", json={"name": "Dr Typo", "role": "researcher", "institution": "kek", "usename": "typo"}),
            "usename: unknown field; did you mean 'username'?",
        )
        assert all(a["name"] != "Dr Typo" for a in c.get("/api/v1/accounts").json()), "no account was made"
        site = shub.create_site()["name"]
        refused(c.post(f"/api/v1/sites/{site}/enrollment-codes", json={"ttl": 600}), "ttl: unknown field; did you mean 'ttl_s'?")
    with shub.http() as c:
        refused(
            c.post("/api/v1/accounts/setup", json={"username": "someone", "code": "x", "passwd": "secret"}),
            "passwd: unknown field; did you mean 'password'?",
        )


def test_agent_payloads_stay_tolerant_of_newer_agents(shub: Hub, tmp_path: Path) -> None:
    """A newer agent may add fields to its heartbeat; an older hub reads what it knows."""
    site = shub.create_site()["name"]
    agent = shub.enroll_agent(site, tmp_path / "agent")
    body = heartbeat_body(cpus_total=64, cpus_idle=48, gpu_power_w=300)
    body["partitions"][0]["cpu_load"] = 3.5
    with shub.http(shub.agent_token(agent)) as c:
        resp = c.post(f"/api/v1/sites/{site}/heartbeat", json=body)
        assert resp.status_code == 200, resp.text
        assert c.get(f"/api/v1/sites/{site}/capacity").json()["totals"]["cpus_free"] == 48
