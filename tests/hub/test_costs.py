"""What work costs: partition prices a person writes (strict), the broker keeping a job within
its max_cost and deadline, cost in the usage ledger, and monthly budgets per institution
(who may read and set them; refusal once spent; warnings near the limit).

Agents are played by the test over real HTTP, as in tests/hub/test_jobs.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.broker.rules import PartitionView
from hub.costs.pricing import cheapest
from shared.schemas.sites import Partition, PartitionCost
from tests.helpers import Hub, running_hub
from tests.hub.test_jobs import CPU_SITE, SiteAgent, add_site, spec, submit

AS_OF = "2026-11-01"
CHEAP = [{**CPU_SITE[0], "name": "cheap", "node_count": 1, "cores_per_node": 16,
          "cost": {"cpu_hour": 0.01, "gpu_hour": 0.5, "as_of": AS_OF}}]  # fmt: skip
CLOUD = [{"name": "c6i", "node_count": 10, "cores_per_node": 32, "memory_gb_per_node": 128,
          "cost": {"instance_type": "c6i.8xlarge", "on_demand_node_hour": 1.36, "spot_node_hour": 0.5, "node_startup_s": 300,
                   "as_of": AS_OF, "source": "https://aws.amazon.com/ec2/pricing/on-demand/"}}]  # fmt: skip


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """A hub whose sweep the tests do not wait for (placement happens at submission)."""
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, max_attempts=2) as h:
        yield h


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# -- prices are strict input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "words"),
    [
        ({"cpu_hours": 0.01, "as_of": AS_OF}, "cpu_hours"),
        ({"cpu_hour": 0.01}, "as_of"),
        ({"cpu_hour": 0.01, "on_demand_node_hour": 2, "instance_type": "x", "as_of": AS_OF}, "not both"),
        ({"on_demand_node_hour": 2, "as_of": AS_OF}, "instance_type"),
        ({"cpu_hour": -1, "as_of": AS_OF}, "cpu_hour"),
        ({"as_of": AS_OF}, "give cpu_hour/gpu_hour rates or on_demand_node_hour/spot_node_hour prices"),
    ],
)
def test_partition_prices_refuse_typos_and_mixtures(jhub: Hub, cost: dict[str, Any], words: str) -> None:
    part = {**CPU_SITE[0], "cost": cost}
    with jhub.as_admin() as c:
        r = c.post("/api/v1/sites", json={**_site_body("priced"), "partitions": [part]})
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"], r.json()
    with jhub.as_admin() as c:
        assert c.get("/api/v1/sites/priced").status_code == 404, "nothing was stored"


def test_a_typo_in_a_price_names_the_field_meant(jhub: Hub) -> None:
    with jhub.as_admin() as c:
        r = c.post(
            "/api/v1/sites",
            json={**_site_body("priced"), "partitions": [{**CPU_SITE[0], "cost": {"cpu_hours": 1, "as_of": AS_OF}}]},
        )
    assert r.status_code == 422 and "cpu_hour" in r.json()["detail"].split("cpu_hours", 1)[1], r.json()


def test_spot_partition_needs_a_spot_price(jhub: Hub) -> None:
    part = {**CLOUD[0], "spot": True, "cost": {**CLOUD[0]["cost"], "spot_node_hour": None}}
    with jhub.as_admin() as c:
        r = c.post("/api/v1/sites", json={**_site_body("priced"), "partitions": [part]})
    assert r.status_code == 422 and "spot partition needs cost.spot_node_hour" in r.json()["detail"]


def _site_body(name: str) -> dict[str, Any]:
    return {"name": name, "institution": "kek", "display_name": name, "country": "JP"}


# -- pricing ---------------------------------------------------------------------------------


def _view(p: dict[str, Any]) -> PartitionView:
    part = Partition.model_validate(p)
    return PartitionView(part.name, part.node_count, part.cores_per_node, part.memory_gb_per_node, part.gpu_model,
                         part.gpus_per_node, part.spot, part.cost)  # fmt: skip


def test_rates_charge_what_is_held_and_nodes_charge_whole_nodes_with_start_up() -> None:
    cheap, cloud = _view(CHEAP[0]), _view(CLOUD[0])
    on_prem = cheapest([cheap], cpus=8, gpus=0, gpu_models=None)
    assert on_prem is not None and on_prem.per_hour == pytest.approx(0.08) and on_prem.cost(7200) == pytest.approx(0.16)
    one_node = cheapest([cloud], cpus=8, gpus=0, gpu_models=None)
    assert one_node is not None and one_node.per_hour == pytest.approx(1.36), "8 CPUs still take a whole node"
    assert one_node.cost(3600) == pytest.approx(1.36 * (3600 + 300) / 3600), "a fresh node is paid for while it boots"
    three = cheapest([cloud], cpus=70, gpus=0, gpu_models=None)
    assert three is not None and three.per_hour == pytest.approx(3 * 1.36), "70 CPUs need 3 nodes of 32"
    assert cheapest([cheap, cloud], cpus=8, gpus=0, gpu_models=None).partition == "cheap"  # type: ignore[union-attr]
    assert cheapest([cheap], cpus=17, gpus=0, gpu_models=None) is None, "it does not fit 16 cores"
    spot = _view({**CLOUD[0], "name": "c6i-spot", "spot": True})
    assert cheapest([cloud, spot], cpus=8, gpus=0, gpu_models=None).partition == "c6i-spot"  # type: ignore[union-attr]
    free = _view({**CPU_SITE[0], "name": "free"})
    assert cheapest([free], cpus=8, gpus=0, gpu_models=None).per_hour == 0.0  # type: ignore[union-attr]


def test_gpu_jobs_are_priced_on_partitions_with_their_gpus() -> None:
    price = {"instance_type": "g5.12xlarge", "on_demand_node_hour": 5.672, "as_of": AS_OF}
    gpus = _view({"name": "g5", "node_count": 4, "cores_per_node": 48, "memory_gb_per_node": 192, "gpu_model": "a10g",
                  "gpus_per_node": 4, "cost": price})  # fmt: skip
    cpus = _view(CHEAP[0])
    priced = cheapest([cpus, gpus], cpus=4, gpus=6, gpu_models={"a10g"})
    assert priced is not None and priced.partition == "g5" and priced.per_hour == pytest.approx(2 * 5.672), "6 GPUs: 2 nodes"
    assert cheapest([cpus, gpus], cpus=4, gpus=1, gpu_models={"h100"}) is None
    assert PartitionCost.model_validate({"gpu_hour": 2, "as_of": AS_OF}).cpu_hour is None


# -- the broker keeps within max_cost and the deadline ---------------------------------------


def test_max_cost_keeps_a_job_off_the_dear_site_and_says_why(jhub: Hub, tmp_path: Path) -> None:
    onprem = add_site(jhub, tmp_path, "onprem", CHEAP)
    add_site(jhub, tmp_path, "cloud", CLOUD, institution="aws")
    me = jhub.account("researcher", institution="kek")
    # onprem learns that it is slow: a job expected to take an hour ran for two.
    submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 7200}, placement={"allowed_sites": ["onprem"]}))
    _run(onprem, hours=2)
    free_choice = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 7200})).json()
    assert free_choice["site"] == "cloud", "without a cost cap the site that finishes first wins"
    capped = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 7200}, max_cost=1.0)).json()
    assert capped["site"] == "onprem"
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{capped['id']}/placement").json()
    verdicts = {v["site"]: v for v in why["latest"]["verdicts"]}
    assert verdicts["cloud"]["reasons"] == ["would cost ≈ 1.47 (1 h 00 m on c6i + 5 m start-up), above the job's max_cost 1"]
    [priced] = [r for r in verdicts["onprem"]["reasons"] if r.startswith("≈")]
    assert priced.endswith(" on cheap") and float(priced.split()[1]) > 0.04, "priced at what onprem learned it takes"
    r = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 7200}, max_cost=0.01))
    assert r.status_code == 409
    assert "onprem: would cost ≈ 0.0" in r.json()["detail"] and "above the job's max_cost 0.01" in r.json()["detail"]


def test_deadline_rules_out_sites_that_cannot_promise_it(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "onprem", CHEAP)
    add_site(jhub, tmp_path, "cloud", CLOUD, institution="aws")
    me = jhub.account("researcher", institution="kek")

    def verdicts(job: dict[str, Any]) -> dict[str, Any]:
        with jhub.as_(me) as c:
            why = c.get(f"/api/v1/jobs/{job['id']}/placement").json()
        return {v["site"]: v for v in why["latest"]["verdicts"]} | {"explanation": why["explanation"]}

    soon = _now() + timedelta(hours=2)
    fits = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 3600}, deadline=_iso(soon))).json()
    assert fits["site"] == "onprem" and verdicts(fits)["cloud"]["eligible"], "both can end within two hours"
    tight = _now() + timedelta(minutes=62)
    job = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 3600}, deadline=_iso(tight))).json()
    assert job["site"] == "onprem"
    cloud = verdicts(job)["cloud"]
    assert not cloud["eligible"] and "after the deadline" in cloud["reasons"][-1], "the cloud's 5 minutes of boot miss it"
    missed = submit(jhub, me, spec(resources={"cpus": 4, "walltime_s": 3 * 3600}, deadline=_iso(soon))).json()
    assert missed["state"] == "QUEUED" and missed["site"] is None
    why = verdicts(missed)
    assert "after the deadline" in why["explanation"], why["explanation"]
    assert all("after the deadline" in why[s]["reasons"][-1] for s in ("onprem", "cloud"))
    past = submit(jhub, me, spec(deadline=_iso(_now() - timedelta(minutes=1))))
    assert past.status_code == 409 and "has already passed" in past.json()["detail"]
    naive = submit(jhub, me, spec(deadline="2030-01-01T00:00:00"))
    assert naive.status_code == 422 and "deadline needs a time zone" in naive.json()["detail"]


# -- the ledger and budgets ------------------------------------------------------------------


def _run(agent: SiteAgent, hours: float) -> None:
    """Play the site's agent: claim the offer and run it for ``hours`` ending now."""
    [offer] = agent.poll()
    aid = offer["attempt_id"]
    assert agent.claim(aid).status_code == 200
    end = _now()
    start = end - timedelta(hours=hours)
    assert agent.report(aid, 1, "RUNNING", started_at=_iso(start)).status_code == 200
    assert agent.report(aid, 2, "COMPLETE", exit_code=0, ended_at=_iso(end)).json()["job_state"] == "COMPLETE"


