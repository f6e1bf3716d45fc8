"""Two hub processes on one PostgreSQL database, six agents of two sites polling and
claiming at once: every job runs exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.processes import AgentProcess, HubProcess, enrolled_agent, register_site
from tests.services import wait_for

pytestmark = pytest.mark.slow

JOBS = 24


def test_no_attempt_runs_twice(pg_url: str, tmp_path: Path) -> None:
    hub_a = HubProcess(tmp_path / "hub-a", db_url=pg_url)
    hub_b = HubProcess(tmp_path / "hub-b", db_url=pg_url, admin=hub_a.admin)
    agents: list[AgentProcess] = []
    runs = tmp_path / "runs.log"
    try:
        hub_a.start()
        hub_b.start()
        for site in ("alpha", "beta"):
            register_site(hub_a, site)
            for i, hub in enumerate((hub_a, hub_b, hub_a)):
                agent = enrolled_agent(hub, tmp_path, site, register=False, dirname=f"{site}-{i}",
                                       extra="[executor]\nmax_concurrent = 8\npoll_interval_s = 0.3\n")  # fmt: skip
                agent.start(hub.env)
                agents.append(agent)
        for site in ("alpha", "beta"):
            wait_for(lambda site=site: hub_a.site(site)["reachability"] == "online", 60, f"{site} online")  # type: ignore[misc]
        me = hub_a.account("researcher", institution="kek")
        ids = []
        for i in range(JOBS):
            hub = hub_a if i % 2 else hub_b
            body = {"name": f"j{i}", "kind": "generic.command", "resources": {"cpus": 1, "memory_gb": 0.5},
                    "command": ["sh", "-c", f"echo $CRYOMESH_JOB_ID >> {runs}; sleep 0.2"]}  # fmt: skip
            ids.append(hub.call("POST", "/api/v1/jobs", me, json=body)["id"])

        def all_final() -> bool:
            page = hub_a.api("GET", "/api/v1/jobs", params={"limit": 100})
            return sum(j["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR") for j in page["items"]) == JOBS

        wait_for(all_final, 180, "every job to finish", interval=0.5)
        page = hub_a.api("GET", "/api/v1/jobs", params={"limit": 100})
        assert Counter(j["state"] for j in page["items"]) == {"COMPLETE": JOBS}
        ran = Counter(runs.read_text().split())
        assert set(ran) == set(ids), "every job ran"
        assert max(ran.values()) == 1, f"a job ran twice: {[k for k, v in ran.items() if v > 1]}"
        spurious = [m for a in agents for m in a.messages() if "SYSTEM_ERROR" in m]
        assert spurious == [], f"no attempt should look lost: {spurious}"
        claimed_409 = sum("could not take attempt" in m for a in agents for m in a.messages())
        print(f"{claimed_409} claims lost to another agent (refused with 409)")
    finally:
        for a in agents:
            a.stop()
        hub_a.stop()
        hub_b.stop()
