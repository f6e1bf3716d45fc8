"""An agent started before its enrollment is approved (as docs/site-admin-guide.md says to
do) waits quietly, and starts work within seconds of the approval: the hub and the agent
are real processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from site_agent.credentials import load_key
from tests.processes import AgentProcess, HubProcess, register_site
from tests.services import wait_for

pytestmark = pytest.mark.slow


def test_agent_started_before_approval_waits_quietly_and_starts_at_once(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", sweep_s=0.2)
    hub.start()
    agent = AgentProcess(hub, "alpha", tmp_path)
    try:
        register_site(hub, "alpha")
        # The default backoff (max_backoff_s = 60), as a site admin's site.toml has it.
        agent.config.write_text(agent.config.read_text().replace("max_backoff_s = 1\n", ""))
        code = hub.api("POST", "/api/v1/sites/alpha/enrollment-codes", json={})["code"]
        agent.enroll(hub, code)
        [enrollment] = hub.api("GET", "/api/v1/enrollments", params={"status": "pending"})
        thumbprint = load_key(agent.dir / "state").thumbprint()
        assert enrollment["key_thumbprint"] == thumbprint

        agent.start(hub.env)
        wait_for(lambda: any("waiting for the hub to approve" in m for m in agent.messages()), 30, "the agent to wait")
        time.sleep(6)  # several checks while pending: none of them is an error or a new line
        assert agent.proc is not None and agent.proc.poll() is None, "a pending agent keeps running"
        assert hub.site("alpha")["last_heartbeat_at"] is None

        hub.api("POST", f"/api/v1/enrollments/{enrollment['id']}/approve")
        approved = time.monotonic()
        wait_for(lambda: hub.site("alpha")["last_heartbeat_at"] is not None, 30, "the first heartbeat after approval")
        took = time.monotonic() - approved
        assert took < 12, f"the agent started {took:.1f} s after the approval"
    finally:
        agent.stop()
        hub.stop()
    assert agent.proc.returncode == 0
    lines = agent.log_lines()
    errors = [line["message"] for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert errors == [], errors
    waiting = [line for line in lines if "waiting for the hub to approve" in line["message"]]
    assert len(waiting) == 1, [line["message"] for line in lines]
    assert waiting[0]["level"] == "INFO"
    assert f"enrollment {enrollment['id']} (thumbprint {thumbprint})" in waiting[0]["message"]
