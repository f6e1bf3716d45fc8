"""Jobs through the hub's API: placement by hardware and policy, refusal of the impossible,
explained decisions, idempotency, visibility, claims, sequenced reports, leases, cancel, usage.

Agents here are played by the test over real HTTP (the agent processes are exercised in
tests/test_jobs_e2e.py); the sweep is slowed down so each test drives it itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.broker.service import place_queued
from hub.db import make_engine, transaction
from hub.jobs.service import expire
from tests.helpers import Account, Hub, running_hub, waiting_polls
from tests.services import wait_for

GPU_SITE = [
    {"name": "gpu", "node_count": 2, "cores_per_node": 32, "memory_gb_per_node": 256, "gpu_model": "a100", "gpus_per_node": 4}
]
H100_SITE = [
    {"name": "big", "node_count": 1, "cores_per_node": 64, "memory_gb_per_node": 1024, "gpu_model": "h100", "gpus_per_node": 8}
]
CPU_SITE = [{"name": "cpu", "node_count": 4, "cores_per_node": 64, "memory_gb_per_node": 256}]
RELION = [{"name": "relion", "version": "5.0.1", "cuda_arch": "8.0"}]


_CLIENTS: list[httpx.Client] = []


@pytest.fixture
def jhub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(db_url, tmp_path / "data", sweep_interval_s=3600, max_attempts=2) as h:
        yield h
        while _CLIENTS:
            _CLIENTS.pop().close()


class SiteAgent:
    """The test playing a site's agent over HTTP."""

    def __init__(self, hub: Hub, name: str, token: str, partitions: list[dict[str, Any]]) -> None:
        self.hub, self.name, self.token, self.partitions = hub, name, token, partitions
        self.http = hub.http(token)
        _CLIENTS.append(self.http)

    def heartbeat(self, interval_s: float = 15, free_fraction: float = 1.0, attempts: list[str] | None = None) -> None:
        """Partitions priced with a node start-up are elastic: their free capacity is on
        powered-down nodes, as a ParallelCluster site's agent reports it."""
        parts = []
        for p in self.partitions:
            cpus = p["node_count"] * p["cores_per_node"]
            idle = int(cpus * free_fraction)
            elastic = bool(p.get("cost", {}).get("node_startup_s"))
            up, boot = (0, idle) if elastic else (idle, 0)
            nodes_up, nodes_down = (0, p["node_count"]) if elastic else (p["node_count"], 0)
            gpus = []
            if p.get("gpu_model"):
                n = p["node_count"] * p["gpus_per_node"]
                free = int(n * free_fraction)
                gpus = [{"model": p["gpu_model"], "total": n, "free": 0 if elastic else free,
                         "bootable": free if elastic else 0}]  # fmt: skip
            parts.append({"name": p["name"], "cpus_total": cpus, "cpus_allocated": cpus - idle, "cpus_idle": up,
                          "cpus_bootable": boot, "memory_total_mb": 1000, "memory_free_mb": 500, "gpus": gpus,
                          "elastic": elastic, "nodes_total": p["node_count"], "nodes_available": nodes_up,
                          "nodes_bootable": nodes_down})  # fmt: skip
        body = {"agent_version": "t", "interval_s": interval_s, "sampled_at": "2026-01-01T00:00:00Z", "backend": "slurm",
                "partitions": parts, "attempts": attempts or []}  # fmt: skip
        r = self.http.post(f"/api/v1/sites/{self.name}/heartbeat", json=body)
        assert r.status_code == 200, r.text

    def poll(self, wait: float = 0) -> list[dict[str, Any]]:
        r = self.http.get(f"/api/v1/sites/{self.name}/assignments", params={"wait": wait}, timeout=30)
        assert r.status_code == 200, r.text
        return list(r.json()["assignments"])

    def claim(self, attempt_id: str) -> httpx.Response:
        return self.http.post(f"/api/v1/attempts/{attempt_id}/claim")

    def report(self, attempt_id: str, seq: int, state: str, **kw: Any) -> httpx.Response:
        return self.http.post(f"/api/v1/attempts/{attempt_id}/reports", json={"seq": seq, "state": state, **kw})


def add_site(hub: Hub, tmp: Path, name: str, partitions: list[dict[str, Any]], software: list[dict[str, Any]] | None = None,
             **site: Any) -> SiteAgent:  # fmt: skip
    hub.create_site(name, partitions=partitions, software=software if software is not None else RELION, **site)
    agent = hub.enroll_agent(name, tmp / name)
    a = SiteAgent(hub, name, hub.agent_token(agent), partitions)
    a.heartbeat()
    return a