def test_the_ledger_books_what_each_attempt_cost(jhub: Hub, tmp_path: Path) -> None:
    onprem = add_site(jhub, tmp_path, "onprem", CHEAP)
    me = jhub.account("researcher", institution="kek")
    submit(jhub, me, spec(resources={"cpus": 8}))
    _run(onprem, hours=2)
    with jhub.as_(me) as c:
        usage = c.get("/api/v1/usage").json()
    [row] = usage["consumed_by_institution"]
    assert usage["currency"] == "USD" and row["cpu_hours"] == 16.0 and row["cost"] == pytest.approx(0.16)


def test_budgets_who_may_read_and_set_them(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "onprem", CHEAP)
    kek = jhub.account("researcher", institution="kek")
    other = jhub.account("researcher", institution="osaka")
    site_admin = jhub.account("site_admin", site="onprem")
    body = {"monthly_limit": 100, "warn_at": 0.5}
    for who in (kek, site_admin):
        with jhub.as_(who) as c:
            r = c.put("/api/v1/budgets/kek", json=body)
        assert r.status_code == 403 and r.json()["detail"] == "only network admins set budgets"
    with jhub.as_admin() as c:
        r = c.put("/api/v1/budgets/kek", json={**body, "warn_ratio": 0.5})
        assert r.status_code == 422 and "warn_ratio" in r.json()["detail"]
        r = c.put("/api/v1/budgets/kek", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "ok" and r.json()["spent"] == 0 and r.json()["currency"] == "USD"
        c.put("/api/v1/budgets/osaka", json=body)
        assert [b["institution"] for b in c.get("/api/v1/budgets").json()] == ["kek", "osaka"]
    with jhub.as_(kek) as c:
        assert c.get("/api/v1/budgets/kek").json()["monthly_limit"] == 100
        assert [b["institution"] for b in c.get("/api/v1/budgets").json()] == ["kek"]
        r = c.delete("/api/v1/budgets/kek")
        assert r.status_code == 403 and "network admins" in r.json()["detail"]
    with jhub.as_(other) as c:
        r = c.get("/api/v1/budgets/kek")
        assert r.status_code == 404 and r.json()["detail"] == "no budget for institution 'kek'"
    agent_http = jhub.http(jhub.agent_token(jhub.enroll_agent("onprem", tmp_path / "agent")))
    assert agent_http.get("/api/v1/budgets").status_code == 403
    agent_http.close()
    with jhub.as_admin() as c:
        assert c.delete("/api/v1/budgets/osaka").status_code == 204
        assert c.get("/api/v1/budgets/osaka").status_code == 404


def test_a_spent_budget_refuses_new_jobs_and_warns_before(jhub: Hub, tmp_path: Path) -> None:
    onprem = add_site(jhub, tmp_path, "onprem", CHEAP)
    me = jhub.account("researcher", institution="kek")
    with jhub.as_admin() as c:
        assert c.put("/api/v1/budgets/kek", json={"monthly_limit": 0.2, "warn_at": 0.5}).status_code == 200
    first = submit(jhub, me, spec(resources={"cpus": 8}))
    assert first.status_code == 201 and first.json()["warnings"] == []
    _run(onprem, hours=1.5)  # 12 CPU-hours at 0.01: 0.12 of 0.20
    second = submit(jhub, me, spec(resources={"cpus": 8}))
    assert second.status_code == 201
    [warning] = second.json()["warnings"]
    assert warning.startswith("institution kek has spent 0.12 of its 0.20 USD budget for ") and warning.endswith("(60%)")
    _run(onprem, hours=1.5)  # 0.24 of 0.20
    refused = submit(jhub, me, spec(resources={"cpus": 8}))
    assert refused.status_code == 409 and refused.json()["error"] == "Conflict"
    assert "has spent 0.24 of its 0.20 USD budget" in refused.json()["detail"]
    assert "new jobs are refused" in refused.json()["detail"]
    with jhub.as_(me) as c:
        assert c.get("/api/v1/jobs").json()["total"] == 2, "the refused job was not stored"
        assert c.get("/api/v1/budgets/kek").json()["state"] == "exceeded"
    with jhub.as_admin() as c:
        assert c.put("/api/v1/budgets/kek", json={"monthly_limit": 0.2, "enforce": False}).status_code == 200
    allowed = submit(jhub, me, spec(resources={"cpus": 8}))
    assert allowed.status_code == 201 and "over budget; the limit is not enforced" in allowed.json()["warnings"][0]


# -- the command line ----------------------------------------------------------------------


def test_cli_sets_and_shows_budgets_and_prints_submit_warnings(jhub: Hub, tmp_path: Path) -> None:
    from tests.cli.test_cli import run

    onprem = add_site(jhub, tmp_path, "onprem", CHEAP)
    me = jhub.account("researcher", institution="kek")
    out = run(jhub, "budgets", "set", "kek", "0.1", "--warn-at", "0.5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kek" in out.stdout and "0.10 USD" in out.stdout and "50%" in out.stdout
    denied = run(jhub, "budgets", "set", "kek", "1000", account=me)
    assert denied.returncode == 1 and "only network admins set budgets" in denied.stdout
    submit(jhub, me, spec(resources={"cpus": 8}))
    _run(onprem, hours=1)  # 0.08 of 0.10
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: more\nkind: generic.command\ncommand: [echo, hi]\nresources: {cpus: 8}\n")
    out = run(jhub, "jobs", "submit", str(job_file), account=me)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: institution kek has spent 0.08 of its 0.10 USD budget" in out.stdout
    shown = run(jhub, "budgets", "show", "kek", account=me)
    assert shown.returncode == 0 and "warning" in shown.stdout and "0.08 USD" in shown.stdout
    usage = run(jhub, "usage", account=me)
    assert "cost (USD)" in usage.stdout and "0.08" in usage.stdout


def test_yaml_dates_and_times_reach_the_hub_as_iso_strings(tmp_path: Path) -> None:
    from cryomesh_cli.common import load_document
    from shared.schemas.jobs import JobSpec

    f = tmp_path / "job.yaml"
    f.write_text("name: j\nkind: generic.command\ncommand: [x]\ndeadline: 2027-01-31T18:00:00+09:00\n")
    doc = load_document(f, JobSpec)
    assert doc["deadline"] == "2027-01-31T18:00:00+09:00", "YAML parsed a datetime, which JSON cannot carry"
    site = tmp_path / "site.yaml"
    site.write_text("name: s\ncost: {cpu_hour: 1, as_of: 2026-11-01}\nnode_count: 1\ncores_per_node: 1\nmemory_gb_per_node: 1\n")
    assert load_document(site, Partition)["cost"]["as_of"] == "2026-11-01"
