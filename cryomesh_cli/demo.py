"""``cryomesh demo``: a small network on this machine, built the way a real one is.

An embedded hub (SQLite in a fresh temp dir) serves on loopback. Three sites are
registered; each site's agent is enrolled with a one-time code through the real CLI,
approved by the demo coordinator, and then runs as its own process, getting tokens with
its private key and sending heartbeats over HTTP. The network summary fills in live.

The machine has no GPUs and no cluster, so two sites *declare* their partitions (the
``declared`` backend, meant for cloud queues that scale from zero) and one measures this
machine for real (the ``local`` backend). Each site's backend is shown.

osaka-cpu's agent also measures the RELION it can run (Debian's ``relion``, found on PATH:
version, CPU build, MPI) and reports it, so the registry lists that RELION as *measured*;
the other two sites stand for remote clusters and only declare theirs.

Then the data story (``demo_data``): a RELION data set made with ``relion_project`` at
kyoto-gpu, shared with osaka-cpu on its admin's approval, copied and verified, and
classified there by a real ``relion_refine`` Class2D whose output is registered as a
derived dataset and whose class averages the dashboard shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Group
from rich.live import Live

from cryomesh_cli.client import CliError, HubSession, Profile
from cryomesh_cli.demo_data import DataStory, transfers_section
from cryomesh_cli.demo_outcome import unfinished
from cryomesh_cli.devslurm import free_port
from cryomesh_cli.jobs_cmds import jobs_table, usage_tables
from cryomesh_cli.render import console, summary_table

SITES: list[dict[str, Any]] = [
    {
        "site": {
            "name": "kyoto-gpu",
            "institution": "kyoto-u",
            "display_name": "Kyoto University cryo-EM GPU cluster",
            "country": "JP",
            "location": "Kyoto",
            "description": "GPU-rich university cluster for RELION and cryoSPARC refinement.",
            "contacts": [{"name": "Facility desk", "email": "cryoem@kyoto-u.example", "role": "facility manager"}],
            "partitions": [
                {
                    "name": "gpu",
                    "cpu_model": "AMD EPYC 7763",
                    "node_count": 8,
                    "cores_per_node": 64,
                    "memory_gb_per_node": 512,
                    "gpu_model": "a100",
                    "gpus_per_node": 4,
                    "interconnect": "HDR InfiniBand",
                },
                {
                    "name": "gpu-big",
                    "cpu_model": "Intel Xeon 8480+",
                    "node_count": 2,
                    "cores_per_node": 112,
                    "memory_gb_per_node": 2048,
                    "gpu_model": "h100",
                    "gpus_per_node": 8,
                    "interconnect": "NDR InfiniBand",
                },
            ],
            "software": [
                {"name": "relion", "version": "5.0", "cuda_arch": "8.0"},
                {"name": "cryosparc", "version": "4.6"},
                {"name": "motioncor2", "version": "1.6.4", "cuda_arch": "8.0"},
            ],
            "storage": [{"name": "scratch", "kind": "posix", "path": "/gpfs/cryoem", "capacity_tb": 800}],
        },
        "software": {"probe": False},  # a remote cluster in the story: its RELION is declared, not on this machine
        "discovery": {
            "backend": "declared",
            "declared": [
                {
                    "name": "gpu",
                    "max_nodes": 8,
                    "cpus_per_node": 64,
                    "memory_gb_per_node": 512,
                    "gpu_model": "a100",
                    "gpus_per_node": 4,
                },
                {
                    "name": "gpu-big",
                    "max_nodes": 2,
                    "cpus_per_node": 112,
                    "memory_gb_per_node": 2048,
                    "gpu_model": "h100",
                    "gpus_per_node": 8,
                },
            ],
        },
    },
    {
        "site": {
            "name": "osaka-cpu",
            "institution": "osaka-u",
            "display_name": "Osaka University CPU cluster",
            "country": "JP",
            "location": "Suita",
            "description": "CPU cluster for CTF estimation, picking and extraction. Measured live: this machine.",
            "partitions": [{"name": "local", "node_count": 1, "cores_per_node": os.cpu_count() or 1, "memory_gb_per_node": 16}],
            # RELION is not declared: the agent measures it (``[software]`` in site.toml).
            "software": [{"name": "ctffind", "version": "4.1.14"}],
            "storage": [{"name": "work", "kind": "posix", "path": tempfile.gettempdir()}],
        },
        "discovery": {"backend": "local", "partition": "local", "gpu": "auto"},
        "storage": [{"name": "work", "path": tempfile.gettempdir()}],
    },
    {
        "site": {
            "name": "aws-tokyo",
            "institution": "kek",
            "display_name": "KEK GoToCloud (AWS ParallelCluster, ap-northeast-1)",
            "country": "JP",
            "location": "AWS ap-northeast-1",
            "description": "Cloud site: queues scale from zero on demand.",
            "partitions": [
                {
                    "name": "g5",
                    "cpu_model": "AMD EPYC 7R32",
                    "node_count": 10,
                    "cores_per_node": 48,
                    "memory_gb_per_node": 192,
                    "gpu_model": "a10g",
                    "gpus_per_node": 4,
                    "interconnect": "EFA",
                },
                {
                    "name": "c6i",
                    "cpu_model": "Intel Xeon 8375C",
                    "node_count": 20,
                    "cores_per_node": 64,
                    "memory_gb_per_node": 128,
                },
            ],
            "software": [{"name": "relion", "version": "4.0", "cuda_arch": "8.6"}, {"name": "cryosparc", "version": "4.5"}],
            "storage": [{"name": "s3", "kind": "s3", "path": "s3://gotocloud-exchange/"}],
        },
        "policy": {"allowed_institutions": ["kek"], "cpu_share": 0.5, "timezone": "Asia/Tokyo"},
        "software": {"probe": False},  # a remote cluster in the story: its RELION is declared, not on this machine
        "discovery": {
            "backend": "declared",
            "declared": [
                {
                    "name": "g5",
                    "max_nodes": 10,
                    "cpus_per_node": 48,
                    "memory_gb_per_node": 192,
                    "gpu_model": "a10g",
                    "gpus_per_node": 4,
                },
                {"name": "c6i", "max_nodes": 20, "cpus_per_node": 64, "memory_gb_per_node": 128},
            ],
        },
    },
]


def demo_jobs() -> list[dict[str, Any]]:
    """A batch a cryo-EM group might send: CPU preprocessing, GPU refinement only one site can
    take, and one job nobody can run. Each does real work (hashing data) so it takes real time."""
    work = "import hashlib, os, sys; d = os.urandom(40_000_000); print(sys.argv[1], hashlib.sha256(d).hexdigest()[:16])"
    jobs: list[dict[str, Any]] = []
    for i in range(4):
        jobs.append(
            {
                "name": f"ctffind-batch-{i}",
                "kind": "generic.command",
                "tags": ["ctf"],
                "command": [sys.executable, "-c", work, f"ctf estimation, micrograph batch {i}"],
                "resources": {"cpus": 1, "memory_gb": 1, "walltime_s": 600},
            }
        )
    jobs.append(
        {
            "name": "motioncorr",
            "kind": "generic.command",
            "tags": ["motion"],
            "command": [sys.executable, "-c", work, "motion correction"],
            "resources": {"cpus": 2, "memory_gb": 1},
        }
    )
    for i in range(2):
        jobs.append(
            {
                "name": f"refine3d-{i}",
                "kind": "generic.command",
                "tags": ["refine"],
                "command": [
                    sys.executable,
                    "-c",
                    work + "; print('GPUs:', os.environ.get('CUDA_VISIBLE_DEVICES'))",
                    f"3D refinement {i}",
                ],
                "resources": {"cpus": 1, "gpus": 1, "gpu_model": "a100", "memory_gb": 1, "walltime_s": 600},
            }
        )
    return jobs


IMPOSSIBLE = {
    "name": "needs-b200",
    "kind": "generic.command",
    "command": ["true"],
    "resources": {"cpus": 1, "gpus": 8, "gpu_model": "b200"},
}


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


#: Programs the demo runs: relion_project makes the data, relion_refine classifies it.
RELION_PROGRAMS = ("relion_project", "relion_refine")


def missing_relion() -> str | None:
    """What is missing for the demo's RELION story, in words, or None."""
    missing = [p for p in RELION_PROGRAMS if shutil.which(p) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found on PATH: the demo makes its data with RELION and classifies it with RELION. "
        "Install Debian's relion (as root: `make system-deps`, or apt-get install relion)"
    )


