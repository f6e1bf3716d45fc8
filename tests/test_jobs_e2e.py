"""Jobs end to end: a real hub process, real agent processes running real jobs.

Sites here declare GPUs they do not have (this machine has none) where the test is about
placement; jobs on them run as local processes. GPU jobs that need Slurm to hand out
devices run on the real Slurm cluster with emulated GPUs (tests/test_slurm_jobs.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import busy_cpus
from tests.processes import AgentProcess, HubProcess, enrolled_agent
from tests.services import wait_for

pytestmark = pytest.mark.slow

DECLARED_A100 = """backend = "declared"
[[discovery.declared]]
name = "gpu"
max_nodes = 2
cpus_per_node = 8
memory_gb_per_node = 64
gpu_model = "a100"
gpus_per_node = 4
"""
RELION = [{"name": "relion", "version": "5.0"}]


def job(name: str = "job", seconds: float = 0.5, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "kind": "generic.command",
        "command": ["sh", "-c", f"echo ran job=$CRYOMESH_JOB_ID attempt=$CRYOMESH_ATTEMPT; sleep {seconds}"],
        "resources": {"cpus": 1, "memory_gb": 1},
    }
    body.update(kw)
    return body


def wait_state(hub: HubProcess, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(hub.api("GET", f"/api/v1/jobs/{job_id}"))
        return seen["state"] in states

    wait_for(done, timeout, f"job {job_id} to reach {states} (last {seen.get('state')})", interval=0.2)
    return seen


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    h = HubProcess(tmp_path / "hub")
    h.start()
    agents: list[AgentProcess] = []
    h.agents = agents  # type: ignore[attr-defined]
    yield h
    for a in agents:
        a.stop()
    h.stop()


def start(hub: HubProcess, agent: AgentProcess, name: str) -> AgentProcess:
    agent.start(hub.env)
    hub.agents.append(agent)  # type: ignore[attr-defined]
    wait_for(lambda: hub.site(name)["reachability"] == "online", 60, f"{name} to come online")
    return agent


def test_jobs_run_where_hardware_and_policy_allow(hub: HubProcess, tmp_path: Path) -> None:
    start(hub, enrolled_agent(hub, tmp_path, "gpu-site", DECLARED_A100, software=RELION), "gpu-site")
    start(hub, enrolled_agent(hub, tmp_path, "cpu-site", software=RELION), "cpu-site")
    start(hub, enrolled_agent(hub, tmp_path, "closed-site", software=RELION, institution="closed-u"), "closed-site")
    hub.api("PUT", "/api/v1/sites/closed-site/policy", json={"allowed_institutions": ["closed-u"]})
    me = hub.account("researcher", institution="kek")

    gpu_job = hub.call(
        "POST", "/api/v1/jobs", me, json=job("refine", resources={"cpus": 2, "gpus": 1, "gpu_model": "a100", "memory_gb": 1})
    )
    cpu_jobs = [hub.call("POST", "/api/v1/jobs", me, json=job(f"ctf-{i}")) for i in range(6)]
    impossible = hub.call(
        "POST", "/api/v1/jobs", me, expect=409, json=job("x", resources={"cpus": 1, "gpus": 1, "gpu_model": "h100"})
    )
    assert "gpu-site: has no h100 GPUs" in impossible["detail"]

    done = wait_state(hub, gpu_job["id"], {"COMPLETE"})
    assert done["site"] == "gpu-site", "the a100 job ran at the only site with a100s"
    logs = hub.call("GET", f"/api/v1/jobs/{gpu_job['id']}/logs", me)
    assert f"ran job={gpu_job['id']} attempt=1" in logs["stdout_tail"]
    for j in cpu_jobs:
        finished = wait_state(hub, j["id"], {"COMPLETE"})
        assert finished["site"] in {"gpu-site", "cpu-site"}, "closed-site never runs kek's jobs"
        why = hub.call("GET", f"/api/v1/jobs/{j['id']}/placement", me)
        closed = next(v for v in why["history"][0]["verdicts"] if v["site"] == "closed-site")
        assert closed["reasons"] == ["policy: does not lend to institution kek"]

    usage = hub.api("GET", "/api/v1/usage")
    assert {r["key"] for r in usage["consumed_by_institution"]} == {"kek"}
    # An offer left waiting past offer_ttl_s, or a lease lost, places a job again (a new attempt),
    # so on a busy machine a job can take a second attempt; every job still ran exactly once.
    assert sum(r["attempts"] for r in usage["provided_by_site"]) >= 7
    assert "closed-site" not in {r["key"] for r in usage["provided_by_site"]}


def test_a_local_site_runs_jobs_while_its_cpus_are_busy(hub: HubProcess, tmp_path: Path) -> None:
    """Every CPU kept busy by other programs, the load average above the CPU count: the
    local site still lends all its CPUs, because no job holds them, and jobs run there.
    What the site then reports as allocated is what its jobs hold."""
    cpus = os.cpu_count() or 1
    release = tmp_path / "release"
    with busy_cpus(load_at_least=cpus + 0.5, timeout=60):
        start(hub, enrolled_agent(hub, tmp_path, "busy"), "busy")
        me = hub.account("researcher", institution="kek")
        held = [
            hub.call(
                "POST",
                "/api/v1/jobs",
                me,
                json=job(f"held-{i}", command=["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.2; done"]),
            )
            for i in range(cpus)
        ]
        for j in held:
            assert wait_state(hub, j["id"], {"RUNNING"}, timeout=60)["site"] == "busy"
        seen: dict[str, Any] = {}

        def allocated_to_the_jobs() -> bool:
            seen.update(hub.api("GET", "/api/v1/sites/busy/capacity")["partitions"][0])
            return bool(seen["cpus_allocated"] == cpus)

        wait_for(allocated_to_the_jobs, 60, f"the site to report its {cpus} CPUs held by the jobs (last {seen})")
        assert seen["cpus_idle"] == 0 and seen["jobs_running"] == cpus
        assert seen["load_1m"] >= cpus, "the load is reported, as information"
        waiting = hub.call("POST", "/api/v1/jobs", me, json=job("next"))
        assert waiting["state"] == "QUEUED", "every CPU is held by a job: the next one waits for a free CPU"
        release.touch()
        for j in [*held, waiting]:
            assert wait_state(hub, j["id"], {"COMPLETE"}, timeout=60)["site"] == "busy"


def test_agent_refuses_what_its_own_policy_forbids(hub: HubProcess, tmp_path: Path) -> None:
    picky = enrolled_agent(hub, tmp_path, "picky", extra='[policy]\nallowed_institutions = ["partner-u"]\n', software=RELION)
    start(hub, picky, "picky")
    other = enrolled_agent(hub, tmp_path, "other", software=RELION)
    me = hub.account("researcher", institution="kek")
    j = hub.call("POST", "/api/v1/jobs", me, json=job())
    assert j["site"] == "picky", "the hub's view of picky's policy lends to everyone"

    def refused() -> bool:
        return "refused by picky" in (hub.api("GET", f"/api/v1/jobs/{j['id']}").get("state_reason") or "")

    wait_for(refused, 60, "picky's agent to refuse")
    start(hub, other, "other")
    done = wait_state(hub, j["id"], {"COMPLETE"})
    assert done["site"] == "other" and done["attempt"] == 2
    history = hub.call("GET", f"/api/v1/jobs/{j['id']}/placement", me)["history"]
    assert [h["site"] for h in history if h["outcome"] == "placed"] == ["picky", "other"]
    assert any("refusing attempt" in m and "does not run jobs for kek" in m for m in picky.messages())


def test_cancel_a_running_local_job(hub: HubProcess, tmp_path: Path) -> None:
    start(hub, enrolled_agent(hub, tmp_path, "alpha"), "alpha")
    me = hub.account("researcher", institution="kek")
    marker = tmp_path / "still-running"
    j = hub.call("POST", "/api/v1/jobs", me, json=job(command=["sh", "-c", f"sleep 60; touch {marker}"]))
    wait_state(hub, j["id"], {"RUNNING"})
    assert hub.call("POST", f"/api/v1/jobs/{j['id']}/cancel", me)["state"] == "CANCELING"
    done = wait_state(hub, j["id"], {"CANCELED"}, timeout=60)
    assert done["finished_at"]
    time.sleep(0.5)
    assert not marker.exists(), "the job's process group was really stopped"


def test_failing_job_is_an_executor_error_with_its_exit_code(hub: HubProcess, tmp_path: Path) -> None:
    start(hub, enrolled_agent(hub, tmp_path, "alpha"), "alpha")
    me = hub.account("researcher", institution="kek")
    j = hub.call("POST", "/api/v1/jobs", me, json=job(command=["sh", "-c", "echo boom >&2; exit 3"]))
    done = wait_state(hub, j["id"], {"EXECUTOR_ERROR"})
    assert done["exit_code"] == 3 and done["attempt"] == 1, "a job's own failure is not retried"
    assert "boom" in hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stderr_tail"]


def test_killed_agent_mid_job_requeues_and_late_report_is_refused(hub: HubProcess, tmp_path: Path) -> None:
    first = enrolled_agent(hub, tmp_path, "first", heartbeat_s=0.5)
    start(hub, first, "first")
    second = enrolled_agent(hub, tmp_path, "second", heartbeat_s=0.5)
    me = hub.account("researcher", institution="kek")
    j = hub.call("POST", "/api/v1/jobs", me, json=job(seconds=4))
    wait_state(hub, j["id"], {"RUNNING"})
    assert hub.api("GET", f"/api/v1/jobs/{j['id']}")["site"] == "first"
    # The whole site goes away: the agent and the job it was running.
    import psutil

    assert first.proc is not None
    children = psutil.Process(first.proc.pid).children(recursive=True)
    first.kill()
    for c in children:
        c.kill()
    start(hub, second, "second")
    done = wait_state(hub, j["id"], {"COMPLETE", "SYSTEM_ERROR", "EXECUTOR_ERROR"})
    assert done["state"] == "COMPLETE" and done["site"] == "second" and done["attempt"] == 2
    # The first agent comes back, finds its job gone, and reports it: the hub refuses that report.
    first.start(hub.env)
    wait_for(lambda: any("refused" in m for m in first.messages()), 60, "the stale report to be refused")
    again = hub.api("GET", f"/api/v1/jobs/{j['id']}")
    assert again["state"] == "COMPLETE" and again["attempt"] == 2 and again["finished_at"] == done["finished_at"]
    first.stop()


def test_hub_restart_mid_run_loses_no_job(hub: HubProcess, tmp_path: Path) -> None:
    start(hub, enrolled_agent(hub, tmp_path, "alpha"), "alpha")
    me = hub.account("researcher", institution="kek")
    jobs = [hub.call("POST", "/api/v1/jobs", me, json=job(f"j{i}", seconds=2)) for i in range(4)]
    wait_state(hub, jobs[0]["id"], {"RUNNING", "COMPLETE"})
    hub.stop()
    time.sleep(3)  # jobs finish while the hub is down; their reports wait in the agent's outbox
    hub.start()
    hub._token = None
    for j in jobs:
        assert wait_state(hub, j["id"], {"COMPLETE"})["state"] == "COMPLETE"


def test_cli_submit_wait_logs_explain_usage(hub: HubProcess, tmp_path: Path) -> None:
    import json
    import os
    import subprocess

    from tests.processes import cli

    start(hub, enrolled_agent(hub, tmp_path, "alpha"), "alpha")
    me = hub.account("researcher", institution="kek")
    env = {**os.environ, "CRYOMESH_HUB_URL": hub.url, "CRYOMESH_CLIENT_ID": me.client_id,
           "CRYOMESH_CLIENT_SECRET": me.client_secret, "COLUMNS": "200"}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=120)

    out = run("jobs", "submit", "--command", "sh -c 'echo hello from cryomesh'", "--name", "hello", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "COMPLETE at alpha" in out.stdout
    job_id = out.stdout.split("job ", 1)[1].split()[0]
    assert "hello from cryomesh" in run("jobs", "logs", job_id[:12]).stdout
    explain = run("jobs", "explain", job_id)
    assert "alpha" in explain.stdout and "yes" in explain.stdout
    shown = json.loads(run("jobs", "show", job_id, "--json").stdout)
    assert shown["state"] == "COMPLETE" and shown["site"] == "alpha"
    listed = run("jobs", "list", "--state", "COMPLETE")
    assert "hello" in listed.stdout and "1 job(s)" in listed.stdout
    spec = tmp_path / "job.yaml"
    spec.write_text("name: from-file\nkind: generic.command\ncommand: [sh, -c, 'exit 4']\nresources: {cpus: 1, memory_gb: 1}\n")
    failed = run("jobs", "submit", str(spec), "--wait")
    assert failed.returncode == 1 and "EXECUTOR_ERROR" in failed.stdout
    usage = run("usage")
    assert usage.returncode == 0 and "kek" in usage.stdout
    impossible = run("jobs", "submit", "--command", "true", "--gpus", "1", "--gpu-model", "h100")
    assert impossible.returncode == 1 and "409 Conflict" in impossible.stdout and "no site in the network" in impossible.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: relion.nope\n")
    out = run("jobs", "submit", str(bad))
    # Checked before anything is sent: one line naming the file and the field.
    assert out.returncode == 1 and f"{bad}: kind: Input should be" in " ".join(out.stdout.split()), out.stdout


def test_output_streams_while_the_job_runs(hub: HubProcess, tmp_path: Path) -> None:
    start(hub, enrolled_agent(hub, tmp_path, "alpha"), "alpha")
    me = hub.account("researcher", institution="kek")
    never = tmp_path / "never-made"  # the job runs until canceled, however slow the machine
    j = hub.call(
        "POST", "/api/v1/jobs", me,
        json=job(command=["sh", "-c", f"echo halfway there; while [ ! -e {never} ]; do sleep 0.2; done; echo done"]),
    )  # fmt: skip
    wait_state(hub, j["id"], {"RUNNING"})

    def streamed() -> bool:
        return "halfway there" in hub.call("GET", f"/api/v1/jobs/{j['id']}/logs", me)["stdout_tail"]

    wait_for(streamed, 60, "the running job's output to reach the hub")
    assert hub.api("GET", f"/api/v1/jobs/{j['id']}")["state"] == "RUNNING", "seen before the job ended"
    hub.call("POST", f"/api/v1/jobs/{j['id']}/cancel", me)
    wait_state(hub, j["id"], {"CANCELED"})
