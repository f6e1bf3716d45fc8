"""No 5xx from anything a client can send: integers past BIGINT, lone surrogates and NUL,
non-finite numbers, control characters in paths, unbounded lists and oversized bodies are
refused with a 4xx and the hub's error body; the OpenAPI document says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from shared.schemas.datasets import ManifestFile, manifest_digest
from tests.helpers import Agent, Hub, heartbeat_body

BIG = 2**63


def raw_post(hub: Hub, token: str | None, path: str, body: Any) -> httpx.Response:
    """POST exactly what json.dumps writes: lone surrogates as \\ud800 escapes, Infinity, NaN."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{hub.url}{path}", content=json.dumps(body), headers=headers, timeout=30)


def refused(r: httpx.Response, status: int = 422, where: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert where in body["detail"], body


def manifest(*files: tuple[str, int]) -> dict[str, Any]:
    fs = [{"path": p, "size": s, "checksum": "rosiV2YdTQA="} for p, s in files]
    digest = manifest_digest("crc64nvme", [ManifestFile.model_construct(**f) for f in fs])
    return {"algorithm": "crc64nvme", "files": fs, "digest": digest}


@pytest.fixture
def net(hub: Hub, tmp_path: Path) -> Iterator[dict[str, Any]]:
    hub.create_site("alpha", institution="kek")
    agent = hub.enroll_agent("alpha", tmp_path / "agent")
    researcher = hub.account("researcher", institution="kek")
    yield {"agent": agent, "agent_token": hub.agent_token(agent), "researcher": hub.token_for(researcher),
           "admin": hub.token_for(hub.admin)}  # fmt: skip


def register(hub: Hub, token: str, **overrides: Any) -> httpx.Response:
    body = {"title": "t", "manifest": manifest(("a.mrc", 9)), "location": "/data/t", **overrides}
    return raw_post(hub, token, "/api/v1/datasets", body)


def test_integers_past_bigint_are_refused_in_queries_paths_and_bodies(hub: Hub, net: dict[str, Any]) -> None:
    with hub.http(net["admin"]) as c:
        for path in ("/api/v1/sites", "/api/v1/jobs", "/api/v1/datasets"):
            refused(c.get(path, params={"offset": BIG}), where="offset")
        refused(c.get("/api/v1/datasets", params={"min_bytes": BIG}), where="min_bytes")
        refused(c.get("/api/v1/datasets", params={"max_bytes": 10**30}), where="max_bytes")
        refused(c.post(f"/api/v1/enrollments/{BIG}/approve"), where="enrollment_id")
        assert c.get("/api/v1/datasets", params={"max_bytes": BIG - 1, "offset": 0}).status_code == 200
    refused(register(hub, net["agent_token"], manifest=manifest(("a.mrc", BIG))), where="manifest.files.0.size")
    r = raw_post(hub, net["agent_token"], "/api/v1/transfers/tr-x/progress",
                 {"attempt": 1, "bytes_done": 0, "files_done": 0, "resent_bytes": BIG})  # fmt: skip
    refused(r, where="resent_bytes")
    refused(raw_post(hub, net["agent_token"], "/api/v1/sites/alpha/heartbeat", heartbeat_body(cpus_total=BIG, cpus_idle=0)))
    refused(raw_post(hub, net["researcher"], "/api/v1/jobs",
                     {"name": "j", "kind": "generic.command", "command": ["true"], "resources": {"cpus": BIG}}))  # fmt: skip


def test_lone_surrogates_and_nul_are_refused_wherever_text_is_accepted(hub: Hub, net: dict[str, Any]) -> None:
    job = {"name": "j", "kind": "generic.command", "command": ["echo", "\ud800"]}
    refused(raw_post(hub, net["researcher"], "/api/v1/jobs", job), where="command.1")
    refused(raw_post(hub, net["researcher"], "/api/v1/jobs", {**job, "command": ["echo"], "tags": ["\udfff"]}), where="tags")
    refused(raw_post(hub, net["researcher"], "/api/v1/jobs", {**job, "command": ["echo"], "parameters": {"i": "a\x00b"}}))
    refused(register(hub, net["agent_token"], title="nul \x00 title"), where="title")
    refused(register(hub, net["agent_token"], description="\ud83d alone"), where="description")
    with hub.http(net["admin"]) as c:
        refused(c.get("/api/v1/sites", params={"institution": "a\x00b"}), where="NUL")
        refused(c.get("/api/v1/datasets/ds-%00"), where="NUL")
        assert c.get("/api/v1/sites", params={"q": "日本 ✓"}).status_code == 200, "ordinary Unicode is fine"
    ok = raw_post(hub, net["researcher"], "/api/v1/jobs", {**job, "command": ["echo", "κρυο 🧊"]})
    assert ok.status_code == 201, ok.text
    with hub.http(net["researcher"]) as c:
        assert c.get(f"/api/v1/jobs/{ok.json()['id']}").json()["spec"]["command"] == ["echo", "κρυο 🧊"]


def test_non_finite_numbers_are_refused(hub: Hub, net: dict[str, Any]) -> None:
    for value in (float("inf"), float("-inf"), float("nan")):
        refused(register(hub, net["agent_token"], acquisition={"defocus_min_um": value}), where="defocus_min_um")
        r = raw_post(hub, net["agent_token"], "/api/v1/transfers/tr-x/progress",
                     {"attempt": 1, "bytes_done": 0, "files_done": 0, "rate_bps": value})  # fmt: skip
        refused(r, where="rate_bps")
        refused(raw_post(hub, net["researcher"], "/api/v1/jobs",
                         {"name": "j", "kind": "generic.command", "command": ["x"], "parameters": {"f": value}}))  # fmt: skip
    with hub.http(net["admin"]) as c:
        refused(c.get("/api/v1/datasets", params={"pixel_size_min": "inf"}), where="pixel_size_min")
        refused(c.get("/api/v1/datasets", params={"pixel_size_max": "nan"}), where="pixel_size_max")
    with hub.http(net["researcher"]) as c:
        assert c.get("/api/v1/datasets").json()["total"] == 0, "nothing was stored"


@pytest.mark.parametrize("char", ["\x7f", "\x80", "\x85", "\x9b", "\x9f"])
def test_del_and_c1_control_characters_are_refused_in_manifest_paths(sqlite_hub: Hub, tmp_path: Path, char: str) -> None:
    sqlite_hub.create_site("alpha")
    token = sqlite_hub.agent_token(sqlite_hub.enroll_agent("alpha", tmp_path / "a"))
    r = register(sqlite_hub, token, manifest=manifest((f"Movies/a{char}b.tiff", 9)))
    refused(r, where="manifest.files.0.path")
    assert register(sqlite_hub, token, manifest=manifest(("Movies/é.tiff", 9))).status_code == 201, "Latin-1 letters are fine"


def test_lists_are_bounded(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    with sqlite_hub.as_admin() as c:
        many = [f"inst-{i}" for i in range(1001)]
        refused(c.put("/api/v1/sites/alpha/share-policy", json={"auto_approve_institutions": many}),
                where="auto_approve_institutions")  # fmt: skip
        refused(c.put("/api/v1/sites/alpha/policy", json={"allowed_institutions": many}), where="allowed_institutions")
        ok = c.put("/api/v1/sites/alpha/share-policy", json={"auto_approve_institutions": many[:1000]})
        assert ok.status_code == 200, ok.text
        # 100,000 institutions is a body over the limit: refused before it is parsed.
        huge = c.put(
            "/api/v1/sites/alpha/share-policy", json={"auto_approve_institutions": [f"institution-{i}" for i in range(100_000)]}
        )
        refused(huge, 413)


def test_bodies_over_the_limit_are_refused_before_they_are_read(tmp_path: Path) -> None:
    from tests.helpers import running_hub

    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", max_body_bytes=64 * 1024,
                     max_manifest_body_bytes=4 * 1024 * 1024) as hub:  # fmt: skip
        big = b"{" + b" " * (200 * 1024) + b"}"
        # Unauthenticated: the 413 comes from the Content-Length, not after parsing and a 401.
        r = httpx.post(f"{hub.url}/api/v1/sites", content=big, headers={"Content-Type": "application/json"})
        refused(r, 413, where="65536 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"name": "'
            for _ in range(100):
                yield b"x" * 4096
            yield b'"}'

        with hub.as_admin() as c:
            r = c.post("/api/v1/sites", content=chunks(), headers={"Content-Type": "application/json"})
            refused(r, 413)
            assert c.get("/api/v1/sites").status_code == 200, "the hub still answers"
        # Dataset registration has its own, larger limit: a 1 MB manifest is fine there.
        hub.create_site("alpha")
        token = hub.agent_token(hub.enroll_agent("alpha", tmp_path / "a"))
        files = [(f"Movies/movie_{i:06d}.tiff", 1000 + i) for i in range(8000)]
        r = register(hub, token, manifest=manifest(*files))
        assert r.status_code == 201, r.text
        assert r.json()["file_count"] == 8000
        # So do transfer progress reports (one presigned URL per file): a 200 KiB one is read.
        urls = {f"Movies/movie_{i:06d}.tiff": f"https://s3.example/b/{i}?X-Amz-Signature={'0' * 64}" for i in range(2000)}
        r = raw_post(hub, token, "/api/v1/transfers/tr-none/progress",
                     {"attempt": 1, "bytes_done": 0, "files_done": 0, "access": {"kind": "s3", "urls": urls}})  # fmt: skip
        refused(r, 404, where="tr-none")
        files = [(f"Movies/a_much_longer_name_for_each_movie_{i:08d}.tiff", i) for i in range(40_000)]
        refused(register(hub, token, manifest=manifest(*files)), 413, where=str(4 * 1024 * 1024))


def test_dataset_listings_do_not_load_manifests(sqlite_hub: Hub, tmp_path: Path) -> None:
    sqlite_hub.create_site("alpha")
    agent: Agent = sqlite_hub.enroll_agent("alpha", tmp_path / "a")
    token = sqlite_hub.agent_token(agent)
    ds = register(sqlite_hub, token, manifest=manifest(*[(f"f{i}", i) for i in range(50)])).json()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        with sqlite_hub.as_admin() as c:
            assert c.get("/api/v1/datasets").json()["total"] == 1
            assert c.get(f"/api/v1/datasets/{ds['id']}").status_code == 200
            listed = list(statements)
            assert len(c.get(f"/api/v1/datasets/{ds['id']}/manifest").json()["files"]) == 50
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert listed and not any("dataset_files" in s for s in listed), "\n\n".join(listed)
    assert any("dataset_files" in s for s in statements[len(listed) :]), "the manifest route loads it"


def test_the_openapi_document_describes_the_error_bodies_the_hub_sends(sqlite_hub: Hub) -> None:
    doc = httpx.get(f"{sqlite_hub.url}/openapi.json", timeout=60).json()  # built on first request: slow on a busy machine
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "ValidationError" not in doc["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    with_body = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert responses["422"]["content"]["application/json"]["schema"] == error_ref, (method, path)
            if "requestBody" in op:
                with_body += 1
                assert responses["413"]["content"]["application/json"]["schema"] == error_ref, (method, path)
    assert with_body > 20
    offset = next(p for p in doc["paths"]["/api/v1/datasets"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] <= 2**63 - 1


def test_the_manifest_table_migration_keeps_every_manifest(db_url: str, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from hub.datasets.files import manifest_of
    from hub.datasets.models import Dataset
    from hub.db import alembic_config, make_engine, migrate, transaction
    from tests.helpers import running_hub

    with running_hub(db_url, tmp_path / "data") as hub:
        hub.create_site("alpha")
        token = hub.agent_token(hub.enroll_agent("alpha", tmp_path / "a"))
        ds = register(hub, token, manifest=manifest(("a.mrc", 9), ("b.mrc", 10))).json()
    command.downgrade(alembic_config(db_url), "0009")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT manifest FROM datasets WHERE id = :id"), {"id": ds["id"]}).scalar_one()
        assert [f["path"] for f in (json.loads(row) if isinstance(row, str) else row)["files"]] == ["a.mrc", "b.mrc"]
    finally:
        engine.dispose()
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        with transaction(engine) as session:
            dataset = session.get(Dataset, ds["id"])
            assert dataset is not None
            files = manifest_of(session, dataset).files
        assert [(f.path, f.size) for f in files] == [("a.mrc", 9), ("b.mrc", 10)]
    finally:
        engine.dispose()
