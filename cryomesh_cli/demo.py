"""``cryomesh demo``: a small network on this machine, built the way a real one is.

An embedded hub (SQLite in a fresh temp dir) serves on loopback. Three sites are
registered; each site's agent is enrolled with a one-time code through the real CLI,
approved by the demo coordinator, and then runs as its own process, getting tokens with
its private key and sending heartbeats over HTTP. The network summary fills in live.

The machine has no GPUs and no cluster, so two sites *declare* their partitions (the
``declared`` backend, meant for cloud queues that scale from zero) and one measures this
machine for real (the ``local`` backend). Each site's backend is shown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.live import Live

from cryomesh_cli.client import CliError, HubSession, Profile
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
            "software": [{"name": "relion", "version": "5.0"}, {"name": "ctffind", "version": "4.1.14"}],
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def site_toml(hub_url: str, state_dir: Path, heartbeat_s: float, spec: dict[str, Any]) -> str:
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
    return "\n".join(lines) + "\n"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryomesh_cli.main", *args]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
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


def build_report(hub_url: str, summary: dict[str, Any], started: float, all_online_after: float | None) -> dict[str, Any]:
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
    }


def run_demo(duration: float | None, report: Path | None, heartbeat_s: float = 2.0) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="cryomesh-demo-"))
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CRYOMESH_DATA_DIR": str(workdir / "hub"),
        "CRYOMESH_PUBLIC_URL": hub_url,
        "CRYOMESH_HOST": "127.0.0.1",
        "CRYOMESH_PORT": str(port),
        "CRYOMESH_SWEEP_INTERVAL_S": "1",
        "CRYOMESH_CREDENTIALS": str(workdir / "coordinator.json"),
    }
    env.pop("CRYOMESH_DATABASE_URL", None)
    env.pop("CRYOMESH_CONFIG", None)
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    console.print(f"[bold]cryomesh demo[/bold] — working directory {workdir}")
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
        agents: list[subprocess.Popen[bytes]] = []
        for spec in SITES:
            name = spec["site"]["name"]
            admin.call("POST", "/api/v1/sites", json_body=spec["site"])
            code = admin.call("POST", f"/api/v1/sites/{name}/enrollment-codes", json_body={"ttl_s": 600})["code"]
            site_dir = workdir / name
            site_dir.mkdir()
            config = site_dir / "site.toml"
            config.write_text(site_toml(hub_url, site_dir / "state", heartbeat_s, spec))
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
                f"  {name}: enrolled agent {approved['client_id']} (key {approved['key_thumbprint'][:12]}…), "
                f"approved by the coordinator; discovery backend [bold]{spec['discovery']['backend']}[/bold]"
            )
            with (site_dir / "agent.log").open("wb") as agent_log:
                agent = subprocess.Popen(
                    _cli("agent", "run", "--config", str(config)), env=env, stdout=agent_log, stderr=subprocess.STDOUT
                )
            procs.append(agent)
            agents.append(agent)

        all_online_after: float | None = None
        summary: dict[str, Any] = admin.call("GET", "/api/v1/network/summary")
        deadline = started + duration if duration else None
        with Live(summary_table(summary), console=console, refresh_per_second=2, transient=False) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    summary = admin.call("GET", "/api/v1/network/summary")
                except CliError as exc:
                    console.print(f"[yellow]hub not answering: {exc}[/yellow]")
                    continue
                live.update(summary_table(summary))
                online = summary["sites_by_reachability"].get("online", 0)
                if all_online_after is None and online == len(SITES):
                    all_online_after = round(time.monotonic() - started, 2)
                if any(a.poll() is not None for a in agents):
                    console.print("[red]an agent exited; see its log[/red]")
                    break
        console.print(
            f"all {len(SITES)} sites online after {all_online_after} s"
            if all_online_after
            else "[red]not every site came online[/red]"
        )
        if report:
            report.write_text(json.dumps(build_report(hub_url, summary, started, all_online_after), indent=2))
            console.print(f"report written to {report}")
        return 0 if all_online_after else 1
    except KeyboardInterrupt:
        console.print("stopping (Ctrl-C)")
        return 0
    except (CliError, RuntimeError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
