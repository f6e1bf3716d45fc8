"""The dashboard's cost views: a job's estimate as made at placement beside the actual run,
and spending and budget use per institution; who may see which.

Agents are played by the test over real HTTP, as in tests/hub/test_costs.py. Prices: 0.01
per CPU-hour at every site, so 8 CPUs cost 0.08 an hour; the hub's currency is EUR."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Account, Hub, running_hub
from tests.hub.test_costs import CHEAP
from tests.hub.test_jobs import _CLIENTS, SiteAgent, add_site, spec, submit, sweep_now

EIGHT_CPUS = {"cpus": 8, "walltime_s": 7200}  # generic.command: p50 is half the walltime until runs are learned


@pytest.fixture
def hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, max_attempts=2, currency="EUR") as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def run_attempt(agent: SiteAgent, hours: float, state: str = "COMPLETE", ended: datetime | None = None) -> str:
    """Play the site's agent: claim its one offer, run it ``hours`` ending at ``ended`` (now); the attempt's id."""
    [offer] = agent.poll()
    aid = str(offer["attempt_id"])
    assert agent.claim(aid).status_code == 200
    end = ended or datetime.now(UTC).replace(microsecond=0)
    assert agent.report(aid, 1, "RUNNING", started_at=_iso(end - timedelta(hours=hours))).status_code == 200
    r = agent.report(aid, 2, state, exit_code=0 if state == "COMPLETE" else None, ended_at=_iso(end))
    assert r.status_code == 200, r.text
    return aid


def _detail(hub: Hub, who: Account, job_id: str) -> httpx.Response:
    with hub.as_(who) as c:
        return c.get(f"/api/v1/dashboard/jobs/{job_id}")


def test_the_job_page_shows_the_estimate_made_at_placement_beside_the_actual_run(hub: Hub, tmp_path: Path) -> None:
    onprem = add_site(hub, tmp_path, "onprem", CHEAP)
    me = hub.account("researcher", institution="kek")
    first = submit(hub, me, spec(resources=EIGHT_CPUS)).json()
    run_attempt(onprem, hours=0.25)  # far quicker than the half-walltime prior: the model learns from it

    d = _detail(hub, me, first["id"]).json()
    assert d["currency"] == "EUR"
    [run] = d["runs"]
    est, actual = run["estimate"], run["actual"]
    assert run["attempt"] == 1 and run["site"] == "onprem"
    assert est["p50_s"] == 3600 and est["p90_s"] == 7200 and 0 < est["p10_s"] < 3600, est
    assert est["runs"] == 0 and est["copy_s"] == 0 and est["startup_s"] == 0
    assert est["cost"] == pytest.approx(0.08), "8 CPUs for the p50's hour at 0.01"
    with hub.as_(me) as c:
        placed = c.get(f"/api/v1/jobs/{first['id']}/placement").json()["latest"]
    parts = next(v["score_parts"] for v in placed["verdicts"] if v["site"] == "onprem")
    assert (est["p10_s"], est["p50_s"], est["p90_s"], est["finish_s"]) == (
        parts["run_p10_s"], parts["run_s"], parts["run_p90_s"], parts["finish_s"]
    ), "the very numbers the broker decided on"  # fmt: skip
    assert actual == {"wall_s": 900.0, "final_state": "COMPLETE", "cost": pytest.approx(0.02), "cost_shown": True}
    assert run["compared"] == {"ratio": 0.25, "inside_p10_p90": False}, "15 minutes is below the p10"

    # The model has learned since: a new job gets a new estimate, the first keeps the one it was placed with.
    second = submit(hub, me, spec(resources=EIGHT_CPUS)).json()
    [now_run] = _detail(hub, me, second["id"]).json()["runs"]
    assert now_run["estimate"]["runs"] == 1 and now_run["estimate"]["p50_s"] < 1800, now_run["estimate"]
    assert now_run["actual"] is None and now_run["compared"] is None, "not ended yet"
    assert _detail(hub, me, first["id"]).json()["runs"][0]["estimate"] == est, "not recomputed from what was learned"
    run_attempt(onprem, hours=now_run["estimate"]["p50_s"] / 3600)
    [done] = _detail(hub, me, second["id"]).json()["runs"]
    assert done["compared"] == {"ratio": 1.0, "inside_p10_p90": True}


def test_an_attempts_cost_is_shown_only_to_whom_the_ledger_shows_it(hub: Hub, tmp_path: Path) -> None:
    kek_site = add_site(hub, tmp_path, "kek-site", CHEAP, institution="kek")
    riken = hub.account("researcher", institution="riken")
    job = submit(hub, riken, spec(resources=EIGHT_CPUS)).json()
    run_attempt(kek_site, hours=1, state="SYSTEM_ERROR")  # requeued: not the job's fault
    osaka_site = add_site(hub, tmp_path, "osaka-site", CHEAP, institution="osaka")
    sweep_now(hub)
    run_attempt(osaka_site, hours=0.5)

    mine = _detail(hub, riken, job["id"]).json()["runs"]
    assert [(r["site"], r["actual"]["final_state"], r["actual"]["cost"]) for r in mine] == [
        ("kek-site", "SYSTEM_ERROR", pytest.approx(0.08)), ("osaka-site", "COMPLETE", pytest.approx(0.04))
    ], "the job's institution sees what each attempt cost it"  # fmt: skip
    assert mine[0]["compared"] is None, "a run that failed is not compared with the estimate"
    # Osaka's site admin sees the job while it is at Osaka, and what Osaka ran, not what kek's site charged.
    host = _detail(hub, hub.account("site_admin", site="osaka-site"), job["id"]).json()["runs"]
    assert host[0]["actual"] == {"wall_s": 3600.0, "final_state": "SYSTEM_ERROR", "cost": None, "cost_shown": False}
    assert host[1]["actual"]["cost"] == pytest.approx(0.04) and host[1]["actual"]["cost_shown"]
    assert host[0]["estimate"]["cost"] == pytest.approx(0.08), "estimates are in the placement, which they see already"
    for who in (hub.account("site_admin", site="kek-site"), hub.account("researcher", institution="osaka")):
        r = _detail(hub, who, job["id"])
        assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": f"no job {job['id']!r}"}
    with hub.http(kek_site.token) as c:
        r = c.get(f"/api/v1/dashboard/jobs/{job['id']}")
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"


def _usage(hub: Hub, who: Account, **params: Any) -> httpx.Response:
    with hub.as_(who) as c:
        return c.get("/api/v1/dashboard/usage", params=params)


def test_the_usage_page_shows_cost_and_budget_use_per_institution(hub: Hub, tmp_path: Path) -> None:
    kek_site = add_site(hub, tmp_path, "kek-site", CHEAP, institution="kek")
    osaka_site = add_site(hub, tmp_path, "osaka-site", CHEAP, institution="osaka")
    kek = hub.account("researcher", institution="kek")
    osaka = hub.account("researcher", institution="osaka")
    for who, agent, hours, ended in (
        (kek, kek_site, 2, None),  # 0.16 this month
        (kek, kek_site, 1, datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)),  # 0.08, before this month
        (osaka, osaka_site, 1, None),  # 0.08
    ):
        submit(hub, who, spec(resources=EIGHT_CPUS, placement={"allowed_sites": [agent.name]}))
        run_attempt(agent, hours, ended=ended)
    with hub.as_admin() as c:
        assert c.put("/api/v1/budgets/kek", json={"monthly_limit": 1, "warn_at": 0.1}).status_code == 200
        assert c.put("/api/v1/budgets/osaka", json={"monthly_limit": 0.05, "enforce": False}).status_code == 200
        budgets = {b["institution"]: b for b in c.get("/api/v1/budgets").json()}

    d = _usage(hub, hub.admin, days=60).json()
    assert d["currency"] == "EUR" and d["month"] == datetime.now(UTC).strftime("%Y-%m")
    rows = {r["institution"]: r for r in d["costs"]}
    assert (rows["kek"]["month"], rows["kek"]["period"]) == (0.16, 0.24), "the 40-day-old run is in the period only"
    assert (rows["osaka"]["month"], rows["osaka"]["period"]) == (0.08, 0.08)
    for name, state, enforce in (("kek", "warning", True), ("osaka", "exceeded", False)):
        b = rows[name]["budget"]
        assert (b["state"], b["enforce"], b["spent"]) == (state, enforce, rows[name]["month"]), b
        assert b == budgets[name], "as the budgets API says"
    assert rows["kek"]["budget"]["warn_at"] == 0.1 and rows["osaka"]["budget"]["monthly_limit"] == 0.05
    month_only = _usage(hub, hub.admin, days=30).json()["costs"]
    assert {r["institution"]: r["period"] for r in month_only} == {"kek": 0.16, "osaka": 0.08}
    assert [r["institution"] for r in _usage(hub, hub.admin, institution="osaka").json()["costs"]] == ["osaka"]

    # Others see their own institution; asking for another's is answered as if it had none.
    for who, own, other in ((kek, "kek", "osaka"), (hub.account("site_admin", site="osaka-site"), "osaka", "kek")):
        seen = _usage(hub, who).json()
        assert [r["institution"] for r in seen["costs"]] == [own] and seen["costs"][0]["budget"] == budgets[own]
        assert [r["institution"] for r in seen["institutions"]] == [own]
        r = _usage(hub, who, institution=other)
        assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": f"no usage for institution {other!r}"}
        assert _usage(hub, who, institution=own).json()["costs"][0]["month"] == rows[own]["month"]
    with hub.http(kek_site.token) as c:
        r = c.get("/api/v1/dashboard/usage", params={"institution": "kek"})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    r = _usage(hub, kek, institution="")
    assert r.status_code == 422 and "institution" in r.json()["detail"]
