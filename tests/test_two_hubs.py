"""Several hub processes on one PostgreSQL database: six agents of two sites polling and
claiming at once through two hubs (every job runs exactly once); a poll on one hub woken
by work committed on the other; `hub serve --workers N` with one sweep runner."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import heartbeat_body
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


def _waiting_polls(hub: HubProcess) -> float:
    match = re.search(r"^cryomesh_hub_long_polls_waiting (\S+)$", httpx.get(f"{hub.url}/metrics").text, re.M)
    return float(match.group(1)) if match else -1


def test_a_poll_on_one_hub_is_woken_by_an_offer_committed_on_another(pg_url: str, tmp_path: Path) -> None:
    """Hub B re-reads the database for its waiting polls only every 60 s here, so a poll
    there that answers within seconds of a job placed through hub A was woken by A's
    NOTIFY. The latencies are printed (the issue asks for < 100 ms; a busy machine may take
    longer, so the test's deadline is 5 s, still far below B's re-check)."""
    hub_a = HubProcess(tmp_path / "hub-a", db_url=pg_url, sweep_s=3600)
    hub_b = HubProcess(tmp_path / "hub-b", db_url=pg_url, admin=hub_a.admin, sweep_s=3600, long_poll_recheck_s=60)
    try:
        hub_a.start()
        hub_b.start()
        a, b = hub_a.helpers(), hub_b.helpers()
        a.create_site("alpha", partitions=[{"name": "cpu", "node_count": 4, "cores_per_node": 32, "memory_gb_per_node": 256}])
        token = b.agent_token(a.enroll_agent("alpha", tmp_path / "agent"))
        with b.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json=heartbeat_body(128, 128)).status_code == 200
        me = a.account("researcher", institution="kek")
        latencies: list[tuple[float, float]] = []
        for i in range(5):
            answer: list[tuple[float, list[dict[str, object]]]] = []

            def poll(answer: list[tuple[float, list[dict[str, object]]]] = answer) -> None:
                with b.http(token) as c:
                    r = c.get("/api/v1/sites/alpha/assignments", params={"wait": 30}, timeout=60)
                answer.append((time.monotonic(), r.json()["assignments"]))

            waiter = threading.Thread(target=poll)
            waiter.start()
            wait_for(lambda: _waiting_polls(hub_b) == 1, 60, "the poll waiting on hub B")
            with a.as_(me) as c:
                sent = time.monotonic()
                r = c.post("/api/v1/jobs", json={"name": f"j{i}", "kind": "generic.command", "command": ["true"],
                                                 "resources": {"cpus": 1}})  # fmt: skip
                committed = time.monotonic()  # the answer comes after the commit
            assert r.status_code == 201, r.text
            waiter.join(60)
            [(answered, offers)] = answer
            assert [o["job_id"] for o in offers] == [r.json()["id"]]
            latencies.append((answered - committed, answered - sent))
            with b.http(token) as c:  # take it, so the next poll waits again
                for o in offers:
                    assert c.post(f"/api/v1/attempts/{o['attempt_id']}/claim").status_code == 200
        # Between the submit's answer (after the commit) and its request (before it).
        spans = ", ".join(f"{lo * 1000:.0f}-{hi * 1000:.0f}" for lo, hi in latencies)
        print(f"poll on hub B answered {spans} ms after the offer's commit on hub A")
        assert max(hi for _, hi in latencies) < 5, f"woken by NOTIFY, not by the 60 s re-check: {latencies}"
    finally:
        hub_a.stop()
        hub_b.stop()


def test_hub_serve_workers_share_the_port_and_one_sweeps(pg_url: str, tmp_path: Path) -> None:
    """`hub serve --workers 2` on PostgreSQL: both workers start, requests are answered, and
    exactly one of them became the sweep runner (and sweeps: a silent site turns unreachable)."""
    hub = HubProcess(tmp_path / "hub", db_url=pg_url, sweep_s=0.2, args=("--workers", "2"))
    try:
        hub.start()
        h = hub.helpers()
        h.create_site("alpha")
        token = h.agent_token(h.enroll_agent("alpha", tmp_path / "agent"))
        with h.http(token) as c:
            assert c.post("/api/v1/sites/alpha/heartbeat", json={**heartbeat_body(), "interval_s": 0.5}).status_code == 200
        wait_for(lambda: hub.site("alpha")["reachability"] == "unreachable", 60, "the sweep to mark the silent site")
        for _ in range(20):  # requests spread over both workers
            assert httpx.get(f"{hub.url}/readyz").status_code == 200
        # Read before stopping: the workers stop one after the other, and the one still up may
        # take the role over at its next tick when the runner's connection closes (as it should).
        log = (tmp_path / "hub" / "hub.log").read_text()
        log = log[: log.rfind("\n") + 1]  # whole lines: a worker may be writing one
    finally:
        hub.stop()
    messages = [str(json.loads(line).get("message")) for line in log.splitlines() if line.startswith("{")]
    started = [m for m in messages if m.startswith("Started server process")]
    runners = [m for m in messages if "runs the sweeps" in m]
    assert len(started) == 2, messages
    assert len(runners) == 1, runners