def site_toml(hub_url: str, state_dir: Path, heartbeat_s: float, spec: dict[str, Any], executor: dict[str, Any]) -> str:
    disc = dict(spec["discovery"])
    declared = disc.pop("declared", [])
    lines = [
        "[agent]",
        f"hub_url = {_toml_value(hub_url)}",
        f"state_dir = {_toml_value(str(state_dir))}",
        f"heartbeat_interval_s = {heartbeat_s}",
        "max_backoff_s = 5",
        "",
        "[discovery]",
    ]
    lines += [f"{k} = {_toml_value(v)}" for k, v in disc.items()]
    for d in declared:
        lines += ["", "[[discovery.declared]]", *(f"{k} = {_toml_value(v)}" for k, v in d.items())]
    for st in spec.get("storage", []):
        lines += ["", "[[storage]]", *(f"{k} = {_toml_value(v)}" for k, v in st.items())]
    lines += ["", "[executor]", *(f"{k} = {_toml_value(v)}" for k, v in executor.items())]
    if "software" in spec:
        lines += ["", "[software]", *(f"{k} = {_toml_value(v)}" for k, v in spec["software"].items())]
    return "\n".join(lines) + "\n"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryomesh_cli.main", *args]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the hub did not become ready in time")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def build_report(
    hub_url: str, summary: dict[str, Any], started: float, all_online_after: float | None, jobs: list[dict[str, Any]]
) -> dict[str, Any]:
    sites = []
    for s in summary["sites"]:
        cap = s.get("capacity") or {}
        sites.append(
            {
                "name": s["name"],
                "status": s["reachability"],
                "lifecycle": s["status"],
                "institution": s["institution"],
                "cpus_total": cap.get("cpus_total", 0),
                "cpus_free": cap.get("cpus_free", 0),
                "gpus": cap.get("gpus", {}),
                "heartbeat_age_s": s.get("heartbeat_age_s"),
            }
        )
    return {
        "hub_url": hub_url,
        "generated_at": datetime.now(UTC).isoformat(),
        "ran_for_s": round(time.monotonic() - started, 2),
        "all_sites_online_after_s": all_online_after,
        "network": {k: summary[k] for k in ("sites_by_status", "sites_by_reachability", "cpus_total", "cpus_free", "gpus")},
        "sites": sites,
        "jobs": jobs,
    }


