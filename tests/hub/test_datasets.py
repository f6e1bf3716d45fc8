"""The dataset registry: manifests with checksums, MRC headers read at the site, refusal of
paths that leave the dataset, visibility between institutions, search filters."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pytest

from shared.schemas.datasets import ChecksumAlgorithm, ManifestFile, manifest_digest
from site_agent.datasets import image_sets, scan
from tests.helpers import Account, Agent, Hub


def make_dataset_dir(root: Path, pixel: float = 1.06, micrographs: int = 3) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "Micrographs").mkdir()
    for i in range(micrographs):
        with mrcfile.new(root / "Micrographs" / f"mic_{i:03d}.mrc") as m:
            m.set_data(rng.normal(size=(48, 64)).astype(np.float32))
            m.voxel_size = pixel
    with mrcfile.new(root / "particles.mrcs") as m:
        m.set_data(rng.normal(size=(10, 32, 32)).astype(np.float32))
        m.set_image_stack()
        m.voxel_size = pixel
    (root / "run.star").write_text("data_\nloop_\n_rlnMicrographName #1\n")
    return root


def test_crc64nvme_is_s3s_checksum(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "check.txt").write_bytes(b"123456789")
    m = scan(d)
    assert m.files[0].checksum == base64.b64encode((0xAE8B14860A799888).to_bytes(8, "big")).decode(), (
        "the CRC-64/NVME check value"
    )
    sha = scan(d, ChecksumAlgorithm.SHA256)
    assert sha.files[0].checksum == "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
    assert m.digest != sha.digest


def test_scan_skips_links_and_reads_mrc_headers(tmp_path: Path) -> None:
    d = make_dataset_dir(tmp_path / "d")
    os.symlink("/etc/passwd", d / "escape")
    m = scan(d)
    assert "escape" not in {f.path for f in m.files}, "symlinks could point outside the dataset"
    assert {f.path for f in m.files} == {
        "Micrographs/mic_000.mrc",
        "Micrographs/mic_001.mrc",
        "Micrographs/mic_002.mrc",
        "particles.mrcs",
        "run.star",
    }
    sets = {s.category: s for s in image_sets(d, m)}
    mics, stack = sets["micrographs"], sets["particle_stacks"]
    assert (mics.count, mics.width, mics.height, mics.pixel_size_a, mics.format) == (3, 64, 48, 1.06, "mrc")
    assert (stack.count, stack.width, stack.height, stack.format) == (1, 32, 32, "mrcs")
    assert mics.file_pattern == "Micrographs/mic_00*.mrc"


def test_a_file_named_mrc_that_is_not_one_is_described_without_dimensions(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "noise.mrc").write_bytes(bytes(range(256)) * 8)
    (d / "short.mrc").write_bytes(b"not an mrc")
    (sets,) = image_sets(d, scan(d))
    assert (sets.category, sets.count, sets.width, sets.height, sets.pixel_size_a) == ("micrographs", 2, None, None, None)


def dataset_body(root: Path, **meta: Any) -> dict[str, Any]:
    m = scan(root)
    body: dict[str, Any] = {
        "title": "apoferritin",
        "sample": {"name": "apoferritin", "organism": "Mus musculus"},
        "detector": {"model": "Falcon 4i", "mode": "eer"},
        "acquisition": {"pixel_size_a": 1.06},
        "image_sets": [s.model_dump() for s in image_sets(root, m)],
        "manifest": m.model_dump(mode="json"),
        "location": str(root),
    }
    body.update(meta)
    return body


def register(hub: Hub, agent: Agent, body: dict[str, Any]) -> Any:
    with hub.http(hub.agent_token(agent)) as c:
        return c.post("/api/v1/datasets", json=body)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a", "C:/x", "a\\..\\b", "a/\x00b"])
def test_paths_leaving_the_dataset_are_refused(sqlite_hub: Hub, tmp_path: Path, path: str) -> None:
    site = sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    files = [{"path": path, "size": 9, "checksum": "rosiV2YdTQA="}]
    digest = manifest_digest("crc64nvme", [ManifestFile.model_construct(**f) for f in files])
    body = {"title": "evil", "manifest": {"algorithm": "crc64nvme", "files": files, "digest": digest}, "location": "/data"}
    r = register(sqlite_hub, agent, body)
    assert r.status_code == 422 and "manifest.files.0.path" in r.json()["detail"], r.json()
    with sqlite_hub.as_admin() as c:
        assert c.get("/api/v1/datasets").json()["total"] == 0, "nothing was stored"


def test_tampered_manifest_is_refused(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    body = dataset_body(make_dataset_dir(tmp_path / "d"))
    body["manifest"]["files"][0]["size"] += 1
    r = register(sqlite_hub, agent, body)
    assert r.status_code == 422 and "digest does not match" in r.json()["detail"]


def test_visibility_and_search(hub: Hub, tmp_path: Path) -> None:
    a = hub.create_site("alpha", institution="kek")
    b = hub.create_site("beta", institution="embl")
    agent_a = hub.enroll_agent(a["name"], tmp_path / "a")
    agent_b = hub.enroll_agent(b["name"], tmp_path / "b")
    private = register(hub, agent_a, dataset_body(make_dataset_dir(tmp_path / "p"), title="kek private", visibility="private"))
    assert private.status_code == 201, private.text
    shared = register(
        hub,
        agent_b,
        dataset_body(
            make_dataset_dir(tmp_path / "s", pixel=0.83),
            title="embl tomograms",
            experiment_type="tomography",
            visibility="network",
            sample={"name": "ribosome"},
            acquisition={"pixel_size_a": 0.83},
        ),
    )
    assert shared.status_code == 201, shared.text
    p, s = private.json(), shared.json()
    assert p["owner_site"] == "alpha" and p["institution"] == "kek"
    assert [(r["site"], r["state"]) for r in p["replicas"]] == [("alpha", "AVAILABLE")]
    assert p["file_count"] == 5 and p["checksum_algorithm"] == "crc64nvme"

    outsider: Account = hub.account("researcher", institution="embl")
    with hub.as_(outsider) as c:
        assert [d["id"] for d in c.get("/api/v1/datasets").json()["items"]] == [s["id"]]
        r = c.get(f"/api/v1/datasets/{p['id']}")
        assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": f"no dataset {p['id']!r}"}
        assert c.get(f"/api/v1/datasets/{p['id']}/manifest").status_code == 404
    insider = hub.account("researcher", institution="kek")
    with hub.as_(insider) as c:
        assert c.get("/api/v1/datasets").json()["total"] == 2
        assert c.get(f"/api/v1/datasets/{p['id']}/manifest").json()["digest"] == p["manifest_digest"]
        ids = lambda **q: [d["id"] for d in c.get("/api/v1/datasets", params=q).json()["items"]]  # noqa: E731
        assert ids(experiment_type="tomography") == [s["id"]]
        assert ids(pixel_size_min=1.0, pixel_size_max=1.1) == [p["id"]]
        assert ids(site="beta") == [s["id"]]
        assert ids(q="ribosome") == [s["id"]]
        assert ids(detector="falcon") == [s["id"], p["id"]]
        assert ids(min_bytes=10**9) == []
    with hub.as_admin() as c:
        assert c.get("/api/v1/datasets").json()["total"] == 2


def test_only_agents_register_for_their_own_site(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site("alpha")
    body = dataset_body(make_dataset_dir(tmp_path / "d"))
    for who in (sqlite_hub.admin, sqlite_hub.account("site_admin", site="alpha")):
        with sqlite_hub.as_(who) as c:
            r = c.post("/api/v1/datasets", json=body)
        assert r.status_code == 403 and "agent" in r.json()["detail"]
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "a")
    assert register(sqlite_hub, agent, body).json()["owner_site"] == "alpha"


def test_cli_registers_through_the_agents_credentials(sqlite_hub: Hub, tmp_path: Path) -> None:
    site = sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent(site["name"], tmp_path / "state")
    config = tmp_path / "site.toml"
    config.write_text(f'[agent]\nhub_url = "{sqlite_hub.url}"\nstate_dir = "{agent.state_dir}"\n')
    data = make_dataset_dir(tmp_path / "apo")
    meta = tmp_path / "meta.yaml"
    meta.write_text(
        "title: Apoferritin at 1.06 A\nsample: {name: apoferritin}\nvisibility: network\n"
        "instrument: {microscope: Titan Krios G4, voltage_kv: 300}\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryomesh_cli.main",
            "datasets",
            "register",
            "--config",
            str(config),
            "--path",
            str(data),
            "--metadata",
            str(meta),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    ds = json.loads(out.stdout)
    assert ds["title"] == "Apoferritin at 1.06 A" and ds["visibility"] == "network" and ds["instrument"]["voltage_kv"] == 300
    assert {s["category"] for s in ds["image_sets"]} == {"micrographs", "particle_stacks"}
    assert ds["replicas"][0]["location"] == str(data.resolve())
    evil = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryomesh_cli.main",
            "datasets",
            "register",
            "--config",
            str(config),
            "--path",
            str(tmp_path / "missing"),
            "--title",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert evil.returncode == 1 and "not a directory" in evil.stdout


def test_a_job_output_is_refused_unless_the_job_ran_at_the_site(sqlite_hub: Hub, tmp_path: Path) -> None:
    """A job's output takes the job's institution and owner, so an agent may name only a job
    its own site ran: one that never ran there (or does not exist) is 403."""
    hub = sqlite_hub
    hub.create_site("alpha", institution="kek")
    hub.create_site("beta", institution="embl")
    agent = hub.enroll_agent("alpha", tmp_path / "a")
    hub.enroll_agent("beta", tmp_path / "b")
    with hub.as_(hub.account("researcher", institution="embl")) as c:
        job = c.post("/api/v1/jobs", json={"name": "elsewhere", "kind": "generic.command", "command": ["true"],
                                           "placement": {"allowed_sites": ["beta"]}})  # fmt: skip
    assert job.status_code in (201, 202), job.text
    for source_job in ("job-never", job.json()["id"]):
        r = register(hub, agent, dataset_body(make_dataset_dir(tmp_path / source_job), source_job=source_job))
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        assert f"source_job: job {source_job} did not run at site alpha" in r.json()["detail"]
