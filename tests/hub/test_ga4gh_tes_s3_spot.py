"""TES on a real hub (SQLite and PostgreSQL), where a task may run: ``s3://`` URLs send it
only to sites that list the bucket, and a bucket no site reaches is refused naming the
URL; ``preemptible`` lets it onto spot partitions or keeps it off them, and the task's logs
and placement say so. Sites are played over HTTP (tests/hub/test_jobs.py); tests/test_tes_s3_e2e.py
runs s3:// tasks on a real agent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ga4gh_schemas
from tests.helpers import Account, Hub, running_hub
from tests.hub.test_jobs import CPU_SITE, add_site

IMAGE = "python:3.11-slim"
BASE = "/ga4gh/tes/v1"
HOST = {"name": f"image:{IMAGE}", "version": "host"}
AS_OF = "2026-11-01"
SPOT = [{"name": "c6i-spot", "node_count": 10, "cores_per_node": 32, "memory_gb_per_node": 128, "spot": True,
         "cost": {"instance_type": "c6i.8xlarge", "on_demand_node_hour": 1.36, "spot_node_hour": 0.5,
                  "as_of": AS_OF}}]  # fmt: skip
ON_DEMAND = [{"name": "c6i", "node_count": 10, "cores_per_node": 32, "memory_gb_per_node": 128,
              "cost": {"instance_type": "c6i.8xlarge", "on_demand_node_hour": 1.36, "as_of": AS_OF}}]  # fmt: skip


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """Placement happens at submission; the sweep is not waited for."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600) as h:
        yield h


def task(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "t", "executors": [{"image": IMAGE, "command": ["true"]}], "resources": {"cpu_cores": 2}}
    body.update(kw)
    return body


def create(hub: Hub, who: Account, body: dict[str, Any]) -> str:
    with hub.as_(who) as c:
        r = c.post(f"{BASE}/tasks", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def where(hub: Hub, who: Account, task_id: str) -> tuple[str | None, dict[str, list[str]], list[str]]:
    """(site the task was placed at, each site's reasons, the task's system_logs)."""
    with hub.as_(who) as c:
        job = c.get(f"/api/v1/jobs/{task_id}").json()
        why = c.get(f"/api/v1/jobs/{task_id}/placement").json()
        full = c.get(f"{BASE}/tasks/{task_id}", params={"view": "FULL"}).json()
    ga4gh_schemas.tes_task(full, "FULL")
    return job["site"], {v["site"]: v["reasons"] for v in why["latest"]["verdicts"]}, full["logs"][-1]["system_logs"]


def test_s3_urls_go_only_where_the_bucket_is_reachable(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "reaches", CPU_SITE, software=[HOST, {"name": "s3:cryo-raw", "version": "reachable"}])
    add_site(jhub, tmp_path, "cannot", CPU_SITE, software=[HOST])
    me = jhub.account("researcher", institution="kek")
    body = task(
        inputs=[{"path": "/in/movies", "url": "s3://cryo-raw/session-7/", "type": "DIRECTORY"}],
        outputs=[{"path": "/out/ctf.star", "url": "s3://cryo-raw/results/ctf.star"}],
    )
    for n in range(3):  # "cannot" would win some of these on headroom alone
        site, reasons, _ = where(jhub, me, create(jhub, me, {**body, "name": f"t{n}"}))
        assert site == "reaches"
        assert reasons["cannot"] == ["does not offer s3:cryo-raw"]

    with jhub.as_(me) as c:
        for bad, said in (
            ({"inputs": [{"path": "/in/x", "url": "s3://elsewhere/x"}]}, "s3://elsewhere/x: no site of this network reaches"),
            ({"outputs": [{"path": "/out/x", "url": "s3://elsewhere/out/x"}]}, "s3://elsewhere/out/x: no site"),
            ({"inputs": [{"path": "/in/x", "url": "s3://Not_A_Bucket/x"}]}, "is not an S3 bucket name"),
            ({"outputs": [{"path": "/out/x", "url": "s3://cryo-raw"}]}, "must name an object or prefix"),
        ):
            r = c.post(f"{BASE}/tasks", json=task(**bad))
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "BadRequest" and said in r.json()["detail"], r.text


def test_preemptible_decides_whether_spot_partitions_may_be_used(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "spot", SPOT, software=[HOST], institution="aws")
    add_site(jhub, tmp_path, "on-demand", ON_DEMAND, software=[HOST], institution="aws")
    me = jhub.account("researcher", institution="kek")

    cheap = create(jhub, me, task(resources={"cpu_cores": 2, "preemptible": True}))
    site, reasons, logs = where(jhub, me, cheap)
    assert site == "spot", "both finish as soon; spot is cheaper"
    assert any(r.startswith("≈") and r.endswith("on c6i-spot (spot)") for r in reasons["spot"]), reasons
    assert "preemptible: may run on spot partitions (a node taken away requeues the task)" in logs

    for resources in ({"cpu_cores": 2, "preemptible": False}, {"cpu_cores": 2}):  # unset: not preemptible
        kept = create(jhub, me, task(resources=resources))
        site, reasons, logs = where(jhub, me, kept)
        assert site == "on-demand"
        assert reasons["spot"] == ["has only spot partitions and the job is not preemptible"]
        assert "not preemptible: spot partitions are not used" in logs
        assert any(line.startswith("placement") and "on-demand" in line for line in logs), logs

    with jhub.as_(me) as c:  # only spot capacity fits, and the task may not be preempted: no site could run it
        r = c.post(f"{BASE}/tasks", json=task(resources={"cpu_cores": 2, "zones": ["spot"]}))
    assert r.status_code == 400, r.text
    assert "spot: has only spot partitions and the job is not preemptible" in r.json()["detail"], r.text
