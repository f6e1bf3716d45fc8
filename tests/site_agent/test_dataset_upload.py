"""The agent's paged registration against a real hub whose page limit is tiny, so one small
directory goes in many pages: the path-ordered walk must give the digest the hub computes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from site_agent.client import HubClient
from site_agent.credentials import load_credentials, load_key
from site_agent.dataset_upload import register
from site_agent.datasets import scan
from site_agent.errors import HubRefused
from tests.helpers import Agent, Hub, running_hub


def client_of(hub: Hub, agent: Agent) -> HubClient:
    creds = load_credentials(agent.state_dir)
    return HubClient(hub.url, creds.client_id, load_key(agent.state_dir), creds.token_endpoint)


def make_tree(root: Path) -> Path:
    """Names whose walk order and string order differ unless the walk sorts as the digest does."""
    for d in ("a", "a-c", "ab", "B", "é"):
        (root / d / "deeper").mkdir(parents=True)
        for i in range(12):
            (root / d / f"f{i:02d}.tiff").write_bytes(f"{d}{i}".encode() * (i + 1))
        (root / d / "deeper" / "x.star").write_text(d)
    (root / "a.mrc").write_bytes(b"not really an mrc")
    return root


def test_a_directory_is_registered_in_many_pages(tmp_path: Path) -> None:
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", max_body_bytes=2048) as hub:
        hub.create_site("alpha")
        agent = hub.enroll_agent("alpha", tmp_path / "a")
        data = make_tree(tmp_path / "session")
        pages: list[dict[str, Any]] = []

        async def go() -> dict[str, Any]:
            client = client_of(hub, agent)
            try:
                return await register(client, data, {"title": "many pages"}, on_page=pages.append)
            finally:
                await client.aclose()

        ds = asyncio.run(go())
        expected = scan(data)
        assert len(pages) >= 3, "the small page limit split the manifest"
        assert [p["next_page"] for p in pages] == list(range(1, len(pages) + 1))
        assert (ds["file_count"], ds["manifest_digest"]) == (len(expected.files), expected.digest)
        assert {s["format"]: s["count"] for s in ds["image_sets"]} == {"tiff": 60, "mrc": 1}
        with hub.as_admin() as c:
            manifest = c.get(f"/api/v1/datasets/{ds['id']}/manifest").json()
        assert manifest["files"] == expected.model_dump(mode="json")["files"]

        async def again() -> None:
            client = client_of(hub, agent)
            try:
                await register(client, data, {"title": "twice"})
            finally:
                await client.aclose()

        with pytest.raises(HubRefused) as refused:
            asyncio.run(again())
        assert refused.value.status == 409 and "already registered" in refused.value.detail
