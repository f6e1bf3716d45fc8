"""Elastic cloud sites (issue 12, part 4): capacity on powered-down nodes (Slurm power saving,
as ParallelCluster runs it) counts as available once a node is started, and the node's
start-up is waited for and paid for exactly when the job needs a node that is not up.

The rules are pure functions over in-memory views; the hub's part (storing what the agent
reports, refusing what does not add up, showing it) is tested over HTTP. The agent's side,
against a real Slurm cluster with power-saving nodes, is in tests/test_elastic_slurm.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cryomesh_cli.render import startable_text
from hub.broker.rules import PartitionView, SiteView, evaluate
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import PartitionCost, SitePolicy
from tests.helpers import Hub, heartbeat_body

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
COST = PartitionCost.model_validate(
    {"instance_type": "c5.9xlarge", "on_demand_node_hour": 1.53, "spot_node_hour": 0.6, "node_startup_s": 300,
     "as_of": "2026-11-01"}
)  # fmt: skip


def cloud(free: int, bootable: int, gpus: tuple[int, int] | None = None, cost: PartitionCost | None = COST) -> SiteView:
    """A ParallelCluster site: c5-vcpu36 (2 nodes of 36 CPUs, or of 4 A10G GPUs with ``gpus``):
    ``free`` CPUs on nodes up now, ``bootable`` on powered-down nodes."""
    model = "a10g" if gpus else None
    v = SiteView(
        id=1, name="aws", institution="aws", country="JP", status="active", reachability="online",
        partitions=[PartitionView("c5-vcpu36", 2, 36, 72, model, 4 if gpus else 0, False, cost)],
        software=[], policy=SitePolicy(), has_snapshot=True,
    )  # fmt: skip
    v.cpus_total, v.cpus_free, v.cpus_bootable = 72, free, bootable
    if gpus:
        v.gpus_total, v.gpus_free, v.gpus_bootable = {"a10g": 8}, {"a10g": gpus[0]}, {"a10g": gpus[1]}
    return v


def job(cpus: int, gpus: int = 0) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "j",
            "kind": "generic.command",
            "command": ["true"],
            "resources": {"cpus": cpus, "gpus": gpus, "walltime_s": 7200},
        }
    )


def test_capacity_on_powered_down_nodes_is_available_after_a_start_up() -> None:
    v = evaluate(job(8), "kek", cloud(free=0, bootable=72), NOW, set())
    assert v.eligible, v.reasons
    assert v.parts["startup_s"] == 300 and v.parts["finish_s"] == 3600 + 300
    assert v.parts["cost"] == pytest.approx(1.53 * 3900 / 3600, abs=1e-3), "the start-up is paid for"
    [line] = [r for r in v.reasons if r.startswith("finishes in ~")]
    assert line.endswith("5 m start-up of a powered-down node"), line


def test_no_start_up_when_the_job_fits_on_a_node_that_is_up() -> None:
    up = evaluate(job(8), "kek", cloud(free=36, bootable=36), NOW, set())
    assert up.eligible and up.parts["startup_s"] == 0 and up.parts["finish_s"] == 3600
    assert up.parts["cost"] == pytest.approx(1.53, abs=1e-3)
    assert not any("start-up" in r for r in up.reasons)
    partly = evaluate(job(8), "kek", cloud(free=4, bootable=36), NOW, set())
    assert partly.eligible and partly.parts["startup_s"] == 300, "4 CPUs free on the node that is up: one must start"


def test_more_than_the_site_could_have_is_refused_for_now() -> None:
    v = evaluate(job(30), "kek", cloud(free=8, bootable=20), NOW, set())
    assert not v.eligible and not v.never
    assert v.reasons == ["needs 30 CPUs, 8 free (and 20 on nodes that can be started)"]


def test_gpus_on_powered_down_nodes() -> None:
    booting = evaluate(job(4, gpus=4), "kek", cloud(free=72, bootable=0, gpus=(0, 8)), NOW, set())
    assert booting.eligible and booting.gpu_model == "a10g" and booting.parts["startup_s"] == 300
    up = evaluate(job(4, gpus=4), "kek", cloud(free=36, bootable=36, gpus=(4, 4)), NOW, set())
    assert up.eligible and up.parts["startup_s"] == 0
    short = evaluate(job(4, gpus=4), "kek", cloud(free=36, bootable=36, gpus=(2, 0)), NOW, set())
    assert not short.eligible and short.reasons == ["needs 4 GPUs (a10g 2 free) within the site's GPU share"]


def test_the_agents_resume_timeout_when_the_registry_prices_no_start_up() -> None:
    site = cloud(free=0, bootable=72, cost=None)
    site.boot_s = 600  # Slurm's ResumeTimeout, as the agent reports it: the longest a start may take
    v = evaluate(job(8), "kek", site, NOW, set())
    assert v.eligible and v.parts["startup_s"] == 600 and v.parts["cost"] == 0


# -- the hub stores, checks and shows what the agent reports --------------------------------------


def elastic_partition(**over: Any) -> dict[str, Any]:
    part = {
        "name": "g5-vcpu48-gpu4-spot", "cpus_total": 96, "cpus_allocated": 48, "cpus_idle": 0, "cpus_bootable": 48,
        "memory_total_mb": 393_216, "memory_free_mb": 0, "nodes_total": 2, "nodes_available": 0, "nodes_bootable": 1,
        "nodes_booting": 0, "elastic": True, "spot": True, "resume_timeout_s": 1800,
        "gpus": [{"model": "a10g", "total": 8, "free": 0, "bootable": 4}],
    }  # fmt: skip
    part.update(over)
    return part


def _agent(hub: Hub, tmp_path: Path) -> str:
    hub.create_site("aws-tokyo", institution="kek")
    return hub.agent_token(hub.enroll_agent("aws-tokyo", tmp_path / "agent"))


def test_the_hub_stores_and_shows_what_an_elastic_site_could_have(hub: Hub, tmp_path: Path) -> None:
    token = _agent(hub, tmp_path)
    with hub.http(token) as c:
        r = c.post("/api/v1/sites/aws-tokyo/heartbeat", json=heartbeat_body(partitions=[elastic_partition()]))
        assert r.status_code == 200, r.text
    with hub.as_(hub.account("researcher", institution="kek")) as c:
        cap = c.get("/api/v1/sites/aws-tokyo/capacity").json()
    [p] = cap["partitions"]
    assert p["elastic"] and p["spot"] and p["cpus_bootable"] == 48 and p["nodes_bootable"] == 1
    assert p["gpus"] == [{"model": "a10g", "total": 8, "free": 0, "bootable": 4}]
    assert p["resume_timeout_s"] == 1800
    assert cap["totals"]["cpus_bootable"] == 48 and cap["totals"]["gpus_bootable"] == {"a10g": 4}
    assert startable_text(p) == "1 node, 48 CPUs, a10g 4, start <= 1800 s", "what `cryomesh sites show` prints"


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"elastic": False}, "nodes_bootable, cpus_bootable, resume_timeout_s given, but the partition is not elastic"),
        ({"cpus_bootable": 60}, "cpus_allocated + cpus_idle + cpus_bootable (48 + 0 + 60) exceeds cpus_total (96)"),
        ({"nodes_bootable": 3}, "nodes_available + nodes_bootable exceeds nodes_total"),
        ({"gpus": [{"model": "a10g", "total": 8, "free": 5, "bootable": 4}]}, "free + bootable (5 + 4) exceeds total (8)"),
        ({"cpus_bootable": -1}, "cpus_bootable"),
    ],
)
def test_an_elastic_report_that_does_not_add_up_is_refused(hub: Hub, tmp_path: Path, over: dict[str, Any], words: str) -> None:
    token = _agent(hub, tmp_path)
    with hub.http(token) as c:
        r = c.post("/api/v1/sites/aws-tokyo/heartbeat", json=heartbeat_body(partitions=[elastic_partition(**over)]))
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "ValidationError" and words in r.json()["detail"], r.json()
        assert c.get("/api/v1/sites/aws-tokyo/capacity").status_code == 404, "nothing was stored"
