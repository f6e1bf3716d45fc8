"""A dataset named by its EMPIAR/EMDB accession wherever a dataset id is accepted: API paths,
job spec inputs (the README's example), share requests and transfer filters. Unambiguous
among what the caller may see resolves; several candidates are 409 listing them; none is 404."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hub.datasets.refs import parse_accession
from tests.helpers import Hub, running_hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register
from tests.hub.test_jobs import _CLIENTS, GPU_SITE, add_site, submit

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600) as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


def readme_job_spec() -> dict[str, object]:
    text = README.read_text()
    m = re.search(r"A job spec \(YAML or JSON.*?```yaml\n(.*?)```", text, re.S)
    assert m, "the README shows a job spec"
    return dict(yaml.safe_load(m.group(1)))


def test_accession_spellings() -> None:
    assert parse_accession("EMPIAR-10028") == ("empiar", 10028)
    assert parse_accession("empiar:010028") == ("empiar", 10028)
    assert parse_accession("EMD-2660") == parse_accession("EMDB_2660") == ("emdb", 2660)
    assert parse_accession("ds-0123456789abcdef") is None and parse_accession("PDB-1ABC") is None


def test_the_readme_job_spec_resolves_its_empiar_input(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "kek-cryo", GPU_SITE, institution="kek")
    agent = jhub.enroll_agent("kek-cryo", tmp_path / "data-agent")
    body = dataset_body(
        make_dataset_dir(tmp_path / "EMPIAR-10028"),
        title="Pf80S ribosome",
        cross_references={"empiar": ["EMPIAR-10028"], "emdb": ["EMD-2660"]},
    )
    ds = register(jhub, agent, body).json()
    me = jhub.account("researcher", institution="kek")
    spec = readme_job_spec()
    assert spec["inputs"] == [{"dataset": "EMPIAR-10028"}], "the README's example input"
    r = submit(jhub, me, spec)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["spec"]["inputs"][0]["dataset"] == ds["id"], "stored by id, so staging and placement find it"
    assert job["site"] == "kek-cryo"
    again = submit(jhub, me, {**spec, "inputs": [{"dataset": ds["id"]}]})
    assert again.status_code == 200 and again.json()["id"] == job["id"], "the same job, by idempotency key"
    with jhub.as_(me) as c:
        for ref in ("EMPIAR-10028", "empiar-10028", "EMD-2660"):
            shown = c.get(f"/api/v1/datasets/{ref}")
            assert shown.status_code == 200 and shown.json()["id"] == ds["id"], ref
        assert c.get("/api/v1/datasets/EMPIAR-10028/manifest").json()["digest"] == ds["manifest_digest"]


def test_ambiguous_unknown_and_invisible_accessions(jhub: Hub, tmp_path: Path) -> None:
    jhub.create_site("alpha", institution="kek")
    jhub.create_site("beta", institution="embl")
    jhub.create_site("dest", institution="osaka-u")
    with jhub.as_admin() as c:
        for s in ("alpha", "beta", "dest"):
            c.post(f"/api/v1/sites/{s}/activate")
    agent_a = jhub.enroll_agent("alpha", tmp_path / "a")
    agent_b = jhub.enroll_agent("beta", tmp_path / "b")
    refs = {"empiar": ["EMPIAR-10028"]}
    shared = register(
        jhub, agent_a, dataset_body(make_dataset_dir(tmp_path / "s"), visibility="network", cross_references=refs)
    ).json()
    hidden = register(
        jhub, agent_b, dataset_body(make_dataset_dir(tmp_path / "h"), visibility="private", cross_references=refs)
    ).json()
    osaka = jhub.account("researcher", institution="osaka-u")
    with jhub.as_(osaka) as c:
        # embl's private copy is not visible to osaka: the accession is unambiguous for them
        assert c.get("/api/v1/datasets/EMPIAR-10028").json()["id"] == shared["id"]
        req = c.post("/api/v1/datasets/EMPIAR-10028/share-requests", json={"dest_site": "dest", "purpose": "refinement"})
        assert req.status_code == 201 and req.json()["dataset"] == shared["id"], req.text
        assert c.get("/api/v1/transfers", params={"dataset": "EMPIAR-10028"}).status_code == 200
        unknown = c.get("/api/v1/datasets/EMPIAR-99999")
        assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"
        assert "EMPIAR-99999" in unknown.json()["detail"]
    with jhub.as_admin() as c:
        both = c.get("/api/v1/datasets/EMPIAR-10028")
        assert both.status_code == 409 and both.json()["error"] == "Conflict", both.text
        assert shared["id"] in both.json()["detail"] and hidden["id"] in both.json()["detail"]
        assert c.get("/api/v1/transfers", params={"dataset": "EMPIAR-99999"}).status_code == 404
        assert c.get("/api/v1/transfers", params={"dataset": "EMPIAR-10028"}).status_code == 409
    embl = jhub.account("researcher", institution="embl")
    with jhub.as_(embl) as c:
        r = c.post("/api/v1/jobs", json={"name": "j", "kind": "generic.command", "command": ["true"],
                                         "resources": {"cpus": 1}, "inputs": [{"dataset": "EMPIAR-10028"}]})  # fmt: skip
        assert r.status_code == 409 and shared["id"] in r.json()["detail"], r.text
