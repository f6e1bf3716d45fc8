"""The hub and agents as real processes talking HTTP: enrollment through the CLI,
heartbeats, a killed agent marked unreachable and back on restart, an agent riding out
a hub restart, tokens refreshed before they expire, a revoked agent stopping."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.processes import HubProcess, enrolled_agent
from tests.services import SlurmCluster, wait_for

pytestmark = pytest.mark.slow

HEARTBEAT_S = 1.0
SWEEP_S = 0.2


@pytest.fixture
def hub_proc(tmp_path: Path) -> Iterator[HubProcess]:
    h = HubProcess(tmp_path, sweep_s=SWEEP_S, token_lifetime_s=6)
    h.start()
    yield h
    h.stop()


def unreachable_logged_at(hub: HubProcess, site: str) -> datetime:
    """When the hub's sweep logged ``site`` unreachable (its log's local time, as UTC)."""
    lines = [json.loads(line) for line in (hub.tmp / "hub.log").read_text().splitlines() if line.startswith("{")]
    (ts,) = [line["ts"] for line in lines if line["message"].startswith(f"site {site} is unreachable")]
    return datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)


def test_killed_agent_goes_unreachable_and_comes_back(hub_proc: HubProcess, tmp_path: Path) -> None:
    agent = enrolled_agent(hub_proc, tmp_path, "alpha", cli_enroll=True)
    agent.start(hub_proc.env)
    try:
        wait_for(lambda: hub_proc.site("alpha")["reachability"] == "online", 60, "the first heartbeat")
        summary = hub_proc.api("GET", "/api/v1/network/summary")
        assert summary["cpus_total"] == os.cpu_count(), "the agent reported this machine's real CPUs"

        assert agent.proc is not None
        agent.proc.kill()  # SIGKILL: no goodbye, the hub must notice by itself
        agent.proc.wait()
        # Generous: the hub's own clock says when it decided (below), not how fast this test saw it.
        wait_for(lambda: hub_proc.site("alpha")["reachability"] == "unreachable", 60, "the site to be marked unreachable")
        last_beat = datetime.fromisoformat(hub_proc.site("alpha")["last_heartbeat_at"])
        took = (unreachable_logged_at(hub_proc, "alpha") - last_beat).total_seconds()
        # 3 missed beats after the last one received, found by the sweep tick before or after
        # the deadline; the hub logs the moment (the sweep may start late on a busy machine: 2 s).
        assert took <= 3 * HEARTBEAT_S + SWEEP_S + 2, f"marked unreachable {took:.2f}s after the last heartbeat"
        assert took >= 3 * HEARTBEAT_S - SWEEP_S - 0.1, f"not before 3 intervals of silence ({took:.2f}s)"

        agent.start(hub_proc.env)
        wait_for(lambda: hub_proc.site("alpha")["reachability"] == "online", 60, "the restarted agent's heartbeat")
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.proc.terminate()
            agent.proc.wait(60)
    assert agent.proc.returncode == 0, "SIGTERM stops the agent cleanly"


def test_agent_rides_out_a_hub_restart_and_refreshes_tokens(hub_proc: HubProcess, tmp_path: Path) -> None:
    agent = enrolled_agent(hub_proc, tmp_path, "alpha", cli_enroll=True)
    agent.start(hub_proc.env)
    try:
        wait_for(lambda: hub_proc.site("alpha")["reachability"] == "online", 60, "the first heartbeat")
        hub_proc.stop()
        time.sleep(3 * HEARTBEAT_S)  # the agent keeps trying while the hub is away
        hub_proc.start()
        hub_proc._token = None
        before = hub_proc.site("alpha")["last_heartbeat_at"]
        wait_for(lambda: hub_proc.site("alpha")["last_heartbeat_at"] != before, 60, "heartbeats after the hub restart")
        time.sleep(6)  # more than one token lifetime (6 s): the agent must have refreshed
        assert hub_proc.site("alpha")["reachability"] == "online"
    finally:
        assert agent.proc is not None
        agent.proc.terminate()
        agent.proc.wait(60)
    messages = [line["message"] for line in agent.log_lines()]
    assert any("hub unavailable" in m for m in messages), "the agent noticed the outage"
    assert sum("got an access token" in m for m in messages) >= 3, "tokens were fetched again before expiry"
    assert not any("refused" in m for m in messages), messages


def test_revoked_agent_stops(hub_proc: HubProcess, tmp_path: Path) -> None:
    agent = enrolled_agent(hub_proc, tmp_path, "alpha", cli_enroll=True)
    agent.start(hub_proc.env)
    wait_for(lambda: hub_proc.site("alpha")["reachability"] == "online", 60, "the first heartbeat")
    [a] = hub_proc.api("GET", "/api/v1/agents")
    hub_proc.api("POST", f"/api/v1/agents/{a['client_id']}/revoke")
    assert agent.proc is not None
    assert agent.proc.wait(60) == 3, "a revoked agent exits with code 3"
    assert any("refused this agent's credentials" in line["message"] for line in agent.log_lines())


def test_slurm_agent_reports_the_cluster(hub_proc: HubProcess, tmp_path: Path, slurm: SlurmCluster) -> None:
    slurm.cancel_all()
    agent = enrolled_agent(hub_proc, tmp_path, "slurm-site", f'backend = "slurm"\nslurm_conf = "{slurm.conf}"', cli_enroll=True)
    agent.start(hub_proc.env)
    try:
        wait_for(lambda: hub_proc.site("slurm-site")["reachability"] == "online", 60, "the first heartbeat")
        slurm.run("sbatch", "-p", "gpu", "--gres=gpu:a100:3", "-c", "1", "--mem=100", "-o", "/dev/null", "--wrap", "sleep 60")

        def three_busy() -> bool:
            gpus = hub_proc.api("GET", "/api/v1/network/summary")["gpus"]
            return gpus.get("a100") == {"total": 4, "free": 1}

        wait_for(three_busy, 60, "the hub to see 3 of 4 A100s in use")
        cap = hub_proc.api("GET", "/api/v1/sites/slurm-site/capacity")
        assert cap["backend"] == "slurm" and {p["name"] for p in cap["partitions"]} == {"gpu", "cpu"}
        assert cap["totals"]["gpus"]["a100"] == {"total": 4, "free": 1}
    finally:
        slurm.cancel_all()
        assert agent.proc is not None
        agent.proc.terminate()
        agent.proc.wait(60)