def _job_entry(researcher: HubSession, j: dict[str, Any]) -> dict[str, Any]:
    p = researcher.call("GET", f"/api/v1/jobs/{j['id']}/placement")
    placed = [h for h in p["history"] if h["outcome"] == "placed"]
    decision = placed[-1] if placed else p.get("latest")
    return {
        "id": j["id"],
        "name": j["name"],
        "kind": j["kind"],
        "state": j["state"],
        "site": j["site"],
        "attempt": j["attempt"],
        "placement": {
            "explanation": p["explanation"],
            "summary": decision["summary"] if decision else None,
            "verdicts": [
                {"site": v["site"], "eligible": v["eligible"], "score": v["score"], "reasons": v["reasons"]}
                for v in (decision or {"verdicts": []})["verdicts"]
            ],
        },
    }


FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
#: Seconds a whole run took on a busy 2-core machine, from start to the story's end (measured; see the README).
TYPICAL_RUN_S = 90


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(
    duration: float | None, report: Path | None, heartbeat_s: float = 2.0, executor: str = "local", keep: bool = False
) -> int:
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up like Ctrl-C
    try:
        return _run_demo(duration, report, heartbeat_s, executor, keep)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(duration: float | None, report: Path | None, heartbeat_s: float, executor: str, keep: bool) -> int:
    if reason := missing_relion():
        console.print(f"[red]cannot run the demo:[/red] {reason}", highlight=False)
        return 1
    with contextlib.ExitStack() as stack:
        cluster = None
        if executor == "slurm":
            from cryomesh_cli.devslurm import slurm_cluster, unavailable_reason

            reason = unavailable_reason()
            if reason:
                console.print(f"[red]--executor slurm:[/red] {reason}")
                return 1
            console.print("starting a local Slurm cluster (munged, slurmctld, slurmd; 4 A100s emulated through GRES)…")
            cluster = stack.enter_context(slurm_cluster(gpus=4, gpu_type="a100"))
        workdir = Path(tempfile.mkdtemp(prefix="cryomesh-demo-"))
        try:
            return _run(workdir, duration, report, heartbeat_s, cluster)
        finally:
            if keep:
                console.print(
                    f"kept the working directory [bold]{workdir}[/bold] ({_size_mb(workdir):.0f} MB: the hub's database and log, "
                    f"the coordinator's credentials in coordinator.json, each site's state, data and log); "
                    f"remove it when done",
                    highlight=False,
                    soft_wrap=True,  # the path stays whole for copying
                )
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                console.print(f"removed the working directory {workdir} (--keep keeps it)", highlight=False, soft_wrap=True)
    return 1


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def _run(workdir: Path, duration: float | None, report: Path | None, heartbeat_s: float, cluster: Any) -> int:
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CRYOMESH_DATA_DIR": str(workdir / "hub"),
        "CRYOMESH_PUBLIC_URL": hub_url,
        "CRYOMESH_HOST": "127.0.0.1",
        "CRYOMESH_PORT": str(port),
        "CRYOMESH_SWEEP_INTERVAL_S": "1",
        "CRYOMESH_HISTORY_BUCKET_S": "10",  # the dashboard's capacity chart fills in within the demo
        "CRYOMESH_CREDENTIALS": str(workdir / "coordinator.json"),
    }
    env.pop("CRYOMESH_DATABASE_URL", None)
    env.pop("CRYOMESH_CONFIG", None)
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    console.print(
        f"[bold]cryomesh demo[/bold] — working directory [bold]{workdir}[/bold] (the hub's database and log, the "
        f"coordinator's credentials, the sites' state, data and logs; about 60 MB). It is removed when the demo ends; "
        f"--keep keeps it.",
        highlight=False,
        soft_wrap=True,  # the path stays whole for copying
    )
    try:
        boot = subprocess.run(_cli("admin", "bootstrap", "--name", "demo-coordinator"), env=env, capture_output=True, text=True)
        if boot.returncode != 0:
            console.print(boot.stdout + boot.stderr)
            return 1
        coordinator = json.loads((workdir / "coordinator.json").read_text())
        with (workdir / "hub.log").open("wb") as hub_log:
            hub = subprocess.Popen(_cli("hub", "serve"), env=env, stdout=hub_log, stderr=subprocess.STDOUT)
        procs.append(hub)
        _wait_ready(hub_url, hub)
        console.print(f"hub serving at [bold]{hub_url}[/bold] (API docs {hub_url}/docs; log {workdir / 'hub.log'})")
        admin = HubSession(Profile(hub_url, coordinator["client_id"], coordinator["client_secret"]))
        password = secrets.token_urlsafe(12)
        person = admin.call("POST", "/api/v1/accounts", json_body={"name": "Demo coordinator", "role": "network_admin",
                                                                   "username": "coordinator"})  # fmt: skip
        admin.http.post("/api/v1/accounts/setup", json={"username": "coordinator", "code": person["setup_code"],
                                                         "password": password}).raise_for_status()  # fmt: skip
        dashboard = {"url": f"{hub_url}/dashboard/", "username": "coordinator", "password": password}
        console.print(
            f"dashboard at [bold]{dashboard['url']}[/bold] — sign in as [bold]coordinator[/bold] with password "
            f"[bold]{password}[/bold]",
            highlight=False,
        )
        agents: dict[str, subprocess.Popen[bytes]] = {}
        for spec in SITES:
            name = spec["site"]["name"]
            admin.call("POST", "/api/v1/sites", json_body=spec["site"])
            if "policy" in spec:
                admin.call("PUT", f"/api/v1/sites/{name}/policy", json_body=spec["policy"])
            code = admin.call("POST", f"/api/v1/sites/{name}/enrollment-codes", json_body={"ttl_s": 600})["code"]
            site_dir = workdir / name
            site_dir.mkdir()
            config = site_dir / "site.toml"
            if cluster is not None:
                spec = {**spec}
                if name == "kyoto-gpu":
                    spec["discovery"] = {"backend": "slurm", "slurm_conf": str(cluster.conf)}
                ex: dict[str, Any] = {
                    "type": "slurm",
                    "slurm_conf": str(cluster.conf),
                    "partition": "cpu",
                    "gpu_partition": "gpu",
                    "poll_interval_s": 0.5,
                }
            else:
                ex = {"type": "local", "max_concurrent": 4, "poll_interval_s": 0.5}
            config.write_text(
                site_toml(hub_url, site_dir / "state", heartbeat_s, spec, ex) + transfers_section(workdir, site_dir)
            )
            enrolled = subprocess.run(
                _cli("agent", "enroll", "--hub", hub_url, "--code", code, "--config", str(config)),
                env=env,
                capture_output=True,
                text=True,
            )
            if enrolled.returncode != 0:
                console.print(f"[red]enrolling {name} failed[/red]\n{enrolled.stdout}{enrolled.stderr}")
                return 1
            pending = [e for e in admin.call("GET", "/api/v1/enrollments", params={"status": "pending"}) if e["site"] == name]
            approved = admin.call("POST", f"/api/v1/enrollments/{pending[0]['id']}/approve")
            console.print(
                f"  {name}: enrolled agent {approved['client_id']} (key {approved['key_thumbprint'][:12]}…), approved by the "
                f"coordinator; discovery [bold]{spec['discovery']['backend']}[/bold], executor [bold]{ex['type']}[/bold]"
            )
            with (site_dir / "agent.log").open("wb") as agent_log:
                agent = subprocess.Popen(
                    _cli("agent", "run", "--config", str(config)), env=env, stdout=agent_log, stderr=subprocess.STDOUT
                )
            procs.append(agent)
            agents[name] = agent

        researcher_acct = admin.call(
            "POST", "/api/v1/accounts", json_body={"name": "demo researcher", "role": "researcher", "institution": "osaka-u"}
        )
        researcher = HubSession(Profile(hub_url, researcher_acct["client_id"], researcher_acct["client_secret"]))
        console.print(f"researcher of osaka-u: client id {researcher_acct['client_id']}")
        story = DataStory(workdir, env, admin, researcher)

        all_online_after: float | None = None
        submitted: list[dict[str, Any]] = []
        summary: dict[str, Any] = admin.call("GET", "/api/v1/network/summary")
        deadline = started + duration if duration else None
        done_at: float | None = None
        exited: list[str] = []
        with Live(summary_table(summary), console=console, refresh_per_second=2, transient=False) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    summary = admin.call("GET", "/api/v1/network/summary")
                    if all_online_after is None and summary["sites_by_reachability"].get("online", 0) == len(SITES):
                        all_online_after = round(time.monotonic() - started, 2)
                        for body in demo_jobs():
                            submitted.append(researcher.call("POST", "/api/v1/jobs", json_body=body))
                        try:
                            researcher.call("POST", "/api/v1/jobs", json_body=IMPOSSIBLE)
                        except CliError as exc:
                            live.console.print(f"refused at submission, as it should be: {exc}")
                        story.start(live.console.print)
                    jobs = [researcher.call("GET", f"/api/v1/jobs/{j['id']}") for j in submitted]
                    story.refresh()
                    moving = story.table()
                except CliError as exc:
                    live.console.print(f"[yellow]hub not answering: {exc}[/yellow]")
                    continue
                shown = (
                    [summary_table(summary)] + ([jobs_table([*jobs, story.job])] if jobs else []) + ([moving] if moving else [])
                )
                live.update(Group(*shown))
                if jobs and done_at is None and all(j["state"] in FINAL for j in jobs) and story.finished:
                    done_at = time.monotonic()
                    if deadline is None or duration is None:
                        live.console.print(f"all {len(jobs)} jobs finished; still serving (Ctrl-C to stop)")
                    else:  # with --duration, stop as soon as the story is told, however fast the machine
                        live.console.print(f"all {len(jobs)} jobs finished after {done_at - started:.0f} s")
                        break
                exited = [name for name, a in agents.items() if a.poll() is not None]
                if exited:
                    live.console.print(f"[red]the agent of {', '.join(exited)} exited; see its log[/red]")
                    break
        console.print(
            f"all {len(SITES)} sites online after {all_online_after} s"
            if all_online_after
            else "[red]not every site came online[/red]"
        )
        summary = admin.call("GET", "/api/v1/network/summary")
        entries = [_job_entry(researcher, researcher.call("GET", f"/api/v1/jobs/{j['id']}")) for j in submitted]
        for e in entries:
            reason = e["placement"]["summary"] or e["placement"]["explanation"]
            console.print(f"  {e['name']}: {e['state']} at {e['site'] or '-'} — {reason}")
        data = story.report()
        outcome = story.outcome()
        if story.job:
            dj, a = data["data_job"], data["data_job"]["analysis"]
            found = (
                f"; {a['particles']} particles in {len(a['classes'])} classes, best class average's correlation with "
                f"the clean view it shows {a['best_class_correlation']} (one particle alone: {a['single_image_correlation']})"
                if "classes" in a
                else ""
            )
            console.print(f"  class2d: {dj['state']} at {dj['site'] or '-'} — {outcome['job_explanation']}{found}")
            if dj["id"]:
                console.print(f"  its class averages: {dashboard['url']}#/job/{dj['id']}", highlight=False, soft_wrap=True)
        for table in usage_tables(admin.call("GET", "/api/v1/usage", params={"days": 1})):
            console.print(table)
        if report:
            full = {**build_report(hub_url, summary, started, all_online_after, entries), **data, "dashboard": dashboard}
            report.write_text(json.dumps(full, indent=2))
            console.print(f"report written to {report}")
        problems = unfinished(summary, [spec["site"]["name"] for spec in SITES], entries, outcome)
        if not problems:
            console.print(f"the demo's story finished in {done_at - started if done_at else time.monotonic() - started:.0f} s")
            return 0
        why = f"the agent of {', '.join(exited)} exited" if exited else f"the time was up: --duration {duration or 0:g}"
        console.print(f"[red]the demo's story did not finish[/red] ({why}):", highlight=False)
        for line in problems:
            console.print(f"  {line}", highlight=False, markup=False)
        console.print(
            f"A whole run took {TYPICAL_RUN_S} s on a busy 2-core machine: give it more "
            f"(--duration {2 * TYPICAL_RUN_S}) or none (it then runs until Ctrl-C). With --keep the hub's and agents' "
            "logs stay for a look.",
            highlight=False,
        )
        return 1
    except KeyboardInterrupt:
        console.print("stopping (Ctrl-C)")
        return 0
    except (CliError, RuntimeError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
