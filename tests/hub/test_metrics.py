"""Prometheus metrics at /metrics: the text format parses, and counters move with work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Hub, heartbeat_body, running_hub


def scrape(hub: Hub, token: str | None = None) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{hub.url}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_metrics_parse_and_move_with_work(sqlite_hub: Hub, tmp_path: Path) -> None:
    before = scrape(sqlite_hub)
    sqlite_hub.create_site("kek-cryo")
    agent = sqlite_hub.enroll_agent("kek-cryo", tmp_path / "a")
    with sqlite_hub.http(sqlite_hub.agent_token(agent)) as c:
        for _ in range(3):
            assert c.post("/api/v1/sites/kek-cryo/heartbeat", json=heartbeat_body()).status_code == 200
    after = scrape(sqlite_hub)
    assert after["cryomesh_hub_heartbeats_total{}"] - before.get("cryomesh_hub_heartbeats_total{}", 0) == 3
    assert {k: v for k, v in after.items() if k.startswith("cryomesh_hub_sites{")} == {
        "cryomesh_hub_sites{reachability=online,status=active}": 1.0
    }
    route = "method=POST,route=/api/v1/sites/{name}/heartbeat,status=200"
    key = f"cryomesh_hub_request_seconds_count{{{route}}}"
    assert after[key] - before.get(key, 0) == 3
    jobs_before = before.get("cryomesh_hub_broker_decision_seconds_count{scope=one job}", 0)
    me = sqlite_hub.account("researcher", institution="kek")
    with sqlite_hub.as_(me) as c:
        r = c.post("/api/v1/jobs", json={"name": "j", "kind": "generic.command", "command": ["true"]})
    assert r.status_code == 201, r.text
    latest = scrape(sqlite_hub)
    assert latest["cryomesh_hub_broker_decision_seconds_count{scope=one job}"] == jobs_before + 1
    assert latest["cryomesh_hub_jobs{state=QUEUED}"] == 1


@pytest.fixture
def locked_hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "data", metrics_token="scrape-me") as h:
        yield h


def test_metrics_can_require_a_bearer_token(locked_hub: Hub) -> None:
    r = httpx.get(f"{locked_hub.url}/metrics")
    assert r.status_code == 401 and "metrics_token" in r.json()["detail"]
    r = httpx.get(f"{locked_hub.url}/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert "cryomesh_hub_heartbeats_total{}" in scrape(locked_hub, "scrape-me")
