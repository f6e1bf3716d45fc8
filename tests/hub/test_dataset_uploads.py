"""Paged dataset registration (issue 9, part 3): a manifest of any size arrives as pages of
rows, is checked against its digest at completion, and only then becomes a dataset; the
manifest is read back whole (streamed) or in pages. (That listings never read files:
tests/hub/test_inputs.py::test_dataset_listings_do_not_load_manifests.)"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from hub.db import make_engine
from shared.schemas.datasets import ManifestFile, manifest_digest
from tests.helpers import Agent, Hub
from tests.services import wait_for

UPLOADS = "/api/v1/datasets/uploads"

# Orders that differ between byte order and a linguistic collation (case, '-' before '/',
# accents, CJK): the digest is taken in byte order on both databases.
PATHS = ["B.mrc", "a.mrc", "a-c/x.mrc", "a/b.mrc", "a/B.mrc", "é.star", "e.star", "z/日本.tiff", "Z_1.eer", "a0"]


def files_for(paths: list[str]) -> list[dict[str, Any]]:
    return [{"path": p, "size": 1000 + i, "checksum": f"c{i:04d}AAAAA="} for i, p in enumerate(paths)]


def digest_of(files: list[dict[str, Any]]) -> str:
    return manifest_digest("crc64nvme", [ManifestFile.model_construct(**f) for f in files])


def head(files: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    body = {
        "title": "paged session",
        "sample": {"name": "apoferritin"},
        "location": "/data/paged",
        "algorithm": "crc64nvme",
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
    }
    body.update(overrides)
    return body


def agent_client(hub: Hub, agent: Agent) -> httpx.Client:
    return hub.http(hub.agent_token(agent))


def start(c: httpx.Client, files: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    r = c.post(UPLOADS, json=head(files, **overrides))
    assert r.status_code == 201, r.text
    return dict(r.json())


def send_pages(c: httpx.Client, upload_id: str, files: list[dict[str, Any]], size: int) -> None:
    for n, i in enumerate(range(0, len(files), size)):
        r = c.post(f"{UPLOADS}/{upload_id}/files", json={"page": n, "files": files[i : i + size]})
        assert r.status_code == 200, r.text


def table_counts(hub: Hub) -> dict[str, int]:
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608 (fixed table names)
                for t in ("datasets", "replicas", "dataset_files", "dataset_uploads", "dataset_upload_files")
            }
    finally:
        engine.dispose()


def test_paged_registration_round_trip(hub: Hub, tmp_path: Path) -> None:
    hub.create_site("alpha")
    agent = hub.enroll_agent("alpha", tmp_path / "a")
    files = files_for(PATHS)
    random.Random(9).shuffle(files)  # pages arrive in no particular order of paths
    with agent_client(hub, agent) as c, hub.as_admin() as admin:
        up = start(c, files)
        assert (up["next_page"], up["received_files"], up["max_page_files"]) == (0, 0, 10_000)
        assert admin.get("/api/v1/datasets").json()["total"] == 0, "an upload is not a dataset"
        send_pages(c, up["id"], files, 4)
        again = c.post(f"{UPLOADS}/{up['id']}/files", json={"page": 1, "files": files[4:8]})
        assert again.status_code == 200 and again.json()["next_page"] == 3, "a page sent again is accepted once"
        state = c.get(f"{UPLOADS}/{up['id']}").json()
        assert (state["received_files"], state["received_bytes"]) == (len(files), sum(f["size"] for f in files))
        assert admin.get("/api/v1/datasets").json()["total"] == 0, "still not a dataset before it completes"

        r = c.post(f"{UPLOADS}/{up['id']}/complete", json={"digest": digest_of(files)})
        assert r.status_code == 201, r.text
        ds = r.json()
        assert (ds["owner_site"], ds["file_count"], ds["total_bytes"]) == ("alpha", len(files), sum(f["size"] for f in files))
        assert [(x["site"], x["state"], x["location"]) for x in ds["replicas"]] == [("alpha", "AVAILABLE", "/data/paged")]
        assert ds["manifest_digest"] == digest_of(files) and ds["sample"]["name"] == "apoferritin"
        assert [d["id"] for d in admin.get("/api/v1/datasets").json()["items"]] == [ds["id"]]
        assert c.get(f"{UPLOADS}/{up['id']}").status_code == 404, "a completed upload is gone"

        in_order = sorted(files, key=lambda f: f["path"])
        whole = admin.get(f"/api/v1/datasets/{ds['id']}/manifest")
        assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
        assert whole.json() == {"algorithm": "crc64nvme", "files": in_order, "digest": ds["manifest_digest"]}
        paged: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = admin.get(
                f"/api/v1/datasets/{ds['id']}/manifest/files", params={"limit": 3, **({"after": after} if after else {})}
            ).json()
            assert page["file_count"] == len(files) and page["digest"] == ds["manifest_digest"]
            paged += page["files"]
            after = page["next_after"]
            if after is None:
                break
        assert paged == in_order, "pages follow one another in the digest's (byte) order"
    assert table_counts(hub)["dataset_upload_files"] == 0
    if hub.settings.resolved_database_url.startswith("postgresql"):
        engine = make_engine(hub.settings.resolved_database_url)
        try:
            with engine.connect() as conn:
                collations = conn.execute(
                    sa.text(
                        "SELECT table_name, collation_name FROM information_schema.columns "
                        "WHERE column_name = 'path' AND table_name LIKE 'dataset%'"
                    )
                ).all()
        finally:
            engine.dispose()
        assert sorted(collations) == [("dataset_files", "C"), ("dataset_upload_files", "C")], (
            "paths compare bytewise whatever the database's default collation"
        )


def test_a_mismatch_at_completion_registers_nothing(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    files = files_for(PATHS)
    with agent_client(sqlite_hub, agent) as c:
        up = start(c, files)
        send_pages(c, up["id"], files[:6], 6)
        r = c.post(f"{UPLOADS}/{up['id']}/complete", json={"digest": digest_of(files)})
        assert r.status_code == 409 and r.json()["error"] == "Conflict", r.text
        assert "received 6 files" in r.json()["detail"] and "send page 1" in r.json()["detail"]

        r = c.post(f"{UPLOADS}/{up['id']}/files", json={"page": 1, "files": files[6:]})
        assert r.status_code == 200, r.text
        tampered = [dict(f) for f in files]
        tampered[0]["size"] += 1  # what the agent thinks it sent differs from what arrived
        r = c.post(f"{UPLOADS}/{up['id']}/complete", json={"digest": digest_of(tampered)})
        assert r.status_code == 409 and r.json()["error"] == "Conflict", r.text
        assert f"have digest {digest_of(files)}, not {digest_of(tampered)}" in r.json()["detail"]
        assert "nothing was registered" in r.json()["detail"]
        counts = table_counts(sqlite_hub)
        assert (counts["datasets"], counts["replicas"], counts["dataset_files"]) == (0, 0, 0)
        with sqlite_hub.as_admin() as admin:
            assert admin.get("/api/v1/datasets").json()["total"] == 0

        assert c.delete(f"{UPLOADS}/{up['id']}").status_code == 204
        assert table_counts(sqlite_hub)["dataset_upload_files"] == 0, "a cancelled upload leaves no rows"


def test_pages_are_checked(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    files = files_for(PATHS)
    with agent_client(sqlite_hub, agent) as c:
        r = c.post(UPLOADS, json={**head(files), "file_cont": 3})
        assert r.status_code == 422 and "file_cont" in r.json()["detail"], r.text
        up = start(c, files)
        pages = f"{UPLOADS}/{up['id']}/files"
        assert c.post(pages, json={"page": 0, "files": files[:3]}).status_code == 200

        r = c.post(pages, json={"page": 1, "files": [files[3], files[1]]})
        assert r.status_code == 409 and r.json()["detail"].startswith(f"{files[1]['path']!r} was already received"), r.text
        r = c.post(pages, json={"page": 1, "files": [files[3], files[3]]})
        assert r.status_code == 422 and f"{files[3]['path']!r} is listed twice in the page" in r.json()["detail"], r.text
        r = c.post(pages, json={"page": 2, "files": files[3:5]})
        assert r.status_code == 409 and "expects page 1 next, not page 2" in r.json()["detail"], r.text
        r = c.post(pages, json={"page": 0, "files": files[3:5]})
        assert r.status_code == 409 and "already received with other files" in r.json()["detail"], r.text
        r = c.post(pages, json={"page": 1, "files": [*files[3:], {"path": "extra", "size": 1, "checksum": "x"}]})
        assert r.status_code == 409 and "announced 10 files; 3 received and this page adds 8" in r.json()["detail"], r.text
        r = c.post(pages, json={"page": 1, "files": [{"path": "../etc/passwd", "size": 1, "checksum": "x"}]})
        assert r.status_code == 422 and "files.0.path" in r.json()["detail"], r.text

        many = [{"path": f"m/{i}", "size": 1, "checksum": "x"} for i in range(10_001)]
        r = c.post(pages, json={"page": 1, "files": many})
        assert r.status_code == 422 and "files" in r.json()["detail"] and "10000" in r.json()["detail"], r.text
        wide = [{"path": f"{'d' * 300}/{i}", "size": 1, "checksum": "x"} for i in range(5000)]
        r = c.post(pages, json={"page": 1, "files": wide})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge", r.text
        assert c.get(f"{UPLOADS}/{up['id']}").json()["received_files"] == 3, "no refused page left a row"


def test_only_the_agent_that_started_an_upload_may_use_it(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    sqlite_hub.create_site("beta")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    second = sqlite_hub.enroll_agent("alpha", tmp_path / "a2")
    other = sqlite_hub.enroll_agent("beta", tmp_path / "b")
    files = files_for(PATHS[:2])
    with agent_client(sqlite_hub, agent) as c:
        up = start(c, files)
    calls = [
        ("GET", f"{UPLOADS}/{up['id']}", None),
        ("POST", f"{UPLOADS}/{up['id']}/files", {"page": 0, "files": files}),
        ("POST", f"{UPLOADS}/{up['id']}/complete", {"digest": digest_of(files)}),
        ("DELETE", f"{UPLOADS}/{up['id']}", None),
    ]
    for who in (second, other):
        with agent_client(sqlite_hub, who) as c:
            for method, url, body in calls:
                r = c.request(method, url, json=body)
                assert r.status_code == 404 and r.json() == {
                    "error": "NotFound",
                    "detail": f"no upload {up['id']!r} (uploads expire when no page arrives for a while; start again)",
                }, (method, url, r.text)
    for person in (sqlite_hub.admin, sqlite_hub.account("site_admin", site="alpha")):
        with sqlite_hub.as_(person) as c:
            for method, url, body in calls:
                r = c.request(method, url, json=body)
                assert r.status_code == 403 and "registered by a site's agent" in r.json()["detail"], (method, r.text)
            r = c.post(UPLOADS, json=head(files))
            assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    with sqlite_hub.http() as c:
        assert c.post(UPLOADS, json=head(files)).status_code == 401
    with agent_client(sqlite_hub, agent) as c:
        assert c.get(f"{UPLOADS}/{up['id']}").json()["received_files"] == 0, "nobody else added to it"


def test_a_directory_already_registered_is_refused_at_start_and_completion(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    files = files_for(PATHS[:3])
    with agent_client(sqlite_hub, agent) as c:
        first, second = start(c, files), start(c, files)
        for up in (first, second):
            send_pages(c, up["id"], files, 10)
        assert c.post(f"{UPLOADS}/{first['id']}/complete", json={"digest": digest_of(files)}).status_code == 201
        r = c.post(f"{UPLOADS}/{second['id']}/complete", json={"digest": digest_of(files)})
        assert r.status_code == 409 and "/data/paged at site alpha is already registered" in r.json()["detail"], r.text
        r = c.post(UPLOADS, json=head(files))
        assert r.status_code == 409 and "already registered" in r.json()["detail"], r.text


def test_abandoned_uploads_expire(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    files = files_for(PATHS)
    with agent_client(sqlite_hub, agent) as c:
        up = start(c, files)
        send_pages(c, up["id"], files[:4], 4)
        assert table_counts(sqlite_hub)["dataset_upload_files"] == 4
        engine = make_engine(sqlite_hub.settings.resolved_database_url)
        try:
            with engine.begin() as conn:  # as if its last page came long ago
                conn.execute(sa.text("UPDATE dataset_uploads SET expires_at = '2000-01-01 00:00:00.000000'"))
        finally:
            engine.dispose()
        assert c.get(f"{UPLOADS}/{up['id']}").status_code == 404, "an expired upload is refused before the sweep runs"
    wait_for(
        lambda: table_counts(sqlite_hub)["dataset_uploads"] == 0 and table_counts(sqlite_hub)["dataset_upload_files"] == 0,
        60,
        "the sweep to discard the expired upload",
    )
