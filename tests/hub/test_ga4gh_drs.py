"""GA4GH DRS 1.5 on a real hub (SQLite and PostgreSQL): datasets as bundles, files as blobs,
checksums a client can verify, access methods only where the caller can use them, and
the dataset API's visibility. Responses are validated against the official DRS OpenAPI."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from awscrt import checksums

from hub.ga4gh import presign
from shared.drs_ids import file_object_id
from shared.schemas.datasets import ChecksumAlgorithm
from site_agent.datasets import scan
from tests import ga4gh_schemas
from tests.helpers import Hub, running_hub
from tests.hub.test_datasets import dataset_body, make_dataset_dir, register

BASE = "/ga4gh/drs/v1"


def _verify(blob: dict[str, Any], data: bytes) -> None:
    """What a DRS client does with the bytes it fetched: recompute the checksum it was given."""
    (checksum,) = blob["checksums"]
    if checksum["type"] == "sha-256":
        assert hashlib.sha256(data).hexdigest() == checksum["checksum"]
    else:
        assert checksum["type"] == "crc64nvme"
        assert f"{checksums.crc64nvme(data):016x}" == checksum["checksum"]


def _fetch(c: httpx.Client, drs_uri: str) -> tuple[dict[str, Any], bytes]:
    """Resolve a drs:// URI, take its first access method through /access, read the bytes."""
    object_id = urlsplit(drs_uri).path.lstrip("/")
    blob = c.get(f"{BASE}/objects/{object_id}").json()
    ga4gh_schemas.drs("DrsObject", blob)
    method = blob["access_methods"][0]
    ga4gh_schemas.drs("AccessMethod", method)
    r = c.get(f"{BASE}/objects/{object_id}/access/{method['access_id']}")
    assert r.status_code == 200, r.text
    ga4gh_schemas.drs("AccessURL", r.json())
    url = r.json()["url"]
    assert url.startswith("file://")
    return blob, Path(unquote(urlsplit(url).path)).read_bytes()


