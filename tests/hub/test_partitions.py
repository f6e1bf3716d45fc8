"""A job goes to a partition of its site, not only to the site (issue 12): among the site's
partitions it may use (spot twins only for preemptible jobs) and that have room now, the one
where it finishes first, near-ties broken by cost; a tight max_cost or a deadline picks among
them too. The decision names the partition, the agent is told to submit there, and the usage
ledger charges a cloud node's start-up only when the agent says a node was started.

The rules are pure functions over in-memory views; the hub's part (the offer carrying the
partition, the ledger) over real HTTP with the test playing the agent, as in tests/hub/test_costs.py.
The agent submitting to the partition with a real Slurm: tests/test_elastic_slurm.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.broker.batch import place_batch
from hub.broker.rules import PartitionNow, PartitionView, SiteView, evaluate
from shared.schemas.jobs import JobSpec
from shared.schemas.sites import PartitionCost, SitePolicy
from tests.helpers import Hub, running_hub
from tests.hub.test_jobs import SiteAgent, add_site, spec, submit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
C5 = {"instance_type": "c5.9xlarge", "on_demand_node_hour": 1.53, "spot_node_hour": 0.6, "node_startup_s": 300,
      "as_of": "2026-11-01"}  # fmt: skip
ON_DEMAND, SPOT = "c5-vcpu36", "c5-vcpu36-spot"


def twins(on_demand: tuple[int, int], spot: tuple[int, int], reported: bool = True) -> SiteView:
    """A ParallelCluster site with GoToCloud's twins, 2 nodes of 36 CPUs each: per twin (CPUs
    free on nodes up now, CPUs on nodes that can be started)."""
    cost = PartitionCost.model_validate(C5)
    parts = [PartitionView(ON_DEMAND, 2, 36, 72, None, 0, False, cost), PartitionView(SPOT, 2, 36, 72, None, 0, True, cost)]
    v = SiteView(
        id=1, name="aws", institution="aws", country="JP", status="active", reachability="online", partitions=parts,
        software=[], policy=SitePolicy(), has_snapshot=True,
    )  # fmt: skip
    v.cpus_total = 144
    v.cpus_free, v.cpus_bootable = on_demand[0] + spot[0], on_demand[1] + spot[1]
    if reported:
        v.part_now = {name: PartitionNow(cpus_free=up, cpus_bootable=boot, boot_s=60)
                      for name, (up, boot) in ((ON_DEMAND, on_demand), (SPOT, spot))}  # fmt: skip
    return v


def job(cpus: int = 8, walltime_s: int = 14_400, preemptible: bool = False, **kw: Any) -> JobSpec:
    """A job whose run time is half its walltime (no size model for generic commands)."""
    return JobSpec.model_validate({"name": "j", "kind": "generic.command", "command": ["true"],
                                   "resources": {"cpus": cpus, "walltime_s": walltime_s},
                                   "placement": {"preemptible": preemptible}, **kw})  # fmt: skip


def test_a_preemptible_job_goes_to_the_spot_twin_when_it_finishes_as_soon() -> None:
    v = evaluate(job(preemptible=True), "kek", twins(on_demand=(36, 36), spot=(36, 36)), NOW, set())
    assert v.eligible and v.partition == SPOT and v.queue == SPOT, v.reasons
    assert v.parts["cost"] == pytest.approx(0.6 * 2, abs=1e-3), "priced as spot: 2 h at 0.60"
    assert any(r.startswith(f"partition {SPOT} (spot): soonest finish") and f"{ON_DEMAND}: ~2 h 00 m, ≈ 3.06" in r
               for r in v.reasons), v.reasons  # fmt: skip


def test_a_job_that_is_not_preemptible_never_goes_to_a_spot_partition() -> None:
    v = evaluate(job(), "kek", twins(on_demand=(0, 72), spot=(72, 0)), NOW, set())
    assert v.eligible and v.partition == ON_DEMAND and v.parts["startup_s"] == 300, "it waits for an on-demand node"
    full = evaluate(job(), "kek", twins(on_demand=(0, 0), spot=(72, 0)), NOW, set())
    assert not full.eligible and not full.never
    assert full.reasons == [f"no partition has room now: {ON_DEMAND}: 0 CPUs free"], full.reasons


def test_a_start_up_that_delays_the_finish_outweighs_the_spot_price_and_a_near_tie_does_not() -> None:
    site = twins(on_demand=(36, 36), spot=(0, 72))  # spot nodes are powered down: 5 minutes to start one
    short = evaluate(job(walltime_s=2400, preemptible=True), "kek", site, NOW, set())
    assert short.partition == ON_DEMAND and short.parts["startup_s"] == 0, "20 m run: 25 m on spot is not a near-tie"
    long = evaluate(job(walltime_s=14_400, preemptible=True), "kek", site, NOW, set())
    assert long.partition == SPOT and long.parts["startup_s"] == 300, "2 h run: 2 h 05 m on spot is, and spot costs less"


def test_a_tight_max_cost_picks_the_cheaper_partition_of_the_same_site() -> None:
    site = twins(on_demand=(36, 36), spot=(0, 72))
    fast = evaluate(job(walltime_s=2400, preemptible=True), "kek", site, NOW, set())
    assert fast.partition == ON_DEMAND and fast.parts["cost"] == pytest.approx(1.53 * 1200 / 3600, abs=1e-3)
    tight = evaluate(job(walltime_s=2400, preemptible=True, max_cost=0.4), "kek", site, NOW, set())
    assert tight.eligible and tight.partition == SPOT, tight.reasons
    assert tight.parts["cost"] == pytest.approx(0.6 * 1500 / 3600, abs=1e-3), "spot, with its node's start-up"
    none = evaluate(job(walltime_s=2400, max_cost=0.4), "kek", site, NOW, set())
    assert none.never and "above the job's max_cost 0.4" in none.reasons[0], "not preemptible: on demand only, too dear"


def test_a_deadline_only_the_partition_with_a_node_up_meets_picks_it() -> None:
    site = twins(on_demand=(36, 36), spot=(0, 72))
    free = evaluate(job(preemptible=True), "kek", site, NOW, set())
    assert free.partition == SPOT, "without a deadline: a near-tie, and spot costs less"
    soon = NOW + timedelta(seconds=14_400 + 120)  # the p90 (the walltime) fits, not after a 5 m start-up
    v = evaluate(job(preemptible=True, deadline=soon.isoformat()), "kek", site, NOW, set())
    assert v.eligible and v.partition == ON_DEMAND and v.parts["startup_s"] == 0, v.reasons
    sooner = evaluate(job(preemptible=True, deadline=(NOW + timedelta(hours=1)).isoformat()), "kek", site, NOW, set())
    assert not sooner.eligible and "after the deadline" in sooner.reasons[0], sooner.reasons


def test_a_pass_fills_a_partition_then_uses_its_twin() -> None:
    """Reservations are per partition: the second job finds the spot twin's nodes taken."""
    site = twins(on_demand=(36, 0), spot=(36, 0))
    results = place_batch([(job(36, preemptible=True), "kek"), (job(36, preemptible=True), "kek")], [site], NOW)
    assert [r.verdict.partition if r.verdict else None for r in results] == [SPOT, ON_DEMAND]


