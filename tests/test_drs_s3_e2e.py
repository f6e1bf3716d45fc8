"""DRS access to a dataset replica in a site's S3 bucket, end to end: a real hub process, a
real agent process, and moto's S3 protocol server over HTTP as the bucket. The hub holds no
S3 credentials: the ``https`` access URL is signed by the site's agent, which the hub asks
through the agent's long-poll for work. The dataset is registered from the bucket with
``cryomesh datasets register --s3``. A DRS client resolves the drs:// URI, gets the
presigned URL from ``/access``, fetches the bytes with plain httpx and checks the sha-256
DRS gave. An outsider gets 404 for the private dataset and for the access call; a bucket
the site does not sign for is 403; responses are validated against the DRS 1.5 OpenAPI."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests import ga4gh_schemas
from tests.processes import AgentProcess, HubProcess, cli, enrolled_agent, hub_process
from tests.services import S3Server, wait_for

pytestmark = pytest.mark.slow

SIGNED, UNSIGNED = "drs-e2e-replicas", "drs-e2e-private"
BASE = "/ga4gh/drs/v1"


hub = hub_process  # the fixture: a hub process for each test


@pytest.fixture
def agent(hub: HubProcess, tmp_path: Path, s3: S3Server) -> Iterator[AgentProcess]:
    s3.bucket(SIGNED)
    s3.bucket(UNSIGNED)
    extra = (
        f'[transfers]\nendpoint_url = "{s3.endpoint_url}"\nregion = "{s3.region}"\n'
        f'[drs]\npresign_buckets = ["{SIGNED}"]\npresign_ttl_s = 120\n'
    )
    a = enrolled_agent(hub, tmp_path, "s3-site", extra=extra)
    a.start({**hub.env, **s3.env})
    wait_for(lambda: hub.site("s3-site")["reachability"] == "online", 60, "s3-site to come online")
    yield a
    a.stop()


def register_in_s3(hub: HubProcess, agent: AgentProcess, s3: S3Server, local: Path, bucket: str, prefix: str) -> dict[str, Any]:
    """Put ``local``'s files under s3://bucket/prefix and register them as the site's admin
    would: ``cryomesh datasets register --s3`` with the agent's config and AWS credentials."""
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{f.relative_to(local)}", Body=f.read_bytes())
    args = ("datasets", "register", "--config", str(agent.config), "--s3", f"s3://{bucket}/{prefix}",
            "--title", prefix, "--checksum", "sha256", "--json")  # fmt: skip
    out = subprocess.run(cli(*args), env={**hub.env, **s3.env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    ds: dict[str, Any] = json.loads(out.stdout)
    assert ds["replicas"][0]["location"] == f"s3://{bucket}/{prefix}" and ds["file_count"] == 2, ds
    return ds


def test_https_access_is_signed_by_the_site_and_checks_out(
    hub: HubProcess, agent: AgentProcess, s3: S3Server, tmp_path: Path
) -> None:
    local = tmp_path / "session"
    (local / "Micrographs").mkdir(parents=True)
    (local / "Micrographs" / "mic_001.mrc").write_bytes(bytes(range(256)) * 40)
    (local / "run.star").write_text("data_\nloop_\n_rlnMicrographName #1\n")
    ds = register_in_s3(hub, agent, s3, local, SIGNED, "session-1")
    host = urlsplit(hub.url).netloc
    kek = {"Authorization": f"Bearer {hub.token(hub.account('researcher', institution='kek'))}"}
    embl = {"Authorization": f"Bearer {hub.token(hub.account('researcher', institution='embl'))}"}

    with httpx.Client(base_url=hub.url, headers=kek, timeout=60) as c:
        bundle = c.get(f"{BASE}/objects/{ds['id']}", params={"expand": True}).json()
        ga4gh_schemas.drs("DrsObject", bundle)
        mic = bundle["contents"][0]["contents"][0]
        assert (bundle["contents"][0]["name"], mic["name"]) == ("Micrographs", "mic_001.mrc")
        # What a DRS client does: resolve the drs:// URI, ask /access, fetch, verify.
        assert mic["drs_uri"] == [f"drs://{host}/{mic['id']}"]
        blob = c.get(f"{BASE}/objects/{urlsplit(mic['drs_uri'][0]).path.lstrip('/')}").json()
        ga4gh_schemas.drs("DrsObject", blob)
        s3_method, https = blob["access_methods"]
        for m in (s3_method, https):
            ga4gh_schemas.drs("AccessMethod", m)
        assert s3_method == {"type": "s3", "access_url": {"url": f"s3://{SIGNED}/session-1/Micrographs/mic_001.mrc"},
                             "available": True}  # fmt: skip
        assert https["type"] == "https" and https["access_id"] == "https.s3-site"
        r = c.get(f"{BASE}/objects/{blob['id']}/access/{https['access_id']}")
        assert r.status_code == 200, r.text
        ga4gh_schemas.drs("AccessURL", r.json())
        url = r.json()["url"]
        assert url.startswith(s3.endpoint_url) and parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["120"], url
        data = httpx.get(url, timeout=30).content  # no credentials: the URL is the permission
        assert data == (local / "Micrographs" / "mic_001.mrc").read_bytes()
        assert blob["checksums"] == [{"type": "sha-256", "checksum": hashlib.sha256(data).hexdigest()}]

        # A bucket this site does not sign for: the site says no, and the call says why.
        other = register_in_s3(hub, agent, s3, local, UNSIGNED, "session-2")
        star = next(i for i in c.get(f"{BASE}/objects/{other['id']}").json()["contents"] if i["name"] == "run.star")
        r = c.get(f"{BASE}/objects/{star['id']}/access/https.s3-site")
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        assert "[drs] presign_buckets" in r.json()["detail"]
        r = c.get(f"{BASE}/objects/{star['id']}/access/file.s3-site")  # no such method for an S3 replica
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
        # Only agents answer presign requests.
        r = c.post("/api/v1/presign-requests/ps-x", json={"refused": "no"})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text

    with httpx.Client(base_url=hub.url, headers=embl, timeout=60) as c:  # the dataset is kek's and private
        for path in (
            f"{BASE}/objects/{ds['id']}",
            f"{BASE}/objects/{blob['id']}",
            f"{BASE}/objects/{blob['id']}/access/https.s3-site",
        ):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