def _leaves(contents: list[dict[str, Any]], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, entry) of every blob in expanded contents."""
    for item in contents:
        if "contents" in item:
            yield from _leaves(item["contents"], f"{prefix}{item['name']}/")
        else:
            yield f"{prefix}{item['name']}", item


def test_drs_round_trip_with_checksums_and_visibility(hub: Hub, tmp_path: Path) -> None:
    hub.create_site("alpha", institution="kek")
    hub.create_site("beta", institution="embl")
    agent_a = hub.enroll_agent("alpha", tmp_path / "a")
    agent_b = hub.enroll_agent("beta", tmp_path / "b")
    private = register(hub, agent_a, dataset_body(make_dataset_dir(tmp_path / "p"), title="kek private", visibility="private"))
    assert private.status_code == 201, private.text
    shared_dir = make_dataset_dir(tmp_path / "s")
    sha_body = dataset_body(shared_dir, title="embl shared", visibility="network")
    sha_body["manifest"] = scan(shared_dir, ChecksumAlgorithm.SHA256).model_dump(mode="json")
    shared = register(hub, agent_b, sha_body)
    assert shared.status_code == 201, shared.text
    kek = hub.account("researcher", institution="kek")
    embl = hub.account("researcher", institution="embl")
    host = urlsplit(hub.url).netloc

    info = httpx.get(f"{hub.url}{BASE}/service-info").json()
    ga4gh_schemas.validate(ga4gh_schemas.DATA / "service-info" / "service-info.yaml", "/components/schemas/Service", info)
    ga4gh_schemas.drs("DrsService", info)

    with hub.as_(kek) as c:
        bundle = c.get(f"{BASE}/objects/{private.json()['id']}", params={"expand": True}).json()
        ga4gh_schemas.drs("DrsObject", bundle)
        assert bundle["self_uri"] == f"drs://{host}/{private.json()['id']}"
        assert bundle["size"] == private.json()["total_bytes"]
        assert sum(1 for _ in _leaves(bundle["contents"])) == private.json()["file_count"]
        for item in bundle["contents"]:
            ga4gh_schemas.drs("ContentsObject", item)
        star = next(i for i in bundle["contents"] if i["name"] == "run.star")
        blob, data = _fetch(c, star["drs_uri"][0])
        assert data == (tmp_path / "p" / "run.star").read_bytes()
        _verify(blob, data)
        assert blob["access_methods"][0]["region"] == "alpha"
        # Another institution's shared dataset: visible, but no replica kek can read.
        other = c.get(f"{BASE}/objects/{shared.json()['id']}", params={"expand": True}).json()
        assert other["checksums"][0]["type"] == "sha-256"
        first = c.get(f"{BASE}/objects/{next(_leaves(other['contents']))[1]['id']}").json()
        ga4gh_schemas.drs("DrsObject", first)  # one method, as DRS wants for a blob: where the copy is
        assert first["access_methods"] == [{"type": "file", "access_id": "file.beta", "region": "beta", "available": False}]
        r = c.get(f"{BASE}/objects/{first['id']}/access/file.beta")
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        assert "another institution's site" in r.json()["detail"] and "share" in r.json()["detail"], r.text
        r = c.get(f"{BASE}/objects/{first['id']}/access/file.gamma")
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text  # no copy there at all

    with hub.as_(embl) as c:
        blob, data = _fetch(c, f"drs://{host}/{first['id']}")
        _verify(blob, data)  # sha-256, checked by the reader
        for path in (f"{BASE}/objects/{private.json()['id']}", f"{BASE}/objects/{star['id']}"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text  # private: not even confirmed
        bulk = c.post(f"{BASE}/objects", json={"bulk_object_ids": [star["id"], first["id"], "ds-nothing"]}).json()
        ga4gh_schemas.validate(ga4gh_schemas.DATA / "drs" / "components" / "responses" / "200OkDrsObjects.yaml",
                               "/content/application~1json/schema", bulk)  # fmt: skip
        assert [o["id"] for o in bulk["resolved_drs_object"]] == [first["id"]]
        assert bulk["unresolved_drs_objects"] == [{"error_code": 404, "object_ids": [star["id"], "ds-nothing"]}]
        r = c.post(f"{BASE}/objects", json={"bulk_object_ids": ["x"], "colour": 1})
        assert r.status_code == 422 and "colour" in r.json()["detail"], r.text

    r = httpx.get(f"{hub.url}{BASE}/objects/{star['id']}")
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"], r.text
    with hub.http(hub.agent_token(agent_a)) as c:
        r = c.get(f"{BASE}/objects/{star['id']}")
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text


def test_an_embargoed_copy_is_listed_unavailable_and_its_access_says_until_when(hub: Hub, tmp_path: Path) -> None:
    hub.create_site("alpha", institution="kek")
    agent = hub.enroll_agent("alpha", tmp_path / "a")
    until = (datetime.now(UTC) + timedelta(days=30)).date()
    body = dataset_body(make_dataset_dir(tmp_path / "e"), title="embargoed", visibility="network", embargo_until=str(until))
    ds = register(hub, agent, body)
    assert ds.status_code == 201, ds.text
    with hub.as_(hub.account("researcher", institution="embl")) as c:
        bundle = c.get(f"{BASE}/objects/{ds.json()['id']}", params={"expand": True}).json()
        _, leaf = next(_leaves(bundle["contents"]))
        blob = c.get(f"{BASE}/objects/{leaf['id']}").json()
        ga4gh_schemas.drs("DrsObject", blob)
        assert blob["access_methods"] == [{"type": "file", "access_id": "file.alpha", "region": "alpha", "available": False}]
        r = c.get(f"{BASE}/objects/{leaf['id']}/access/file.alpha")
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        assert f"embargo ends ({until})" in r.json()["detail"], r.text
    with hub.as_(hub.account("researcher", institution="kek")) as c:  # the owners read it meanwhile
        blob, data = _fetch(c, leaf["drs_uri"][0])
        _verify(blob, data)


def test_crc64nvme_checksums_are_s3s_value_in_hex(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"cryo-em")
    m = scan(tmp_path)
    assert base64.b64decode(m.files[0].checksum).hex() == f"{checksums.crc64nvme(b'cryo-em'):016x}"


def test_bundle_contents_nest_by_directory(sqlite_hub: Hub, tmp_path: Path) -> None:
    """DRS 1.5: a bundle's contents are its own entries, each named by its own name; a
    subdirectory is a nested bundle (with an id that resolves), expanded only on ``expand``."""
    hub = sqlite_hub
    hub.create_site("alpha", institution="kek")
    agent = hub.enroll_agent("alpha", tmp_path / "a")
    root = make_dataset_dir(tmp_path / "d")
    (root / "Micrographs" / "notes").mkdir()
    (root / "Micrographs" / "notes" / "a.txt").write_text("first session")
    ds = register(hub, agent, dataset_body(root, title="nested"))
    assert ds.status_code == 201, ds.text
    mics = ["mic_000.mrc", "mic_001.mrc", "mic_002.mrc"]
    with hub.as_(hub.account("researcher", institution="kek")) as c:
        shallow = c.get(f"{BASE}/objects/{ds.json()['id']}").json()
        ga4gh_schemas.drs("DrsObject", shallow)
        assert [i["name"] for i in shallow["contents"]] == ["Micrographs", "particles.mrcs", "run.star"]
        assert all("contents" not in i for i in shallow["contents"]), shallow["contents"]

        full = c.get(f"{BASE}/objects/{ds.json()['id']}", params={"expand": True}).json()
        ga4gh_schemas.drs("DrsObject", full)
        for item in full["contents"]:
            ga4gh_schemas.drs("ContentsObject", item)
        paths = dict(_leaves(full["contents"]))
        assert sorted(paths) == sorted(
            [f"Micrographs/{m}" for m in mics] + ["Micrographs/notes/a.txt", "particles.mrcs", "run.star"]
        )
        note = c.get(f"{BASE}/objects/{paths['Micrographs/notes/a.txt']['id']}").json()
        assert note["name"] == "a.txt" and note["size"] == len("first session")

        mic_dir = c.get(f"{BASE}/objects/{shallow['contents'][0]['id']}").json()
        ga4gh_schemas.drs("DrsObject", mic_dir)
        assert mic_dir["name"] == "Micrographs"
        assert [i["name"] for i in mic_dir["contents"]] == [*mics, "notes"]
        assert "contents" not in mic_dir["contents"][-1]
        assert mic_dir["size"] == sum((root / "Micrographs" / m).stat().st_size for m in mics) + len("first session")
        nested = c.get(f"{BASE}/objects/{mic_dir['id']}", params={"expand": True}).json()
        assert [i["name"] for i in nested["contents"][-1]["contents"]] == ["a.txt"]


def s3_replica_at_alpha(hub: Hub, tmp_path: Path) -> tuple[Any, str]:
    """Site alpha (institution kek) registers a dataset whose replica is in S3: (alpha's agent,
    the DRS id of its run.star)."""
    alpha = hub.enroll_agent("alpha", tmp_path / "a")
    body = dataset_body(make_dataset_dir(tmp_path / "d"), title="in s3", location="s3://replicas/session-1")
    ds = register(hub, alpha, body)
    assert ds.status_code == 201, ds.text
    return alpha, file_object_id(ds.json()["id"], "run.star")


def test_an_answer_wakes_the_waiting_access_call(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The access call waits on the notifier, not on a timer: with the safety-net re-read a
    minute away, the agent's answer still reaches the caller at once."""
    monkeypatch.setattr(presign, "RECHECK_S", 60.0)
    with running_hub(db_url, tmp_path / "data", drs_presign_wait_s=60) as hub:
        hub.create_site("alpha", institution="kek")
        alpha, star = s3_replica_at_alpha(hub, tmp_path)
        kek = hub.account("researcher", institution="kek")
        with ThreadPoolExecutor(1) as pool, hub.as_(kek) as c, hub.http(hub.agent_token(alpha)) as a:
            access = pool.submit(c.get, f"{BASE}/objects/{star}/access/https.alpha")
            (req,) = a.get("/api/v1/sites/alpha/assignments", params={"wait": 10}).json()["presign"]
            r = a.post(f"/api/v1/presign-requests/{req['id']}", json={"refused": "bucket not listed"})
            assert r.status_code == 204, r.text
            answered = access.result(timeout=30)  # not woken: it would read the answer only after 60 s
            assert answered.status_code == 403 and "bucket not listed" in answered.json()["detail"], answered.text