def test_partitions_the_agent_did_not_report_are_chosen_but_not_named_to_it() -> None:
    """The site's scheduler names its queues otherwise (or the local backend reports one
    'local' partition): the decision still prices a partition, and the agent uses its default."""
    v = evaluate(job(preemptible=True), "kek", twins(on_demand=(36, 36), spot=(36, 36), reported=False), NOW, set())
    assert v.eligible and v.partition == SPOT and v.queue is None


# -- the hub: the offer names the partition; the ledger charges start-up only for a started node --


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600) as h:
        yield h


CLOUD_TWINS = [
    {"name": name, "node_count": 4, "cores_per_node": 32, "memory_gb_per_node": 128, "spot": spot,
     "cost": {"instance_type": "c6i.8xlarge", "on_demand_node_hour": 1.36, "spot_node_hour": 0.5, "node_startup_s": 300,
              "as_of": "2026-11-01"}}
    for name, spot in (("c6i", False), ("c6i-spot", True))
]  # fmt: skip


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _run(agent: SiteAgent, node_started: bool) -> dict[str, Any]:
    """Play the agent: take the offer, run it for two hours ending now, saying whether a node was started."""
    [offer] = agent.poll()
    aid = offer["attempt_id"]
    assert agent.claim(aid).status_code == 200
    end = datetime.now(UTC).replace(microsecond=0)
    r = agent.report(aid, 1, "RUNNING", started_at=_iso(end - timedelta(hours=2)), node_started=node_started)
    assert r.status_code == 200, r.text
    assert agent.report(aid, 2, "COMPLETE", exit_code=0, ended_at=_iso(end)).json()["job_state"] == "COMPLETE"
    return offer


def test_the_offer_names_the_partition_and_the_ledger_charges_start_up_only_for_a_started_node(jhub: Hub, tmp_path: Path) -> None:
    aws = add_site(jhub, tmp_path, "aws", CLOUD_TWINS, software=[])
    me = jhub.account("researcher", institution="kek")
    body = spec(resources={"cpus": 32, "walltime_s": 7200})
    costs = []
    for preemptible, node_started in ((True, False), (True, True), (False, True)):
        r = submit(jhub, me, {**body, "placement": {"preemptible": preemptible}})
        assert r.status_code == 201, r.text
        offer = _run(aws, node_started)
        assert offer["partition"] == ("c6i-spot" if preemptible else "c6i"), offer
        with jhub.as_(me) as c:
            page = c.get(f"/api/v1/dashboard/jobs/{r.json()['id']}").json()
            placement = c.get(f"/api/v1/jobs/{r.json()['id']}/placement").json()
        [run] = page["runs"]
        assert run["partition"] == offer["partition"]
        costs.append(run["actual"]["cost"])
        assert f"partition {offer['partition']}" in placement["history"][-1]["summary"]
    assert costs == pytest.approx([0.5 * 2, 0.5 * (2 + 300 / 3600), 1.36 * (2 + 300 / 3600)], abs=1e-4), costs
    with jhub.as_(me) as c:
        [row] = c.get("/api/v1/usage").json()["consumed_by_institution"]
    assert row["cost"] == pytest.approx(sum(costs), abs=0.01), "the usage page sums the same ledger"
