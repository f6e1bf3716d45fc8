"""GA4GH DRS 1.5 on a real hub (SQLite and PostgreSQL): datasets as bundles, files as blobs,
checksums a client can verify, access methods only where the caller can use them, and
the dataset API's visibility. Responses are validated against the official DRS OpenAPI."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from awscrt import checksums

from shared.schemas.datasets import ChecksumAlgorithm
from site_agent.datasets import scan
from tests import ga4gh_schemas
from tests.helpers import Hub
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
        assert len(bundle["contents"]) == private.json()["file_count"]
        for item in bundle["contents"]:
            ga4gh_schemas.drs("ContentsObject", item)
        star = next(i for i in bundle["contents"] if i["name"] == "run.star")
        blob, data = _fetch(c, star["drs_uri"][0])
        assert data == (tmp_path / "p" / "run.star").read_bytes()
        _verify(blob, data)
        assert blob["access_methods"][0]["region"] == "alpha"
        # Another institution's shared dataset: visible, but no replica kek can read.
        other = c.get(f"{BASE}/objects/{shared.json()['id']}").json()
        assert other["checksums"][0]["type"] == "sha-256"
        first = c.get(f"{BASE}/objects/{other['contents'][0]['id']}").json()
        assert first["access_methods"] == []
        r = c.get(f"{BASE}/objects/{other['contents'][0]['id']}/access/file.beta")
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text

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


def test_crc64nvme_checksums_are_s3s_value_in_hex(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"cryo-em")
    m = scan(tmp_path)
    assert base64.b64decode(m.files[0].checksum).hex() == f"{checksums.crc64nvme(b'cryo-em'):016x}"