def test_presign_requests_reach_only_the_replicas_site(db_url: str, tmp_path: Path) -> None:
    """The hub asks the site holding the S3 replica, through that site's long-poll; only that
    site's agent may answer; with no answer in time the access call is 503 with Retry-After."""
    with running_hub(db_url, tmp_path / "data", drs_presign_wait_s=4) as hub:
        hub.create_site("alpha", institution="kek")
        hub.create_site("beta", institution="kek")
        alpha, star = s3_replica_at_alpha(hub, tmp_path)
        beta = hub.enroll_agent("beta", tmp_path / "b")
        kek = hub.account("researcher", institution="kek")
        with (
            ThreadPoolExecutor(1) as pool, hub.as_(kek) as c,
            hub.http(hub.agent_token(alpha)) as a, hub.http(hub.agent_token(beta)) as b,
        ):  # fmt: skip
            access = pool.submit(c.get, f"{BASE}/objects/{star}/access/https.alpha")
            (req,) = a.get("/api/v1/sites/alpha/assignments", params={"wait": 10}).json()["presign"]
            assert (req["url"], req["ttl_s"]) == ("s3://replicas/session-1/run.star", 300)
            assert b.get("/api/v1/sites/beta/assignments", params={"wait": 0}).json()["presign"] == []
            r = b.post(f"/api/v1/presign-requests/{req['id']}", json={"refused": "not mine"})
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
            r = a.post(f"/api/v1/presign-requests/{req['id']}", json={"url": "https://s3.example/x", "refused": "both"})
            assert r.status_code == 422 and "exactly one of url or refused" in r.json()["detail"], r.text
            expires = (datetime.now(UTC) + timedelta(seconds=300)).isoformat()
            r = a.post(f"/api/v1/presign-requests/{req['id']}", json={"url": "https://s3.example/x", "expires_at": expires})
            assert r.status_code == 204, r.text
            assert access.result(timeout=30).json() == {"url": "https://s3.example/x"}

            r = c.get(f"{BASE}/objects/{star}/access/https.alpha")  # nobody answers this time
            assert r.status_code == 503 and r.json()["error"] == "Unavailable" and "did not sign" in r.json()["detail"], r.text
            assert r.headers["retry-after"] == "5"