def spec(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "job", "kind": "generic.command", "command": ["echo", "hi"], "resources": {"cpus": 2}}
    body.update(kw)
    return body


def relion_run(program: str = "relion_refine", args: list[str] | None = None) -> dict[str, Any]:
    return {"commands": [{"program": program, "args": args or ["--i", "particles.star"]}], "output_dir": "Class2D/job001",
            "exchange": "/srv/exchange", "files": []}  # fmt: skip


def sweep_now(hub: Hub) -> None:
    engine = make_engine(hub.settings.resolved_database_url)
    try:
        with transaction(engine) as s:
            expire(s, hub.settings, None)
            place_queued(s, None)
    finally:
        engine.dispose()


def submit(hub: Hub, who: Account, body: dict[str, Any]) -> httpx.Response:
    with hub.as_(who) as c:
        return c.post("/api/v1/jobs", json=body)


def test_gpu_job_goes_only_where_that_gpu_is(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", GPU_SITE)
    add_site(jhub, tmp_path, "beta", CPU_SITE)
    gamma = add_site(jhub, tmp_path, "gamma", H100_SITE)
    me = jhub.account("researcher", institution="kek")
    r = submit(
        jhub, me, spec(kind="relion.refine3d", command=["relion_refine"], resources={"cpus": 8, "gpus": 2, "gpu_model": "h100"})
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "QUEUED" and job["site"] == "gamma" and job["attempt"] == 1
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{job['id']}/placement").json()
    verdicts = {v["site"]: v for v in why["latest"]["verdicts"]}
    assert verdicts["gamma"]["eligible"] and verdicts["gamma"]["score"] > 0
    assert verdicts["alpha"]["reasons"] == ["has no h100 GPUs"]
    assert verdicts["beta"]["reasons"] == ["has no h100 GPUs"]
    assert why["explanation"].startswith("QUEUED at gamma: placed on gamma")
    [offer] = gamma.poll()
    assert offer["job_id"] == job["id"] and offer["action"] == "run"


def test_min_cuda_arch_and_software_version(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", GPU_SITE, software=[{"name": "relion", "version": "4.0", "cuda_arch": "8.0"}])
    add_site(jhub, tmp_path, "gamma", H100_SITE, software=[{"name": "relion", "version": "5.0", "cuda_arch": "9.0"}])
    me = jhub.account("researcher", institution="kek")
    r = submit(jhub, me, spec(kind="relion.class3d", command=["x"], resources={"cpus": 4, "gpus": 1, "min_cuda_arch": "8.0"},
                              software=[{"name": "relion", "version": ">=5.0,<6"}]))  # fmt: skip
    assert r.json()["site"] == "gamma", "alpha's RELION 4.0 is outside >=5.0,<6"


def test_policy_keeps_an_institution_out(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", CPU_SITE)
    add_site(jhub, tmp_path, "beta", CPU_SITE, institution="beta-u")
    with jhub.as_admin() as c:
        assert c.put("/api/v1/sites/alpha/policy", json={"allowed_institutions": ["partner-u"]}).status_code == 200
    outsider = jhub.account("researcher", institution="kek")
    for _ in range(3):
        r = submit(jhub, outsider, spec())
        assert r.json()["site"] == "beta", "alpha does not lend to kek, ever"
    with jhub.as_(outsider) as c:
        why = c.get(f"/api/v1/jobs/{r.json()['id']}/placement").json()
    alpha = next(v for v in why["latest"]["verdicts"] if v["site"] == "alpha")
    assert alpha["reasons"] == ["policy: does not lend to institution kek"]
    partner = jhub.account("researcher", institution="partner-u")
    assert submit(jhub, partner, spec(placement={"allowed_sites": ["alpha"]})).json()["site"] == "alpha"


def test_impossible_job_is_refused_with_reasons(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", GPU_SITE)
    add_site(jhub, tmp_path, "beta", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    r = submit(jhub, me, spec(resources={"cpus": 1, "gpus": 1, "gpu_model": "b200"}))
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail.startswith("no site in the network could ever run this job")
    assert "alpha: has no b200 GPUs" in detail and "beta: has no b200 GPUs" in detail
    r = submit(jhub, me, spec(placement={"countries": ["DE"]}))
    assert r.status_code == 409 and "outside the job's countries (DE)" in r.json()["detail"]
    with jhub.as_(me) as c:
        assert c.get("/api/v1/jobs").json()["total"] == 0, "nothing was stored"


def test_malformed_spec_names_the_field(jhub: Hub) -> None:
    me = jhub.account("researcher", institution="kek")
    cases = [
        (spec(resources={"cpus": 0}), "resources.cpus"),
        (spec(kind="relion.nonsense"), "kind"),
        (spec(command=None), "generic.command job needs a command"),
        (spec(software=[{"name": "relion", "version": "five"}]), "software.0.version"),
        (spec(inputs=[{"dataset": "ds-1", "paths": ["../etc/passwd"]}]), "inputs.0.paths"),
        (spec(resources={"cpus": 2, "mpi_ranks": 4}), "mpi_ranks x threads_per_rank"),
        # RELION commands from a project (`cryomesh relion submit`): program names (the site runs its own
        # install; other than RELION's only where its policy allows), paths inside the project.
        (spec(kind="relion.class2d", command=None, relion=relion_run(program="/bin/rm")), "'/bin/rm' is not a program name"),
        (spec(kind="relion.class2d", command=None, relion=relion_run(args=["--i", "/etc/passwd"])), "leads outside the project"),
        (spec(kind="relion.class2d", command=None, relion=relion_run(args=["--i", "1@../x.mrcs"])), "leads outside the project"),
        (spec(relion=relion_run()), "a job with relion commands is of a relion.* kind"),
    ]
    for body, words in cases:
        r = submit(jhub, me, body)
        assert r.status_code == 422, body
        assert words in r.json()["detail"], r.json()


def test_waiting_job_is_explained_then_placed_when_capacity_frees(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    alpha.heartbeat(free_fraction=0.05)  # 12 of 256 CPUs free
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec(resources={"cpus": 64})).json()
    assert job["state"] == "QUEUED" and job["site"] is None
    with jhub.as_(me) as c:
        why = c.get(f"/api/v1/jobs/{job['id']}/placement").json()
    assert why["explanation"] == "still queued — waiting: 1 site(s): needs 64 CPUs, 12 free"
    alpha.heartbeat(free_fraction=0.5)
    sweep_now(jhub)
    with jhub.as_(me) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["site"] == "alpha"


def test_idempotency_key(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    first = submit(jhub, me, spec(idempotency_key="run-42"))
    again = submit(jhub, me, spec(idempotency_key="run-42"))
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = submit(jhub, me, spec(idempotency_key="run-42", name="different"))
    assert other.status_code == 409 and "different job" in other.json()["detail"]
    with jhub.as_(me) as c:
        assert c.get("/api/v1/jobs").json()["total"] == 1


def test_other_institutions_cannot_see_or_cancel(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", CPU_SITE)
    owner = jhub.account("researcher", institution="kek")
    colleague = jhub.account("researcher", institution="kek")
    stranger = jhub.account("researcher", institution="embl")
    job = submit(jhub, owner, spec()).json()
    with jhub.as_(stranger) as c:
        for path in ("", "/placement", "/logs"):
            r = c.get(f"/api/v1/jobs/{job['id']}{path}")
            assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": f"no job {job['id']!r}"}
        assert c.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 404
        assert c.get("/api/v1/jobs").json()["total"] == 0
    with jhub.as_(colleague) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").status_code == 200, "the same institution may see it"
        r = c.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 403 and "owner" in r.json()["detail"]
    with jhub.as_(owner) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "QUEUED"


def test_claims_race_and_only_one_wins(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    second = SiteAgent(jhub, "alpha", jhub.agent_token(jhub.enroll_agent("alpha", tmp_path / "second")), CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    submit(jhub, me, spec())
    [offer] = alpha.poll()
    results: list[int] = []
    barrier = threading.Barrier(8)

    def grab(agent: SiteAgent) -> None:
        barrier.wait()
        results.append(agent.claim(offer["attempt_id"]).status_code)

    threads = [threading.Thread(target=grab, args=(a,)) for a in [alpha, second] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 7


def test_agent_cannot_touch_another_sites_attempt(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    beta = add_site(jhub, tmp_path, "beta", GPU_SITE, institution="other")
    me = jhub.account("researcher", institution="kek")
    submit(jhub, me, spec(placement={"allowed_sites": ["alpha"]}))
    [offer] = alpha.poll()
    r = beta.claim(offer["attempt_id"])
    assert r.status_code == 403 and r.json()["detail"] == f"attempt {offer['attempt_id']} belongs to another site"
    assert beta.http.get("/api/v1/sites/alpha/assignments", params={"wait": 0}).status_code == 403
    assert beta.report(offer["attempt_id"], 1, "RUNNING").status_code == 403


def test_reports_are_sequenced_and_idempotent_and_usage_is_booked(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", GPU_SITE)
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec(resources={"cpus": 4, "gpus": 2, "gpu_model": "a100"})).json()
    [offer] = alpha.poll()
    aid = offer["attempt_id"]
    assert alpha.claim(aid).status_code == 200
    r = alpha.report(aid, 1, "RUNNING", local_id="12345", started_at="2026-01-01T00:00:00Z")
    assert r.json() == {"attempt_id": aid, "seq": 1, "job_state": "RUNNING", "duplicate": False, "cancel": False}
    again = alpha.report(aid, 1, "RUNNING", local_id="12345")
    assert again.json()["duplicate"] is True
    back = alpha.report(aid, 2, "INITIALIZING", local_id="12345")  # e.g. Slurm requeued it
    assert back.status_code == 200 and back.json()["job_state"] == "RUNNING", "backwards progress is recorded, not refused"
    done = alpha.report(aid, 3, "COMPLETE", exit_code=0, stdout_tail="refined to 2.9 A\n", ended_at="2026-01-01T02:00:00Z")
    assert done.json()["job_state"] == "COMPLETE"
    assert alpha.report(aid, 3, "COMPLETE", exit_code=0).json()["duplicate"] is True, "a resent final report changes nothing"
    stale = alpha.report(aid, 4, "EXECUTOR_ERROR", exit_code=1)
    assert stale.status_code == 409 and "no longer current" in stale.json()["detail"]
    with jhub.as_(me) as c:
        final = c.get(f"/api/v1/jobs/{job['id']}").json()
        assert final["state"] == "COMPLETE" and final["exit_code"] == 0 and final["finished_at"]
        assert c.get(f"/api/v1/jobs/{job['id']}/logs").json()["stdout_tail"] == "refined to 2.9 A\n"
        usage = c.get("/api/v1/usage", params={"since": "2025-12-31T00:00:00Z"}).json()
    [row] = usage["consumed_by_institution"]
    assert row["key"] == "kek" and row["wall_hours"] == 2.0 and row["cpu_hours"] == 8.0 and row["gpu_hours"] == {"a100": 4.0}
    assert usage["provided_by_site"] == [], "a researcher does not see what sites lent"
    with jhub.as_admin() as c:
        usage = c.get("/api/v1/usage", params={"since": "2025-12-31T00:00:00Z"}).json()
    assert usage["provided_by_site"][0]["key"] == "alpha" and usage["provided_by_site"][0]["gpu_hours"] == {"a100": 4.0}


def test_lost_lease_requeues_elsewhere_and_late_report_is_refused(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    beta = add_site(jhub, tmp_path, "beta", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec()).json()
    first = alpha if job["site"] == "alpha" else beta
    other = beta if first is alpha else alpha
    first.heartbeat(interval_s=0.2)  # lease = 3 x 0.2 s
    [offer] = first.poll()
    assert first.claim(offer["attempt_id"]).status_code == 200
    assert first.report(offer["attempt_id"], 1, "RUNNING").status_code == 200
    time.sleep(1.0)  # no heartbeat: the lease runs out
    sweep_now(jhub)
    with jhub.as_(me) as c:
        now = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert now["state"] == "QUEUED" and now["site"] == other.name and now["attempt"] == 2
    assert "lost" in now["state_reason"]
    late = first.report(offer["attempt_id"], 2, "COMPLETE", exit_code=0)
    assert late.status_code == 409
    with jhub.as_(me) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "QUEUED", "the late report changed nothing"
    [offer2] = other.poll()
    assert other.claim(offer2["attempt_id"]).status_code == 200
    assert other.report(offer2["attempt_id"], 1, "COMPLETE", exit_code=0).json()["job_state"] == "COMPLETE"


def test_heartbeats_keep_the_lease(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec()).json()
    alpha.heartbeat(interval_s=0.2)
    [offer] = alpha.poll()
    alpha.claim(offer["attempt_id"])
    for _ in range(8):
        time.sleep(0.2)
        alpha.heartbeat(interval_s=0.2, attempts=[offer["attempt_id"]])
        sweep_now(jhub)
    with jhub.as_(me) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["attempt"] == 1, "renewed leases are never lost"


def test_attempts_run_out_into_system_error(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec()).json()
    [offer] = alpha.poll()
    alpha.claim(offer["attempt_id"])
    alpha.report(offer["attempt_id"], 1, "SYSTEM_ERROR", reason="node failure")
    with jhub.as_(me) as c:
        j = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert j["state"] == "QUEUED" and j["site"] is None, "alpha is avoided after its system error"
    assert "node failure" in j["state_reason"]
    beta = add_site(jhub, tmp_path, "beta", CPU_SITE)
    sweep_now(jhub)
    [offer2] = beta.poll()
    beta.claim(offer2["attempt_id"])
    beta.report(offer2["attempt_id"], 1, "SYSTEM_ERROR", reason="disk full")
    with jhub.as_(me) as c:
        j = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert j["state"] == "SYSTEM_ERROR" and "gave up after 2 attempts" in j["state_reason"]


def test_refusal_sends_the_job_elsewhere(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    beta = add_site(jhub, tmp_path, "beta", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    job = submit(jhub, me, spec()).json()
    first = alpha if job["site"] == "alpha" else beta
    [offer] = first.poll()
    r = first.http.post(f"/api/v1/attempts/{offer['attempt_id']}/refuse", json={"reason": "maintenance tonight"})
    assert r.status_code == 200 and r.json()["state_reason"] == f"refused by {first.name}: maintenance tonight"
    sweep_now(jhub)
    with jhub.as_(me) as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["site"] not in (None, first.name)


def test_cancel_queued_at_once_and_running_through_the_agent(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    queued = submit(jhub, me, spec()).json()
    with jhub.as_(me) as c:
        assert c.post(f"/api/v1/jobs/{queued['id']}/cancel").json()["state"] == "CANCELED"
    assert alpha.poll() == [], "the withdrawn offer is gone"
    running = submit(jhub, me, spec()).json()
    [offer] = alpha.poll()
    alpha.claim(offer["attempt_id"])
    alpha.report(offer["attempt_id"], 1, "RUNNING")
    with jhub.as_(me) as c:
        assert c.post(f"/api/v1/jobs/{running['id']}/cancel").json()["state"] == "CANCELING"
    [notice] = alpha.poll()
    assert notice["action"] == "cancel" and notice["attempt_id"] == offer["attempt_id"]
    assert alpha.report(offer["attempt_id"], 2, "CANCELED").json()["job_state"] == "CANCELED"
    with jhub.as_(me) as c:
        r = c.post(f"/api/v1/jobs/{running['id']}/cancel")
        assert r.status_code == 409 and "already ended" in r.json()["detail"]


def test_long_poll_wakes_on_new_work(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE)
    me = jhub.account("researcher", institution="kek")
    got: list[tuple[float, list[dict[str, Any]]]] = []

    def poll() -> None:
        t0 = time.monotonic()
        got.append((t0, alpha.poll(wait=30)))

    t = threading.Thread(target=poll)
    t.start()
    wait_for(lambda: waiting_polls(jhub.url) == 1, 60, "the poll to wait")  # not a sleep: waiting before the work exists
    submitted = time.monotonic()
    submit(jhub, me, spec())
    t.join(60)
    [(_, offers)] = got
    assert len(offers) == 1
    # Well before the poll's own end at 30 s, however busy the machine.
    assert time.monotonic() - submitted < 20, "the poll answered when the work appeared, not at its timeout"


def test_site_policy_permissions(jhub: Hub, tmp_path: Path) -> None:
    add_site(jhub, tmp_path, "alpha", CPU_SITE)
    add_site(jhub, tmp_path, "beta", CPU_SITE)
    admin = jhub.account("site_admin", site="alpha")
    body = {"cpu_share": 0.5, "allowed_kinds": ["generic.command"], "max_walltime_s": 7200,
            "windows": [{"days": ["sat", "sun"], "start": "00:00", "end": "24:00"}], "timezone": "Asia/Tokyo"}  # fmt: skip
    with jhub.as_(admin) as c:
        r = c.put("/api/v1/sites/alpha/policy", json=body)
        assert r.status_code == 200 and r.json()["cpu_share"] == 0.5
        assert c.put("/api/v1/sites/beta/policy", json=body).status_code == 403
        bad = c.put("/api/v1/sites/alpha/policy", json={**body, "timezone": "Mars/Olympus"})
        assert bad.status_code == 422 and "time zone" in bad.json()["detail"]
    with jhub.as_(jhub.account("researcher", institution="kek")) as c:
        assert c.get("/api/v1/sites/alpha/policy").json()["max_walltime_s"] == 7200
        assert c.put("/api/v1/sites/alpha/policy", json=body).status_code == 403
